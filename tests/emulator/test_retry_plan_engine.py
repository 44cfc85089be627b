"""The services' retry plan (service_common.queue_spec.RetryConfig.plan) against the
emulator's engine itself: a task that fails every attempt, on the virtual clock, is
attempted exactly when the plan says and as many times, for settings that reach every
branch (-1 attempts, 0 s duration, maxDoublings 0, no wait at all, both limits)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from service_common.queue_spec import RetryConfig

from .conftest import START, Harness, Target
from .test_dispatch import retry

SETTINGS = [
    RetryConfig(10, Decimal(1), Decimal(15), 3, Decimal(0)),  # the dev stack's
    RetryConfig(6, Decimal(2), Decimal(20), 0, Decimal(0)),  # no doubling: linear at once
    RetryConfig(-1, Decimal(1), Decimal(10), 3, Decimal(30)),  # time alone decides
    RetryConfig(2, Decimal(10), Decimal(10), 1, Decimal(60)),  # both: time decides last
    RetryConfig(5, Decimal("0.5"), Decimal("0.5"), 4, Decimal(0)),  # constant
    RetryConfig(4, Decimal(0), Decimal(0), 16, Decimal(0)),  # no wait at all
    RetryConfig(1, Decimal(1), Decimal(1), 1, Decimal(0)),  # a single attempt
]


@pytest.mark.parametrize("config", SETTINGS, ids=lambda c: str(c.to_api()))
def test_the_engine_attempts_a_failing_task_as_the_plan_says(
    harness: Harness, target: Target, config: RetryConfig
) -> None:
    plan = config.plan()
    assert plan.given_up_after is not None
    target.replies = [500]
    queue = harness.queue(
        "jobs",
        retry_config=retry(
            float(config.min_backoff),
            float(config.max_backoff),
            config.max_doublings,
            config.max_attempts,
            float(config.max_retry_duration),
        ),
    )
    harness.task(queue, target.url)
    harness.advance((plan.given_up_at or 0) + 100)
    assert [round(r.at - START, 6) for r in target.received] == pytest.approx(
        [a.at for a in plan.attempts]
    )
    assert len(target.received) == plan.given_up_after
