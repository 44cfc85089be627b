"""Each manifest shows every queue's retry plan, computed from the stack's own values by
the one implementation of the schedule (RetryConfig.plan), so a reviewer sees what a
changed retry setting does before it is deployed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from service_common.queue_spec import RetryConfig, describe_plan, format_seconds

from stack_review import run_stack
from stack_review.manifest import committed_stacks, render
from stack_settings import load_stack_file


def _plan_line(text: str, queue: str) -> str:
    lines = text.splitlines()
    return lines[lines.index(f"  queue {queue} (RUNNING)") + 1].strip()


@pytest.mark.parametrize("stack", committed_stacks())
def test_each_manifest_shows_the_plan_of_its_own_settings(stack: str) -> None:
    settings = load_stack_file(f"Pulumi.{stack}.yaml")
    text = render(run_stack(f"Pulumi.{stack}.yaml"))
    expected = describe_plan(settings.queue_spec().retry_config)
    assert _plan_line(text, settings.queue_name) == expected
    assert f"  queue {settings.dead_letter_queue_name} (PAUSED)" in text


def test_the_dev_plan_is_the_chapters_figure() -> None:
    """dev's queue (1 s..15 s, 3 doublings, 10 attempts): the waits double three times
    (1, 2, 4, 8 s), then are capped at 15 s."""
    text = render(run_stack("Pulumi.dev.yaml"))
    assert _plan_line(text, "jobs") == (
        "attempt 1 at 0 s, 2 at 1 s, 3 at 3 s, 4 at 7 s, 5 at 15 s, 6 at 30 s, 7 at 45 s, "
        "8 at 1 min, 9 at 1 min 15 s, 10 at 1 min 30 s; given up after 10 attempts, "
        "1 min 30 s after the first"
    )


def test_changing_max_doublings_changes_the_plan() -> None:
    before = _plan_line(render(run_stack("Pulumi.dev.yaml")), "jobs")
    after = _plan_line(
        render(run_stack("Pulumi.dev.yaml", overrides={"cloud-run-tasks:maxDoublings": 1})),
        "jobs",
    )
    assert before != after
    config = RetryConfig(10, Decimal(1), Decimal(15), 1, Decimal(0))
    assert after == describe_plan(config)
    assert after.startswith("attempt 1 at 0 s, 2 at 1 s, 3 at 3 s, 4 at 7 s, 5 at 13 s")


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (
            RetryConfig(1, Decimal(1), Decimal(1), 1, Decimal(0)),
            "attempt 1 at 0 s; given up after 1 attempt",
        ),
        (
            RetryConfig(-1, Decimal(1), Decimal(10), 2, Decimal(0)),
            "never given up: retried until the task's retention ends",
        ),
        (
            RetryConfig(-1, Decimal(1), Decimal(1), 0, Decimal(3)),
            "attempt 1 at 0 s, 2 at 1 s, 3 at 2 s, 4 at 3 s; given up after 4 attempts, "
            "3 s after the first",
        ),
        (
            RetryConfig(3, Decimal("0.1"), Decimal(1), 16, Decimal(0)),
            "attempt 1 at 0 s, 2 at 0.1 s, 3 at 0.3 s; given up after 3 attempts, "
            "0.3 s after the first",
        ),
    ],
)
def test_edge_cases_read_as_the_schedule_does(config: RetryConfig, text: str) -> None:
    assert text in describe_plan(config)


def test_a_long_plan_shows_its_first_and_last_attempts() -> None:
    text = describe_plan(RetryConfig(500, Decimal(1), Decimal(1), 0, Decimal(0)))
    assert text.startswith("attempt 1 at 0 s, 2 at 1 s,")
    assert ", ..., 499 at 8 min 18 s, 500 at 8 min 19 s; given up after 500 attempts" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.1, "0.1 s"),
        (59, "59 s"),
        (60, "1 min"),
        (90, "1 min 30 s"),
        (86915, "1 d 8 min 35 s"),
    ],
)
def test_durations_read_in_units(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
