"""A dead letter: a task given up on, kept as a task of the paused dead-letter queue.

The worker writes one (``worker.dead_letters``), the task-app lists, replays and discards
them (``task_app.dead_letters``). The dead letter keeps the original task's body and
Content-Type as its own; what happened to it travels in one header, ``X-Dead-Letter``,
compact JSON (ASCII only, so any header transport keeps it intact):

    {"task": "projects/P/locations/L/queues/jobs/tasks/ID", "attempts": 10,
     "first_attempt": "2026-...Z", "first_attempt_basis": "scheduled",
     "last_attempt": "2026-...Z", "status": 500, "error": "...", "reason": "..."}

Its id is the original task's id: a second parking of the same task is ALREADY_EXISTS, not
a second dead letter. Standard library only: both service images ship this module.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from service_common import contract
from service_common.config import ConfigError, optional, parse_queue_path
from service_common.queue_spec import RetryConfig


class HeaderItems(Protocol):
    """A dict of headers, or werkzeug's Headers."""

    def items(self) -> Iterable[tuple[str, str]]: ...


DEAD_LETTER_HEADER = "X-Dead-Letter"
FIRST_SCHEDULE_HEADER = "X-Task-First-Schedule-Time"
"""Set by the task-app on every task it creates: the schedule time of its first attempt
(RFC 3339). Cloud Tasks passes a task's own headers through unchanged, so the worker learns a
time the first attempt cannot have preceded (see RetryConfig.judge_attempt)."""

EARLIER_ATTEMPTS_HEADER = "X-Task-Earlier-Attempts"
"""Set on a replayed task: how many attempts the task made before it was replayed (in all
its earlier lives). The worker's simulated failure ("fail the first K attempts") counts
them, so a task that died of its first K attempts succeeds when replayed."""
MAX_EARLIER_ATTEMPTS = 1_000_000

# Cloud Tasks' task ids: 1-500 letters, digits, hyphens or underscores
# (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks).
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
MAX_TASK_ID_LENGTH = 500
# What a dead letter keeps of the last error: enough to read, bounded whatever it held.
MAX_ERROR_LENGTH = 1000

BASIS_OBSERVED = "observed"
"""first_attempt is when the worker received it: the task died on its first attempt."""
BASIS_SCHEDULED = "scheduled"
"""first_attempt is the schedule time its creator set: the first attempt was then or later."""
BASIS_ESTIMATED = "estimated"
"""first_attempt is estimated back from the last attempt through the retry plan: the first
attempt was then or earlier."""


@dataclass(frozen=True)
class DeadLetterConfig:
    """Where tasks given up on are kept, and the live queue's retry config."""

    queue: str | None = None
    """DEAD_LETTER_QUEUE; None: no dead letters (a task given up on is only logged)."""
    retry: RetryConfig | None = None
    """QUEUE_RETRY_CONFIG: the last-attempt judgement and each task's plan."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, retry_required: bool) -> DeadLetterConfig:
        """Both variables checked; ``retry_required``: the retry config must come with the
        queue (the worker cannot tell the last attempt without it). ConfigError names the
        variable."""
        queue = optional(env, contract.DEAD_LETTER_QUEUE)
        if queue is not None:
            parse_queue_path(contract.DEAD_LETTER_QUEUE.name, queue)
        raw = optional(env, contract.QUEUE_RETRY_CONFIG)
        if raw is None:
            if queue is not None and retry_required:
                raise ConfigError(
                    f"{contract.DEAD_LETTER_QUEUE.name} is set but "
                    f"{contract.QUEUE_RETRY_CONFIG.name} is not: the queue's retry config "
                    '(JSON, e.g. {"maxAttempts": 10, "minBackoff": "1s"}) is needed to tell '
                    "the last attempt"
                )
            return cls(queue=queue)
        return cls(queue=queue, retry=parse_retry_config(raw))


def parse_retry_config(raw: str) -> RetryConfig:
    """QUEUE_RETRY_CONFIG's JSON -> the config; ConfigError naming the variable."""
    name = contract.QUEUE_RETRY_CONFIG.name
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{name}={raw!r} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f'{name}={raw!r} must be a JSON object such as {{"maxAttempts": 10}}')
    try:
        return RetryConfig.from_api(data)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None


