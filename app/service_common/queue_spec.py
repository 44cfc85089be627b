"""A Cloud Tasks queue's settings as one typed value, and what its retry settings do.

``QueueSpec`` (rate limits and retry config) is the one form a queue's settings take on
their way from a stack's settings to the Pulumi component, the manifest, the local
emulator and the services; ``to_api()`` is the one conversion to the Cloud Tasks API's
own JSON shape. ``RetryConfig.plan()`` computes when each attempt of a failing task happens
and when the task is given up, and ``RetryConfig.judge_attempt()`` whether a failing attempt
is the last: the one implementation the manifest, the task-app's page and
the worker's last-attempt judgement use; ``describe_plan()`` says it in words (the
reviewed manifests show it for each stack's queue).

Standard library only: both service images ship this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# ---- Cloud Tasks' limits and defaults --------------------------------------------------------
# Source: the Queue resource of the Cloud Tasks v2 API,
# https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues
# (RateLimits, RetryConfig), and https://cloud.google.com/tasks/docs/quotas.
MAX_DISPATCHES_PER_SECOND = 500.0
MAX_CONCURRENT_DISPATCHES = 5000
TASK_RETENTION_SECONDS = 31 * 24 * 3600
"""A task the service has not given up on is deleted 31 days after it was created."""
DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = Decimal("0.1")
DEFAULT_MAX_BACKOFF = Decimal("3600")
DEFAULT_MAX_DOUBLINGS = 16
DEFAULT_MAX_RETRY_DURATION = Decimal("0")

UNLIMITED_ATTEMPTS = -1
"""``max_attempts`` -1: the attempt count never ends retrying (the duration may)."""


def format_duration(seconds: Decimal) -> str:
    """Seconds -> the duration string Cloud Tasks and pulumi-gcp take ('0.1s', '15s')."""
    return f"{format(seconds.normalize(), 'f')}s"


def parse_duration(text: str) -> Decimal:
    """'1s', '0.100s' -> seconds; ValueError for anything else."""
    if not isinstance(text, str) or not text.endswith("s"):
        raise ValueError(f"{text!r} is not a duration such as '1s' or '0.5s'")
    try:
        seconds = Decimal(text[:-1])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a duration such as '1s' or '0.5s'") from None
    if not seconds.is_finite() or seconds < 0:
        raise ValueError(f"{text!r} is not a non-negative duration")
    return seconds


@dataclass(frozen=True)
class RateLimits:
    """How fast the queue dispatches: tasks per second (fractions allowed) and in flight."""

    max_dispatches_per_second: float = DEFAULT_MAX_DISPATCHES_PER_SECOND
    max_concurrent_dispatches: int = DEFAULT_MAX_CONCURRENT_DISPATCHES

    def to_api(self) -> dict[str, Any]:
        return {
            "maxDispatchesPerSecond": self.max_dispatches_per_second,
            "maxConcurrentDispatches": self.max_concurrent_dispatches,
        }


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task that fails every time, in a retry plan."""

    number: int
    """1 for the first attempt."""
    at: float
    """Seconds after the first attempt, when every attempt takes no time."""


@dataclass(frozen=True)
class RetryPlan:
    """When each attempt of an always-failing task happens, and when it is given up."""

    attempts: tuple[Attempt, ...]
    """Every attempt, or the first ``limit`` of them when ``truncated``."""
    given_up_after: int | None
    """How many attempts the task gets; None when only its retention ends it."""
    truncated: bool = False

    @property
    def given_up_at(self) -> float | None:
        """Seconds after the first attempt at which the last one happens."""
        if self.given_up_after is None or self.truncated:
            return None
        return self.attempts[-1].at


DEFAULT_JUDGEMENT_SLACK = 2.0
"""Seconds allowed between a worker's judgement and Cloud Tasks' receipt of its answer."""


@dataclass(frozen=True)
class Judgement:
    """Whether a failing attempt is the last, and how sure that is."""

    last: bool
    certain: bool
    """False when the duration limit may or may not be reached (``last`` is then True)."""
    reason: str


