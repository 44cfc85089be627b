"""worker's route: POST /tasks (Cloud Tasks' deliveries); GET /healthz is service_common's.

Status discipline, since Cloud Tasks retries anything but a 2xx:
- 2xx: done, or a payload that can never succeed (logged at ERROR, acknowledged so it is
  not retried a hundred times);
- 5xx: a transient failure (simulated with ``fail_attempts``, or a shutdown mid-work), so
  Cloud Tasks tries again;
- 401/403: the caller is not who it must be (only when token verification is on).

A failure Cloud Tasks will not retry (the last attempt, or a payload that can never
succeed) is first parked in the dead-letter queue (``worker.dead_letters``): 200 once it is
parked, 503 when it could not be.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, Response, current_app, jsonify, request
from service_common.dead_letter import earlier_attempts
from service_common.web import InvalidBody, json_error, parse_json, read_body

from worker import dead_letters, shutdown
from worker.auth import AuthFailure, TokenVerifier
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

tasks = Blueprint("tasks", __name__)

CLOUD_TASKS_HEADERS = {
    "queue": "X-CloudTasks-QueueName",
    "task": "X-CloudTasks-TaskName",
    "retry_count": "X-CloudTasks-TaskRetryCount",
    "execution_count": "X-CloudTasks-TaskExecutionCount",
    "eta": "X-CloudTasks-TaskETA",
    "previous_response": "X-CloudTasks-TaskPreviousResponse",
    "retry_reason": "X-CloudTasks-TaskRetryReason",
}
# The message is the user's text; keep one log line bounded whatever it holds.
MAX_LOGGED_MESSAGE = 1000


class InvalidPayload(ValueError):
    """A task body that no retry can fix."""


def _settings() -> WorkerSettings:
    settings: WorkerSettings = current_app.extensions["worker.settings"]
    return settings


def parse_payload(body: bytes) -> tuple[str, float, int]:
    """(message, work_seconds, fail_attempts) from the JSON body, all optional."""
    if not body.strip():
        return "", 0.0, 0
    try:
        data = parse_json(body)
    except InvalidBody as invalid:
        raise InvalidPayload(str(invalid)) from None
    if not isinstance(data, dict):
        raise InvalidPayload(f"body must be a JSON object, got {type(data).__name__}")
    message = data.get("message", "")
    if not isinstance(message, str):
        raise InvalidPayload(f"message must be a string, got {message!r}")
    work = data.get("work_seconds", 0)
    if (
        isinstance(work, bool)
        or not isinstance(work, int | float)
        or not math.isfinite(work)
        or work < 0
    ):
        raise InvalidPayload(f"work_seconds must be a number >= 0, got {work!r}")
    fail_attempts = data.get("fail_attempts", 0)
    if isinstance(fail_attempts, bool) or not isinstance(fail_attempts, int) or fail_attempts < 0:
        raise InvalidPayload(f"fail_attempts must be an integer >= 0, got {fail_attempts!r}")
    return message, float(work), fail_attempts


def _retry_count(raw: str | None) -> int:
    try:
        return max(0, int(raw or "0"))
    except ValueError:
        return 0


@tasks.post("/tasks")
def run_task() -> tuple[Response, int]:
    """One delivery of one task."""
    settings = _settings()
    verifier: TokenVerifier | None = current_app.extensions["worker.verifier"]
    caller = None
    if verifier is not None:
        try:
            claims = verifier.verify(request.headers.get("Authorization"))
            caller = claims.get("email")
        except AuthFailure as failure:
            log = logger.error if failure.status >= 500 else logger.warning
            log("refused a task delivery (%d): %s", failure.status, failure.detail)
            response, status = json_error(failure.status, failure.reason)
            if failure.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="worker"'
            return response, status

    headers = {key: request.headers.get(name) for key, name in CLOUD_TASKS_HEADERS.items()}
    task = headers["task"] or "(no task name)"
    retry_count = _retry_count(headers["retry_count"])
    try:
        message, work_seconds, fail_attempts = parse_payload(read_body())
    except InvalidPayload as invalid:
        logger.error(
            "task %s has a payload that can never succeed, acknowledged without work: %s",
            task,
            invalid,
            extra={"json_fields": {"cloud_tasks": headers, "caller": caller}},
        )
        # Acknowledged (no retry can fix it), after parking it as a dead letter when the
        # dead-letter queue is set: no task ends with a log line alone.
        parked = dead_letters.give_up(f"payload can never succeed: {invalid}", task_id=task)
        if parked is not None:
            return parked
        return jsonify({"task": task, "acknowledged": True, "error": str(invalid)}), 200

    logger.info(
        "task %s attempt %d: %s",
        task,
        retry_count + 1,
        message[:MAX_LOGGED_MESSAGE],
        extra={
            "json_fields": {
                "cloud_tasks": headers,
                "task_message": message[:MAX_LOGGED_MESSAGE],
                "work_seconds": work_seconds,
                "fail_attempts": fail_attempts,
                "caller": caller,
            }
        },
    )
    # A replayed task's earlier lives count: "the first K attempts" are the task's, so a
    # task that died of them succeeds when replayed.
    attempt = earlier_attempts(request.headers) + retry_count + 1
    if attempt <= fail_attempts:
        reason = f"simulated failure: attempt {attempt} fails (first {fail_attempts} do)"
        logger.warning("task %s: %s", task, reason)
        return dead_letters.answer_failure(500, reason, task_id=task)

    cap = settings.max_work_seconds
    if work_seconds > cap:
        logger.warning(
            "task %s: work of %g s capped at %g s, below the %d s dispatch deadline",
            task,
            work_seconds,
            cap,
            settings.dispatch_deadline_seconds,
        )
        work_seconds = cap
    started = time.monotonic()
    if shutdown.shutting_down() or shutdown.wait_for_shutdown(work_seconds):
        logger.warning("task %s: shutting down, not acknowledged; it will be retried", task)
        return dead_letters.answer_failure(503, "shutting down; retry later", task_id=task)
    elapsed = time.monotonic() - started
    logger.info("task %s done in %.3f s", task, elapsed)
    return jsonify({"task": task, "acknowledged": True, "work_seconds": round(elapsed, 3)}), 200
