"""The worker parks a task given up on in the dead-letter queue before it answers.

When an attempt fails, the worker judges whether Cloud Tasks will make another one
(``RetryConfig.judge_attempt`` with the queue's retry config, QUEUE_RETRY_CONFIG, and the
attempt's X-CloudTasks-* headers). If not (or when in doubt, or when the payload can never
succeed), it creates a copy of the task in the paused queue DEAD_LETTER_QUEUE through the
Cloud Tasks REST API, and only then answers:

- parked (or parked before: ALREADY_EXISTS): 200, so the original ends here and the dead
  letter is the one copy left, whatever the judgement's uncertainty;
- not parked: 503, so Cloud Tasks keeps the task if it has attempts left (the log line at
  ERROR carries the body, what remains when it has none).

What the worker knows of a task: its attempt number (TaskRetryCount + 1) and this attempt's
schedule time (TaskETA), from Cloud Tasks; the schedule time of its first attempt when the
task-app created it (X-Task-First-Schedule-Time); nothing of earlier attempts' times.

A dead letter carries no OIDC token (its queue never dispatches, so creating it needs no
actAs); its target is the worker's own /tasks.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from service_common import contract
from service_common.dead_letter import (
    BASIS_ESTIMATED,
    BASIS_OBSERVED,
    BASIS_SCHEDULED,
    EARLIER_ATTEMPTS_HEADER,
    FIRST_SCHEDULE_HEADER,
    DeadLetterRecord,
    dead_letter_id,
    earlier_attempts,
    iso,
    parse_iso,
    rest_error,
)
from service_common.queue_spec import Judgement, RetryConfig
from service_common.web import json_error
from werkzeug.datastructures import Headers

from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

GOOGLE_API_ENDPOINT = "https://cloudtasks.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# What an ERROR log line keeps of a task that could not be parked.
MAX_LOGGED_BODY = 4000


@dataclass(frozen=True)
class DeadLetterSettings:
    """Where tasks given up on go, and the queue's retry config to tell when."""

    queue: str | None
    """DEAD_LETTER_QUEUE; None leaves dead letters off (tasks given up on are only logged)."""
    retry: RetryConfig | None
    api_endpoint: str
    timeout_seconds: float
    target_base_url: str | None
    """The worker's base URL for the dead letter's target (OIDC_AUDIENCE's first when set)."""

    @classmethod
    def from_worker(cls, settings: WorkerSettings) -> DeadLetterSettings:
        return cls(
            queue=settings.dead_letters.queue,
            retry=settings.dead_letters.retry,
            api_endpoint=(settings.api_endpoint or GOOGLE_API_ENDPOINT).rstrip("/"),
            timeout_seconds=settings.api_timeout_seconds,
            target_base_url=settings.oidc_audiences[0] if settings.oidc_audiences else None,
        )


@dataclass(frozen=True)
class ParkOutcome:
    parked: bool
    name: str
    already: bool = False
    error: str | None = None


class DeadLetters:
    """Judges failing attempts and parks the last ones; one per worker process."""

    def __init__(self, settings: DeadLetterSettings, session: Any = None) -> None:
        """``session`` None: an AuthorizedSession with google-auth's default credentials
        (the instance's account on Cloud Run), made at the first parking."""
        self.settings = settings
        self._session = session
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.queue is not None and self.settings.retry is not None

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                # Imported at the first call: a service starts without paying for them.
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
                self._session = AuthorizedSession(credentials)
            return self._session

    def judge(self, attempt: int, now: float, headers: Headers) -> Judgement:
        retry = self.settings.retry
        assert retry is not None  # only called when enabled
        return retry.judge_attempt(
            attempt,
            now=now,
            eta=_seconds(headers.get("X-CloudTasks-TaskETA")),
            first_at_or_after=_first_schedule(headers),
        )

    def park(
        self,
        task_id: str,
        record: DeadLetterRecord,
        body: bytes,
        content_type: str | None,
        earlier: int = 0,
    ) -> ParkOutcome:
        """Create the dead letter; ALREADY_EXISTS counts as parked (an earlier attempt of
        this very task parked it)."""
        queue = self.settings.queue
        assert queue is not None  # only called when enabled
        name = f"{queue}/tasks/{dead_letter_id(task_id)}"
        headers = {"X-Dead-Letter": record.to_header()}
        if content_type:
            headers["Content-Type"] = content_type
        if earlier:
            # Attempts of the task's lives before a replay, for the next replay to add to.
            headers[EARLIER_ATTEMPTS_HEADER] = str(earlier)
        target = self.settings.target_base_url or request.host_url.rstrip("/")
        task = {
            "name": name,
            "httpRequest": {
                "url": f"{target}/tasks",
                "httpMethod": "POST",
                "headers": headers,
                "body": base64.b64encode(body).decode(),
            },
        }
        url = f"{self.settings.api_endpoint}/v2/{queue}/tasks"
        try:
            response = self._get_session().post(
                url, json={"task": task}, timeout=self.settings.timeout_seconds
            )
        except Exception as error:  # no credentials, no connection: not parked
            return ParkOutcome(False, name, error=f"{type(error).__name__}: {error}")
        if 200 <= response.status_code < 300:
            return ParkOutcome(True, name)
        status, message = rest_error(response)
        if status == "ALREADY_EXISTS":
            return ParkOutcome(True, name, already=True)
        return ParkOutcome(False, name, error=f"{status}: {message}")


