"""The worker's dead-letter path: the last failed attempt of a task is parked in the paused
dead-letter queue (REST CreateTask) before the worker answers; a failed parking is a 503
so Cloud Tasks keeps the task."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from service_common.config import ConfigError
from service_common.dead_letter import FIRST_SCHEDULE_HEADER, DeadLetterRecord, iso
from worker.dead_letters import DeadLetters, DeadLetterSettings
from worker.settings import WorkerSettings

DEAD_QUEUE = "projects/demo-project/locations/us-central1/queues/jobs-dead"
RETRY = {"maxAttempts": 3, "minBackoff": "1s", "maxBackoff": "10s", "maxDoublings": 3}
ENDPOINT = "http://127.0.0.1:9"


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self._body = body
        self.text = json.dumps(body)

    def json(self) -> dict[str, Any]:
        return self._body


class FakeSession:
    """Records each POST; answers with ``status`` and Google's error body for it."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.answer: FakeResponse | Exception = FakeResponse(200, {})

    def post(self, url: str, json: dict[str, Any], timeout: float) -> FakeResponse:
        self.posts.append((url, json))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def error(status: int, name: str, message: str) -> FakeResponse:
    return FakeResponse(status, {"error": {"code": status, "status": name, "message": message}})


@pytest.fixture
def session() -> FakeSession:
    return FakeSession()


@pytest.fixture
def make_worker(session: FakeSession) -> Callable[..., FlaskClient]:
    def make(retry: dict[str, Any] | None = None) -> FlaskClient:
        from worker import create_app

        settings = WorkerSettings.from_env(
            {
                "DISPATCH_DEADLINE_SECONDS": "15",
                "GOOGLE_CLOUD_PROJECT": "demo-project",
                "DEAD_LETTER_QUEUE": DEAD_QUEUE,
                "QUEUE_RETRY_CONFIG": json.dumps(retry or RETRY),
                "CLOUD_TASKS_API_ENDPOINT": ENDPOINT,
            }
        )
        app = create_app(settings)
        app.extensions["worker.dead_letters"] = DeadLetters(
            DeadLetterSettings.from_worker(settings), session=session
        )
        return app.test_client()

    return make


def deliver(client: FlaskClient, attempt: int, body: dict[str, Any] | bytes, **headers: str) -> Any:
    sent = {
        "X-CloudTasks-QueueName": "jobs",
        "X-CloudTasks-TaskName": "task-7",
        "X-CloudTasks-TaskRetryCount": str(attempt - 1),
        "X-CloudTasks-TaskExecutionCount": str(attempt - 1),
        "X-CloudTasks-TaskETA": f"{time.time():.3f}",
        **headers,
    }
    if isinstance(body, bytes):
        return client.post("/tasks", data=body, headers=sent, content_type="application/json")
    return client.post("/tasks", json=body, headers=sent)


FAILING = {"message": "never works", "fail_attempts": 100}


def test_attempts_before_the_last_are_answered_500_and_not_parked(
    make_worker: Callable[..., FlaskClient], session: FakeSession
) -> None:
    client = make_worker()
    for attempt in (1, 2):
        assert deliver(client, attempt, FAILING).status_code == 500
    assert session.posts == []


