"""What a user may ask for when scheduling, and its validation (shared by form and API)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

MAX_MESSAGE_LENGTH = 1000
MAX_DELAY_SECONDS = 30 * 24 * 3600  # Cloud Tasks refuses schedule times beyond 720 h
MAX_COUNT = 100
MAX_FAIL_ATTEMPTS = 100  # a queue's default max_attempts
T = TypeVar("T", int, float)

TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
MAX_TASK_ID_LENGTH = 500

FIELDS = ("message", "delay_seconds", "count", "fail_attempts", "work_seconds", "task_id")


@dataclass(frozen=True)
class TaskOptions:
    """A validated request to schedule ``count`` identical tasks."""

    message: str = ""
    delay_seconds: float = 0.0
    count: int = 1
    fail_attempts: int = 0
    work_seconds: float = 0.0
    task_id: str | None = None

    def task_ids(self) -> list[str | None]:
        """The caller-given id of each task (None lets Cloud Tasks pick one)."""
        if self.task_id is None:
            return [None] * self.count
        if self.count == 1:
            return [self.task_id]
        return [f"{self.task_id}-{index}" for index in range(1, self.count + 1)]

    def payload(self) -> dict[str, object]:
        """The JSON body the worker receives."""
        return {
            "message": self.message,
            "fail_attempts": self.fail_attempts,
            "work_seconds": self.work_seconds,
        }


def _as_int(value: object) -> int | None:
    """The value when it is a JSON integer (booleans are not numbers here)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _as_number(value: object) -> float | None:
    """The value as a float when it is a finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _in_range(
    data: Mapping[str, object],
    field: str,
    default: float,
    parse: Callable[[object], T | None],
    *,
    low: float,
    high: float,
    errors: dict[str, str],
    allowed: str,
) -> T | None:
    """The field parsed and within [low, high], or None with its error recorded."""
    raw = data.get(field, default)
    value = parse(raw)
    if value is None or not low <= value <= high:
        errors[field] = f"must be {allowed}, got {raw!r}"
        return None
    return value


def validate_options(
    data: Mapping[str, object], max_work_seconds: float
) -> tuple[TaskOptions | None, dict[str, str]]:
    """Check every field at once: (options, {}) or (None, {field: what is wrong})."""
    errors: dict[str, str] = {}
    for unknown in sorted(set(data) - set(FIELDS)):
        errors[unknown] = f"is not a known field; allowed fields are {', '.join(FIELDS)}"

    message = data.get("message", "")
    if not isinstance(message, str):
        errors["message"] = f"must be a string, got {message!r}"
        message = ""
    elif len(message) > MAX_MESSAGE_LENGTH:
        errors["message"] = f"must be at most {MAX_MESSAGE_LENGTH} characters, got {len(message)}"

    delay = _in_range(
        data,
        "delay_seconds",
        0,
        _as_number,
        low=0,
        high=MAX_DELAY_SECONDS,
        errors=errors,
        allowed=f"a number of seconds between 0 and {MAX_DELAY_SECONDS} (30 days)",
    )
    count = _in_range(
        data,
        "count",
        1,
        _as_int,
        low=1,
        high=MAX_COUNT,
        errors=errors,
        allowed=f"an integer between 1 and {MAX_COUNT}",
    )
    fail_attempts = _in_range(
        data,
        "fail_attempts",
        0,
        _as_int,
        low=0,
        high=MAX_FAIL_ATTEMPTS,
        errors=errors,
        allowed=f"an integer between 0 and {MAX_FAIL_ATTEMPTS}",
    )
    work = _in_range(
        data, "work_seconds", 0, _as_number, low=0, high=max_work_seconds, errors=errors,
        allowed=f"a number of seconds between 0 and {max_work_seconds:g} "
        "(below the dispatch deadline)",
    )  # fmt: skip

    task_id = data.get("task_id")
    if task_id is not None:
        suffix = len(f"-{count}") if count is not None and count > 1 else 0
        if not isinstance(task_id, str) or not TASK_ID_PATTERN.match(task_id):
            errors["task_id"] = (
                f"must be 1 to 500 characters of letters, digits, '-' or '_', got {task_id!r}"
            )
        elif len(task_id) + suffix > MAX_TASK_ID_LENGTH:
            errors["task_id"] = (
                f"is too long for count={count}: at most {MAX_TASK_ID_LENGTH - suffix} characters"
            )

    if errors or delay is None or count is None or fail_attempts is None or work is None:
        return None, errors
    return (
        TaskOptions(
            message=message,
            delay_seconds=delay,
            count=count,
            fail_attempts=fail_attempts,
            work_seconds=work,
            task_id=task_id if isinstance(task_id, str) else None,
        ),
        {},
    )


def describe_errors(errors: Mapping[str, str]) -> str:
    """One sentence naming every invalid field."""
    return "; ".join(f"{field} {problem}" for field, problem in errors.items())