def _seconds(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _first_schedule(headers: Headers) -> float | None:
    raw = headers.get(FIRST_SCHEDULE_HEADER)
    if not raw:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        return None


def init_app(app: Flask, dead_letters: DeadLetters | None = None) -> DeadLetters:
    """Attach the dead-letter path to the worker (from its settings by default)."""
    if dead_letters is None:
        settings: WorkerSettings = app.extensions["worker.settings"]
        dead_letters = DeadLetters(DeadLetterSettings.from_worker(settings))
    app.extensions["worker.dead_letters"] = dead_letters

    @app.before_request
    def _arrived() -> None:
        g.arrived_at = time.time()

    if dead_letters.enabled:
        logger.info(
            "dead letters: the last failed attempt of a task is parked in %s",
            dead_letters.settings.queue,
        )
    else:
        logger.warning(
            "dead letters are off (%s not set): a task given up on is only logged",
            contract.DEAD_LETTER_QUEUE.name,
        )
    return dead_letters


def answer_failure(
    status: int, message: str, *, task_id: str, **extra: object
) -> tuple[Response, int]:
    """The answer to a failed attempt: ``status`` (a retry) unless it is the last one,
    which is parked first."""
    dead_letters: DeadLetters = current_app.extensions["worker.dead_letters"]
    if not dead_letters.enabled:
        return json_error(status, message, task=task_id, **extra)
    attempt = _attempt(request.headers.get("X-CloudTasks-TaskRetryCount"))
    judgement = dead_letters.judge(attempt, time.time(), request.headers)
    if not judgement.last:
        return json_error(status, message, task=task_id, **extra)
    return _park(
        dead_letters,
        attempt=attempt,
        judgement=judgement,
        status=status,
        message=message,
        task_id=task_id,
        extra=extra,
    )


def give_up(message: str, *, task_id: str) -> tuple[Response, int] | None:
    """Park a task the worker itself gives up on, whatever the attempt (its payload can
    never succeed); None when dead letters are off (the caller acknowledges it)."""
    dead_letters: DeadLetters = current_app.extensions["worker.dead_letters"]
    if not dead_letters.enabled:
        return None
    attempt = _attempt(request.headers.get("X-CloudTasks-TaskRetryCount"))
    judgement = Judgement(True, True, f"attempt {attempt}: the worker gives up on it")
    return _park(
        dead_letters,
        attempt=attempt,
        judgement=judgement,
        status=200,
        message=message,
        task_id=task_id,
        extra={},
    )


def _park(
    dead_letters: DeadLetters,
    *,
    attempt: int,
    judgement: Judgement,
    status: int,
    message: str,
    task_id: str,
    extra: Mapping[str, object],
) -> tuple[Response, int]:
    headers = request.headers
    now = time.time()
    retry = dead_letters.settings.retry
    assert retry is not None
    arrived = float(getattr(g, "arrived_at", now))
    first, basis = _first_attempt(headers, attempt, arrived, retry)
    queue_short = headers.get("X-CloudTasks-QueueName") or "(unknown queue)"
    queue = dead_letters.settings.queue or ""
    location = queue.rsplit("/queues/", 1)[0]
    record = DeadLetterRecord(
        task=f"{location}/queues/{queue_short}/tasks/{task_id}",
        attempts=attempt,
        first_attempt=iso(first) if first is not None else None,
        first_attempt_basis=basis,
        last_attempt=iso(arrived),
        status=status,
        error=message,
        reason=judgement.reason,
    )
    body = request.get_data()
    outcome = dead_letters.park(
        task_id, record, body, headers.get("Content-Type"), earlier_attempts(headers)
    )
    fields = {"dead_letter": outcome.name, "judgement": judgement.reason, "error": message}
    if outcome.parked:
        logger.error(
            "task %s given up (%s): parked in the dead-letter queue as %s%s",
            task_id,
            judgement.reason,
            outcome.name,
            " (parked before)" if outcome.already else "",
            extra={"json_fields": fields},
        )
        answer = {"task": task_id, "parked": outcome.name, "error": message, **extra}
        return jsonify(answer), 200
    logger.error(
        "task %s given up (%s) and NOT parked (%s): Cloud Tasks keeps it only if it has "
        "attempts left; body: %s",
        task_id,
        judgement.reason,
        outcome.error,
        body[:MAX_LOGGED_BODY].decode("utf-8", "replace"),
        extra={"json_fields": {**fields, "park_error": outcome.error}},
    )
    return json_error(
        503,
        f"{message}; and the task could not be parked in the dead-letter queue "
        f"({outcome.error}), so it is answered as a failure to be kept",
        task=task_id,
        **extra,
    )


def _attempt(raw: str | None) -> int:
    try:
        return max(0, int(raw or "0")) + 1
    except ValueError:
        return 1


def _first_attempt(
    headers: Headers, attempt: int, arrived: float, retry: RetryConfig
) -> tuple[float | None, str]:
    """The first attempt's time as well as the worker knows it, and how it knows."""
    if attempt == 1:
        return arrived, BASIS_OBSERVED
    scheduled = _first_schedule(headers)
    if scheduled is not None:
        return scheduled, BASIS_SCHEDULED
    eta = _seconds(headers.get("X-CloudTasks-TaskETA"))
    if eta is None:
        return None, BASIS_ESTIMATED
    return eta - retry.retried_at_least(attempt), BASIS_ESTIMATED
