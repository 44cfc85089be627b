"""The retry formula and the stop rule as pure functions."""

from __future__ import annotations

import pytest
from tasks_emulator.retry import RetryPolicy


@pytest.mark.parametrize(
    ("min_backoff", "max_backoff", "doublings", "expected"),
    [
        (10, 300, 3, [10, 20, 40, 80, 160, 240, 300, 300]),
        (1, 15, 3, [1, 2, 4, 8, 15, 15, 15]),
        (2, 100, 0, [2, 4, 6, 8, 10]),
        (5, 5, 4, [5, 5, 5, 5]),
        (0.5, 1000, 2, [0.5, 1, 2, 4, 6, 8, 10]),
    ],
)
def test_interval_doubles_then_grows_linearly_then_caps(
    min_backoff: float, max_backoff: float, doublings: int, expected: list[float]
) -> None:
    """interval(k) = min(M, m*2^k) up to d doublings, then min(M, m*2^d*(k-d+1)): the
    documented example 10s/300s/3 gives 10, 20, 40, 80, 160, 240, 300."""
    policy = RetryPolicy(100, min_backoff, max_backoff, doublings, 0)
    assert [policy.interval(k) for k in range(len(expected))] == pytest.approx(expected)


def test_default_policy_spans_about_85_hours() -> None:
    """The API's defaults (100 attempts, 0.1s..3600s, 16 doublings) span ~84.8 h."""
    assert sum(RetryPolicy().schedule(100)) / 3600 == pytest.approx(84.82, abs=0.01)


def test_huge_retry_index_does_not_overflow() -> None:
    """Unlimited retries over 31 days reach retry indexes where 2**k would overflow."""
    assert RetryPolicy(-1, 0.1, 60, 5000, 0).interval(3000) == 60


@pytest.mark.parametrize(
    ("max_attempts", "max_duration", "attempts", "elapsed", "stop"),
    [
        (3, 0, 2, 1e9, False),  # 0 = no time limit: attempts decide
        (3, 0, 3, 0, True),
        (3, 60, 3, 59, False),  # both limits must be reached
        (3, 60, 2, 61, False),
        (3, 60, 3, 60, True),
        (-1, 60, 1000, 59, False),  # -1 = no attempt limit: time decides
        (-1, 60, 1, 60, True),
        (-1, 0, 10**6, 1e9, False),  # both unlimited: never (until retention)
        (1, 0, 1, 0, True),
    ],
)
def test_stop_rule(
    max_attempts: int, max_duration: float, attempts: int, elapsed: float, stop: bool
) -> None:
    """Retrying ends only when BOTH max_attempts and max_retry_duration are reached,
    -1 and 0 meaning no limit of that kind."""
    policy = RetryPolicy(max_attempts, 1, 10, 3, max_duration)
    assert policy.should_stop(attempts, elapsed) is stop


def test_negative_retry_index_is_refused() -> None:
    """A negative retry index is a caller bug, reported with its value."""
    with pytest.raises(ValueError, match="-1"):
        RetryPolicy().interval(-1)