def iso(seconds: float) -> str:
    """Seconds since the epoch -> RFC 3339 in UTC, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """RFC 3339 -> seconds since the epoch; ValueError for anything else."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.timestamp()


def first_schedule_header(seconds: float) -> dict[str, str]:
    """The header a task's creator sets: its first attempt is at ``seconds`` or later."""
    return {FIRST_SCHEDULE_HEADER: iso(seconds)}


def earlier_attempts(headers: HeaderItems) -> int:
    """The X-Task-Earlier-Attempts of a task's headers; 0 when absent or not a count."""
    raw = next((v for k, v in headers.items() if k.lower() == EARLIER_ATTEMPTS_HEADER.lower()), "")
    try:
        value = int(raw)
    except ValueError:
        return 0
    return value if 0 <= value <= MAX_EARLIER_ATTEMPTS else 0


def dead_letter_id(task_id: str) -> str:
    """The dead letter's id for a task: the task's own id when it is a valid one, else a
    hash of whatever the delivery named."""
    if TASK_ID.match(task_id):
        return task_id
    return "h-" + hashlib.sha256(task_id.encode()).hexdigest()


def replay_id(dead_letter_name: str, create_time: str) -> str:
    """The id of the task a Replay creates: the same for every replay of one dead letter
    (so a second click is ALREADY_EXISTS, one task), different for a later dead letter of
    the same id. ``<original id>-replay-<10 hex>``, cut to Cloud Tasks' 500 characters."""
    digest = hashlib.sha256(f"{dead_letter_name}@{create_time}".encode()).hexdigest()[:10]
    base = dead_letter_name.rsplit("/", 1)[-1]
    # A replayed task that dies again is replayed from its own id: keep one suffix.
    base = re.sub(r"-replay-[0-9a-f]{10}$", "", base)
    suffix = f"-replay-{digest}"
    return base[: MAX_TASK_ID_LENGTH - len(suffix)] + suffix


@dataclass(frozen=True)
class DeadLetterRecord:
    """What a dead letter says about the task it keeps."""

    task: str
    """The original task's full name."""
    attempts: int
    first_attempt: str | None
    first_attempt_basis: str
    last_attempt: str
    status: int
    """The worker's answer to the last attempt, had it not parked the task."""
    error: str
    reason: str
    """Why the worker took the attempt as the last."""

    def to_header(self) -> str:
        data = asdict(self)
        data["error"] = self.error[:MAX_ERROR_LENGTH]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=True, sort_keys=True)

    @classmethod
    def from_headers(cls, headers: HeaderItems) -> DeadLetterRecord | None:
        """The record in a dead letter's headers; None when there is none or it is not one
        this module wrote (the task is then listed with what Cloud Tasks says alone)."""
        raw = next((v for k, v in headers.items() if k.lower() == DEAD_LETTER_HEADER.lower()), None)
        if raw is None:
            return None
        try:
            data: Any = json.loads(raw)
            first = data.get("first_attempt")
            return cls(
                task=str(data["task"]),
                attempts=int(data["attempts"]),
                first_attempt=None if first is None else str(first),
                first_attempt_basis=str(data.get("first_attempt_basis", BASIS_ESTIMATED)),
                last_attempt=str(data["last_attempt"]),
                status=int(data["status"]),
                error=str(data["error"])[:MAX_ERROR_LENGTH],
                reason=str(data.get("reason", "")),
            )
        except (ValueError, TypeError, KeyError):
            return None


def rest_error(response: Any) -> tuple[str, str]:
    """(status name, message) of a Cloud Tasks REST error answer: Google's JSON error body
    (``{"error": {"code", "message", "status"}}``), or the HTTP status and text of any other."""
    try:
        error = response.json()["error"]
        return str(error.get("status") or response.status_code), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status_code}", str(getattr(response, "text", ""))[:300]
