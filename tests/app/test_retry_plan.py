"""The services' retry plan (service_common.queue_spec) against the emulator's own retry rules
(tasks_emulator.retry), for many settings, edge cases included: the manifest, the page and
the worker's last-attempt judgement use the first, the local Cloud Tasks the second; they
must give the same schedule and the same give-up point."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from service_common.queue_spec import TASK_RETENTION_SECONDS, RetryConfig
from tasks_emulator.retry import RetryPolicy

# Bounded in time: each property runs a fixed number of examples, on plans capped at
# PLAN_LIMIT attempts.
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLAN_LIMIT = 400

# Durations as the API writes them: whole milliseconds are enough to reach every branch.
durations = st.integers(min_value=0, max_value=600_000).map(lambda ms: Decimal(ms) / 1000)


@st.composite
def configs(draw: st.DrawFn) -> RetryConfig:
    low = draw(durations)
    high = draw(durations.filter(lambda value: value >= low))
    return RetryConfig(
        max_attempts=draw(st.one_of(st.just(-1), st.integers(1, 60))),
        min_backoff=low,
        max_backoff=high,
        max_doublings=draw(st.integers(0, 20)),
        max_retry_duration=draw(st.one_of(st.just(Decimal(0)), durations)),
    )


def emulator_policy(config: RetryConfig) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=config.max_attempts,
        min_backoff=float(config.min_backoff),
        max_backoff=float(config.max_backoff),
        max_doublings=config.max_doublings,
        max_retry_duration=float(config.max_retry_duration),
    )


def emulator_schedule(policy: RetryPolicy, limit: int) -> tuple[list[float], int | None]:
    """What the emulator's engine does with a task whose attempts fail at once: the time of
    each attempt after the first, and how many it makes (None: still going at ``limit``
    attempts or at the task's retention)."""
    times = [0.0]
    while True:
        if policy.should_stop(len(times), times[-1]):
            return times, len(times)
        next_at = times[-1] + policy.interval(len(times) - 1)
        if next_at >= TASK_RETENTION_SECONDS or len(times) >= limit:
            return times, None
        times.append(next_at)


EDGES = [
    RetryConfig(-1, Decimal("1"), Decimal("10"), 3, Decimal("30")),  # time alone decides
    RetryConfig(5, Decimal("1"), Decimal("10"), 3, Decimal("0")),  # attempts alone
    RetryConfig(-1, Decimal("1"), Decimal("10"), 3, Decimal("0")),  # neither: retention
    RetryConfig(6, Decimal("2"), Decimal("100"), 0, Decimal("0")),  # no doubling: linear
    RetryConfig(4, Decimal("0"), Decimal("0"), 16, Decimal("0")),  # no wait at all
    RetryConfig(3, Decimal("5"), Decimal("5"), 2, Decimal("100")),  # constant, time decides
    RetryConfig(1, Decimal("0.1"), Decimal("3600"), 16, Decimal("0")),  # one attempt
    RetryConfig(),  # the API's defaults
]


@PROPERTY
@given(configs(), st.integers(0, 5000))
@example(RetryConfig(-1, Decimal("0.1"), Decimal("60"), 20, Decimal(0)), 3000)
@example(RetryConfig(3, Decimal("2"), Decimal("100"), 0, Decimal(0)), 4)
def test_every_wait_is_the_emulators(config: RetryConfig, retry: int) -> None:
    """The wait before each retry: doubling, linear, capped, with 0 doublings and huge
    retry numbers (where 2**k would overflow) as the emulator computes it."""
    assert config.interval(retry) == emulator_policy(config).interval(retry)


@PROPERTY
@given(configs())
def test_the_plan_is_the_emulators_schedule(config: RetryConfig) -> None:
    """Every attempt's time and the give-up point of RetryConfig.plan() are those of the
    emulator's rules (stop only when both limits are reached; -1 attempts and 0 s are
    unlimited)."""
    plan = config.plan(limit=PLAN_LIMIT)
    times, given_up_after = emulator_schedule(emulator_policy(config), PLAN_LIMIT)
    assert [attempt.at for attempt in plan.attempts] == pytest.approx(times)
    assert [attempt.number for attempt in plan.attempts] == list(range(1, len(times) + 1))
    assert plan.given_up_after == given_up_after


@pytest.mark.parametrize("config", EDGES, ids=lambda c: str(c.to_api()))
def test_edge_settings_plan_as_the_emulator_does(config: RetryConfig) -> None:
    """The edge cases by name, each held to the emulator's schedule."""
    plan = config.plan(limit=PLAN_LIMIT)
    times, given_up_after = emulator_schedule(emulator_policy(config), PLAN_LIMIT)
    assert [attempt.at for attempt in plan.attempts] == pytest.approx(times)
    assert plan.given_up_after == given_up_after


def test_the_dev_stacks_plan_is_the_chapters_figure() -> None:
    """1 s to 15 s, 3 doublings, 10 attempts: 0, 1, 3, 7, 15, then every 15 s, given up
    after the 10th attempt, 90 s after the first."""
    plan = RetryConfig(10, Decimal(1), Decimal(15), 3, Decimal(0)).plan()
    assert [a.at for a in plan.attempts] == [0, 1, 3, 7, 15, 30, 45, 60, 75, 90]
    assert (plan.given_up_after, plan.given_up_at) == (10, 90)


def test_max_doublings_zero_grows_linearly_from_the_first_wait() -> None:
    plan = RetryConfig(5, Decimal(2), Decimal(100), 0, Decimal(0)).plan()
    assert [a.at for a in plan.attempts] == [0, 2, 6, 12, 20]


def test_both_limits_unlimited_is_never_given_up() -> None:
    """-1 attempts and 0 s: retried until the task's retention ends; the plan says so."""
    plan = RetryConfig(-1, Decimal(60), Decimal(60), 1, Decimal(0)).plan(limit=100_000)
    assert plan.given_up_after is None
    assert plan.given_up_at is None
    assert plan.attempts[-1].at < TASK_RETENTION_SECONDS <= plan.attempts[-1].at + 60


def test_a_plan_under_way_continues_from_the_next_attempt() -> None:
    """A task that failed 3 times, first at t=100, next due at t=108: attempts 4.. of the
    same schedule, on the caller's clock."""
    config = RetryConfig(6, Decimal(1), Decimal(15), 3, Decimal(0))
    plan = config.plan(attempts_made=3, next_at=108.0, first_at=100.0)
    assert [(a.number, a.at) for a in plan.attempts] == [(4, 108), (5, 116), (6, 131)]
    assert plan.given_up_after == 6


@st.composite
def runs(draw: st.DrawFn) -> tuple[RetryConfig, list[float], list[float], float]:
    """A config, each attempt's dispatch delay and duration, and the answer's latency."""
    config = draw(configs().filter(lambda c: c.max_attempts != -1 or c.max_retry_duration > 0))
    delays = draw(st.lists(st.floats(0, 5), min_size=PLAN_LIMIT, max_size=PLAN_LIMIT))
    work = draw(st.lists(st.floats(0, 30), min_size=PLAN_LIMIT, max_size=PLAN_LIMIT))
    latency = draw(st.floats(0, 2))
    return config, delays, work, latency


@PROPERTY
@given(runs(), st.booleans())
def test_the_worker_never_misses_the_last_attempt(
    run: tuple[RetryConfig, list[float], list[float], float], knows_creation: bool
) -> None:
    """Attempts that take time and come late, judged by the worker as it fails each one:
    the attempt the emulator's rules end with is always judged the last; a judgement that
    says it is certain is right; an uncertain one says last (keep rather than lose)."""
    config, delays, work, latency = run
    policy = emulator_policy(config)
    created = 0.0
    eta = created
    first: float | None = None
    for number in range(1, PLAN_LIMIT + 1):
        dispatched = eta + delays[number - 1]
        first = dispatched if first is None else first
        failed = dispatched + work[number - 1]  # the worker judges, then answers
        answered = failed + latency  # what Cloud Tasks sees
        truth = policy.should_stop(number, answered - first)
        judgement = config.judge_attempt(
            number,
            now=failed,
            eta=eta,
            first_at_or_after=created if knows_creation else None,
            slack=2.0,
        )
        if truth:
            assert judgement.last, judgement
            return
        if judgement.certain:
            assert not judgement.last, judgement
        eta = answered + policy.interval(number - 1)
        if eta - created >= TASK_RETENTION_SECONDS:
            return


def test_known_creation_time_keeps_the_duration_limit() -> None:
    """3 attempts, 60 s: the third attempt 3 s after a task created at 0 is not the last
    when the worker knows when the task was scheduled; without that, it cannot tell."""
    config = RetryConfig(3, Decimal(1), Decimal(15), 3, Decimal(60))
    known = config.judge_attempt(3, now=3.0, eta=3.0, first_at_or_after=0.0)
    unknown = config.judge_attempt(3, now=3.0, eta=3.0)
    assert (known.last, known.certain) == (False, True)
    assert (unknown.last, unknown.certain) == (True, False)
    late = config.judge_attempt(8, now=100.0, eta=99.0)
    assert (late.last, late.certain) == (True, True)