def test_the_last_attempt_is_parked_with_its_story_then_acknowledged(
    make_worker: Callable[..., FlaskClient],
    session: FakeSession,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """Attempt 3 of 3: one CreateTask on the dead-letter queue under the task's own id,
    the original body and Content-Type, the attempt count, times, last error and why; no
    OIDC token; then 200, so the dead letter is the one copy left."""
    client = make_worker()
    response = deliver(client, 3, FAILING)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["parked"] == f"{DEAD_QUEUE}/tasks/task-7"
    [(url, sent)] = session.posts
    assert url == f"{ENDPOINT}/v2/{DEAD_QUEUE}/tasks"
    task = sent["task"]
    assert task["name"] == f"{DEAD_QUEUE}/tasks/task-7"
    http = task["httpRequest"]
    assert "oidcToken" not in http
    assert http["url"].endswith("/tasks")
    assert json.loads(base64.b64decode(http["body"])) == FAILING
    assert http["headers"]["Content-Type"] == "application/json"
    record = DeadLetterRecord.from_headers(http["headers"])
    assert record is not None
    assert record.task == "projects/demo-project/locations/us-central1/queues/jobs/tasks/task-7"
    assert (record.attempts, record.status) == (3, 500)
    assert "simulated failure: attempt 3" in record.error
    assert "attempt 3 of 3" in record.reason
    assert record.first_attempt is not None
    assert record.first_attempt <= record.last_attempt
    parked = [line for line in log_lines() if "parked in the dead-letter queue" in line["message"]]
    assert [line["severity"] for line in parked] == ["ERROR"]


def test_a_task_parked_before_is_not_parked_twice(
    make_worker: Callable[..., FlaskClient], session: FakeSession
) -> None:
    """ALREADY_EXISTS: an earlier delivery of this attempt parked it; acknowledged."""
    session.answer = error(409, "ALREADY_EXISTS", "Requested entity already exists")
    response = deliver(make_worker(), 3, FAILING)
    assert response.status_code == 200
    assert "parked" in response.get_json()


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (error(403, "PERMISSION_DENIED", 'lacks IAM permission "cloudtasks.tasks.create"'),
         "PERMISSION_DENIED"),
        (error(503, "UNAVAILABLE", "try later"), "UNAVAILABLE"),
        (ConnectionError("refused"), "ConnectionError"),
    ],
    ids=["denied", "unavailable", "unreachable"],
)  # fmt: skip
def test_a_task_that_cannot_be_parked_is_answered_503_and_logged_with_its_body(
    make_worker: Callable[..., FlaskClient],
    session: FakeSession,
    log_lines: Callable[[], list[dict[str, Any]]],
    answer: Any,
    named: str,
) -> None:
    session.answer = answer
    response = deliver(make_worker(), 3, FAILING)
    assert response.status_code == 503
    assert named in response.get_json()["error"]
    [line] = [line for line in log_lines() if "NOT parked" in line["message"]]
    assert line["severity"] == "ERROR"
    assert "never works" in line["message"]


def test_a_payload_that_can_never_succeed_is_parked_at_once(
    make_worker: Callable[..., FlaskClient], session: FakeSession
) -> None:
    response = deliver(make_worker(), 1, b"not json")
    assert response.status_code == 200
    [(_, sent)] = session.posts
    record = DeadLetterRecord.from_headers(sent["task"]["httpRequest"]["headers"])
    assert record is not None
    assert record.attempts == 1
    assert "payload can never succeed" in record.error
    assert base64.b64decode(sent["task"]["httpRequest"]["body"]) == b"not json"


def test_with_a_duration_limit_a_known_schedule_time_keeps_the_retries(
    make_worker: Callable[..., FlaskClient], session: FakeSession
) -> None:
    """3 attempts and 60 s: attempt 3 of a task first scheduled 5 s ago is retried (500);
    without the schedule time the worker cannot tell, and parks it."""
    client = make_worker({**RETRY, "maxRetryDuration": "60s"})
    recent = iso(time.time() - 5)
    assert deliver(client, 3, FAILING, **{FIRST_SCHEDULE_HEADER: recent}).status_code == 500
    assert session.posts == []
    assert deliver(client, 3, FAILING).status_code == 200
    assert len(session.posts) == 1


def test_without_a_dead_letter_queue_the_worker_answers_as_before(
    worker_client: FlaskClient,
) -> None:
    assert deliver(worker_client, 3, FAILING).status_code == 500


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEAD_LETTER_QUEUE": DEAD_QUEUE}, "QUEUE_RETRY_CONFIG"),
        ({"DEAD_LETTER_QUEUE": "jobs-dead", "QUEUE_RETRY_CONFIG": "{}"}, "DEAD_LETTER_QUEUE"),
        ({"DEAD_LETTER_QUEUE": DEAD_QUEUE, "QUEUE_RETRY_CONFIG": "{maxAttempts"}, "not JSON"),
        ({"QUEUE_RETRY_CONFIG": '{"maxAttempts": "ten"}'}, "retryConfig.maxAttempts"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        WorkerSettings.from_env(env)


def test_a_replayed_task_counts_its_earlier_attempts(
    make_worker: Callable[..., FlaskClient], session: FakeSession
) -> None:
    """'Fail the first 3 attempts' of a task replayed after 3 failed attempts: its first
    delivery is the task's 4th attempt, and succeeds; the same body fresh fails."""
    client = make_worker()
    body = {"message": "replayed", "fail_attempts": 3}
    replayed = deliver(client, 1, body, **{"X-Task-Earlier-Attempts": "3"})
    assert replayed.status_code == 200
    assert replayed.get_json()["acknowledged"] is True
    assert deliver(client, 1, body).status_code == 500
    assert session.posts == []
