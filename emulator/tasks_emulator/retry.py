"""Cloud Tasks' retry rules as pure functions: the backoff interval and the stop rule.

interval(k), k = 0 for the first retry (after the first failed attempt), with
m = min_backoff, M = max_backoff, d = max_doublings:

    min(M, m * 2**k)              when k <= d   (doubling)
    min(M, m * 2**d * (k - d + 1)) when k > d    (then linear, then capped)

which gives Google's worked example (10 s, 300 s, 3 doublings): 10, 20, 40, 80, 160, 240,
300, 300, ...
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 16
DEFAULT_MAX_RETRY_DURATION = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """A queue's (or a task's) RetryConfig, with every default already applied."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_backoff: float = DEFAULT_MIN_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_doublings: int = DEFAULT_MAX_DOUBLINGS
    max_retry_duration: float = DEFAULT_MAX_RETRY_DURATION

    def interval(self, retry_index: int) -> float:
        """Seconds to wait before retry number ``retry_index`` (0 = first retry),
        counted from the end of the failed attempt."""
        if retry_index < 0:
            raise ValueError(f"retry_index must be >= 0, got {retry_index}")
        low, high, doublings = self.min_backoff, self.max_backoff, self.max_doublings
        exponent = min(retry_index, doublings)
        if exponent >= 1000:
            # 2**1024 overflows a float; long before that any positive backoff is capped.
            return high if low > 0 else 0.0
        if retry_index <= doublings:
            return min(high, low * 2.0**retry_index)
        return min(high, low * 2.0**doublings * (retry_index - doublings + 1))

    def should_stop(self, attempts: int, seconds_since_first_attempt: float) -> bool:
        """True when no further attempt may follow ``attempts`` failed attempts.

        Retrying ends when BOTH limits are reached. A limit given as unlimited
        (max_attempts -1, max_retry_duration 0) does not hold retrying back on its own:
        the other limit decides. Both unlimited: retry until the task's retention ends.
        """
        unlimited_attempts = self.max_attempts == -1
        unlimited_time = self.max_retry_duration <= 0
        if unlimited_attempts and unlimited_time:
            return False
        attempts_reached = unlimited_attempts or attempts >= self.max_attempts
        time_reached = unlimited_time or seconds_since_first_attempt >= self.max_retry_duration
        return attempts_reached and time_reached

    def schedule(self, attempts: int) -> list[float]:
        """The intervals between ``attempts`` consecutive failing attempts that take no
        time, as far as the attempt limit allows (the duration limit is ignored)."""
        return [self.interval(k) for k in range(max(0, attempts - 1))]