@dataclass(frozen=True)
class RetryConfig:
    """How a failed task is retried. Durations in seconds; every value as the API takes it
    (``max_attempts`` -1 is unlimited, ``max_retry_duration`` 0 is unlimited)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_backoff: Decimal = DEFAULT_MIN_BACKOFF
    max_backoff: Decimal = DEFAULT_MAX_BACKOFF
    max_doublings: int = DEFAULT_MAX_DOUBLINGS
    max_retry_duration: Decimal = DEFAULT_MAX_RETRY_DURATION

    def to_api(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "minBackoff": format_duration(self.min_backoff),
            "maxBackoff": format_duration(self.max_backoff),
            "maxDoublings": self.max_doublings,
            "maxRetryDuration": format_duration(self.max_retry_duration),
        }

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RetryConfig:
        """The config from the API's JSON shape (missing fields take the API's defaults);
        ValueError naming the field for a value of the wrong kind."""
        values: dict[str, Any] = {}
        for key, name in (("maxAttempts", "max_attempts"), ("maxDoublings", "max_doublings")):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"retryConfig.{key} = {value!r}: must be a whole number")
                values[name] = value
        for key, name in (
            ("minBackoff", "min_backoff"),
            ("maxBackoff", "max_backoff"),
            ("maxRetryDuration", "max_retry_duration"),
        ):
            if key in data:
                try:
                    values[name] = parse_duration(data[key])
                except ValueError as error:
                    raise ValueError(f"retryConfig.{key}: {error}") from None
        unknown = sorted(set(data) - set(_RETRY_KEYS))
        if unknown:
            raise ValueError(f"retryConfig: unknown fields {unknown} (known: {_RETRY_KEYS})")
        return cls(**values)

    # ---- the schedule ---------------------------------------------------------------------
    # With m = min_backoff, M = max_backoff and d = max_doublings, the wait before retry k
    # (k = 0 after the first failed attempt) doubles d times, then grows linearly by
    # m * 2^d per retry, and never exceeds M; it counts from the end of the failed attempt.
    # Google's worked example (10 s, 300 s, 3 doublings) gives 10, 20, 40, 80, 160, 240, 300.
    # https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig

    def interval(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        low, high, doublings = float(self.min_backoff), float(self.max_backoff), self.max_doublings
        if min(retry, doublings) >= 1000:
            return high if low > 0 else 0.0  # 2**1024 overflows; long capped by then
        if retry <= doublings:
            return min(high, low * 2.0**retry)
        return min(high, low * 2.0**doublings * (retry - doublings + 1))

    def gives_up(self, attempts: int, seconds_since_first_attempt: float) -> bool:
        """True when a task that has failed ``attempts`` times gets no further attempt.

        Retrying ends only when BOTH limits are reached; an unlimited limit (-1 attempts,
        0 s) leaves the decision to the other one, and both unlimited never end it (only
        the task's retention does)."""
        unlimited_attempts = self.max_attempts == UNLIMITED_ATTEMPTS
        unlimited_time = self.max_retry_duration <= 0
        if unlimited_attempts and unlimited_time:
            return False
        attempts_reached = unlimited_attempts or attempts >= self.max_attempts
        time_reached = unlimited_time or seconds_since_first_attempt >= float(
            self.max_retry_duration
        )
        return attempts_reached and time_reached

    def plan(
        self,
        limit: int = 1000,
        *,
        attempts_made: int = 0,
        next_at: float = 0.0,
        first_at: float | None = None,
    ) -> RetryPlan:
        """Every attempt of a task that always fails and whose attempts take no time, up to
        ``limit`` attempts or the task's 31-day retention.

        From the start by default (attempt 1 at 0 s). For a task under way: it has failed
        ``attempts_made`` times, its next attempt is due at ``next_at`` and its first one
        was at ``first_at`` (times on any one clock, such as seconds since the epoch)."""
        if attempts_made < 0:
            raise ValueError(f"attempts_made must be >= 0, got {attempts_made}")
        first = next_at if first_at is None else first_at
        attempts: list[Attempt] = []
        at = next_at
        number = attempts_made + 1
        while True:
            attempts.append(Attempt(number, at))
            if self.gives_up(number, at - first):
                return RetryPlan(tuple(attempts), given_up_after=number)
            at += self.interval(number - 1)
            if at - first >= TASK_RETENTION_SECONDS or math.isinf(at):
                return RetryPlan(tuple(attempts), given_up_after=None)
            if len(attempts) >= limit:
                return RetryPlan(tuple(attempts), given_up_after=None, truncated=True)
            number += 1

    def retried_at_least(self, attempt: int) -> float:
        """The least time from the first attempt to the start of attempt ``attempt``: the
        sum of the waits before it (each wait counts from the end of a failed attempt, and
        a dispatch may come late, never early)."""
        total = 0.0
        for retry in range(max(0, attempt - 1)):
            total += self.interval(retry)
            if total >= TASK_RETENTION_SECONDS:
                break  # no plan lasts longer than the task is kept
        return total

    def judge_attempt(
        self,
        attempt: int,
        *,
        now: float,
        eta: float | None = None,
        first_at_or_after: float | None = None,
        slack: float = DEFAULT_JUDGEMENT_SLACK,
    ) -> Judgement:
        """Whether attempt number ``attempt`` (1 for the first), failing at ``now``, is the
        last one Cloud Tasks makes.

        What an HTTP target can know: the attempt's number (X-CloudTasks-TaskRetryCount + 1)
        and its schedule time (X-CloudTasks-TaskETA, ``eta``) but not when the first attempt
        happened. The time since then is bounded: at least the waits before this attempt
        plus, from the second attempt on, the time since ``eta``; at most the time since
        ``first_at_or_after`` (a time the first attempt cannot have preceded, such as the
        schedule time its creator set) plus ``slack`` for the answer to reach Cloud Tasks.
        Where the bounds straddle ``max_retry_duration`` the judgement says last, uncertain:
        losing a task costs more than keeping it early."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        unlimited_attempts = self.max_attempts == UNLIMITED_ATTEMPTS
        unlimited_time = self.max_retry_duration <= 0
        of = "unlimited" if unlimited_attempts else str(self.max_attempts)
        if unlimited_attempts and unlimited_time:
            return Judgement(
                False, True, f"attempt {attempt} of unlimited, no duration limit: only the "
                "task's retention ends it",
            )  # fmt: skip
        if not unlimited_attempts and attempt < self.max_attempts:
            return Judgement(False, True, f"attempt {attempt} of {of}")
        if unlimited_time:
            return Judgement(True, True, f"attempt {attempt} of {of}, no duration limit")
        limit = format_duration(self.max_retry_duration)
        # From the second attempt on, the first one happened at least the waits before
        # ``eta``; the first attempt itself may have been dispatched after its eta.
        since_eta = max(0.0, now - eta) if eta is not None and attempt > 1 else 0.0
        least = self.retried_at_least(attempt) + since_eta
        if self.gives_up(attempt, least):
            return Judgement(
                True, True, f"attempt {attempt} of {of}, retried for {least:.1f} s or more "
                f"of {limit}",
            )  # fmt: skip
        if first_at_or_after is not None:
            most = max(0.0, now - first_at_or_after) + slack
            if not self.gives_up(attempt, most):
                return Judgement(
                    False, True, f"attempt {attempt} of {of}, retried for under {most:.1f} s "
                    f"of {limit}",
                )  # fmt: skip
            between = f"between {least:.1f} s and {most:.1f} s"
        else:
            between = f"at least {least:.1f} s (the first attempt's time is unknown)"
        return Judgement(
            True, False, f"attempt {attempt} of {of}, retried for {between} of {limit}: "
            "taken as the last",
        )  # fmt: skip


_RETRY_KEYS = ["maxAttempts", "maxBackoff", "maxDoublings", "maxRetryDuration", "minBackoff"]


@dataclass(frozen=True)
class QueueSpec:
    """Everything a stack sets on one queue."""

    rate_limits: RateLimits = field(default_factory=RateLimits)
    retry_config: RetryConfig = field(default_factory=RetryConfig)
    logging_sampling_ratio: float | None = None
    """Fraction of attempts Cloud Tasks logs; None leaves queue logging off."""

    def to_api(self, name: str) -> dict[str, Any]:
        """The queue named ``name`` as the Cloud Tasks REST API writes it."""
        queue: dict[str, Any] = {
            "name": name,
            "rateLimits": self.rate_limits.to_api(),
            "retryConfig": self.retry_config.to_api(),
        }
        if self.logging_sampling_ratio is not None:
            queue["stackdriverLoggingConfig"] = {"samplingRatio": self.logging_sampling_ratio}
        return queue


# ---- the plan in words ------------------------------------------------------------------
# Attempts a plan's text shows in full; a longer plan shows its first and last ones.
PLAN_HEAD, PLAN_TAIL = 8, 2


def describe_plan(config: RetryConfig) -> str:
    """'attempt 1 at 0 s, 2 at 1 s, ... given up after 10 attempts, 1 min 30 s after the
    first', eliding the middle of a long plan."""
    plan = config.plan()
    attempts = list(plan.attempts)
    shown = [f"{a.number} at {format_seconds(a.at)}" for a in attempts]
    if len(shown) > PLAN_HEAD + PLAN_TAIL + 1:
        shown = [*shown[:PLAN_HEAD], "...", *shown[-PLAN_TAIL:]]
    text = "attempt " + ", ".join(shown)
    never = not config.gives_up(2**62, float(TASK_RETENTION_SECONDS))
    if plan.truncated and not never:
        return f"{text}, ... (more than {len(attempts)} attempts)"
    if plan.given_up_after is None:
        return f"{text}, ... never given up: retried until the task's retention ends"
    if plan.given_up_after == 1:
        return f"{text}; given up after 1 attempt"
    at = plan.given_up_at or 0.0
    return (
        f"{text}; given up after {plan.given_up_after} attempts, "
        f"{format_seconds(at)} after the first"
    )


def format_seconds(seconds: float) -> str:
    """0 -> '0 s', 90 -> '1 min 30 s', 0.1 -> '0.1 s', 86700 -> '1 d 5 min'."""
    if seconds < 60:
        return f"{round(seconds, 3):g} s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts)
