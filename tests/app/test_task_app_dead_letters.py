"""Dead letters through the project's emulator (REST): the worker parks a task given up on,
the task-app lists it, replays it once (however often it is asked) and discards it, with
the API's status discipline; the page shows them with their buttons, and each live task's
retry plan."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from google.auth.credentials import AnonymousCredentials
from service_common.dead_letter import FIRST_SCHEDULE_HEADER
from tasks_emulator import EmulatorThread

LOCATION = "projects/demo-project/locations/europe-west1"
JOBS = f"{LOCATION}/queues/jobs"
DEAD = f"{LOCATION}/queues/jobs-dead"
RETRY = {"maxAttempts": 3, "minBackoff": "1s", "maxBackoff": "10s", "maxDoublings": 3}
CALLER = "task-app@demo-project.iam.gserviceaccount.com"
WORKER_URL = "https://worker-abc123-ew.a.run.app"
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@dataclass
class Local:
    rest: str
    grpc: str


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    """The emulator with both queues paused: nothing is dispatched, everything stays to be
    looked at."""
    runner = EmulatorThread(host="127.0.0.1", port=0, keys_port=0, rest_port=0)
    emulator = runner.start()
    rest = emulator.rest_url
    for name in (JOBS, DEAD):
        answer = requests.post(f"{rest}/v2/{LOCATION}/queues", json={"name": name}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert requests.post(f"{rest}/v2/{name}:pause", timeout=10).status_code == 200
    try:
        yield Local(rest, emulator.address)
    finally:
        runner.stop()


def purge(local: Local) -> None:
    for name in (JOBS, DEAD):
        requests.post(f"{local.rest}/v2/{name}:purge", timeout=10)


def tasks_of(local: Local, queue: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{local.rest}/v2/{queue}/tasks", params={"responseView": "FULL"}, timeout=10
    )
    found: list[dict[str, Any]] = answer.json().get("tasks", [])
    return found


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, local: Local) -> Local:
    purge(local)
    values = {
        "QUEUE": JOBS,
        "WORKER_URL": WORKER_URL,
        "OIDC_SERVICE_ACCOUNT": CALLER,
        "DISPATCH_DEADLINE_SECONDS": "900",
        "SECRET_KEY": "test-secret-key",
        "DEAD_LETTER_QUEUE": DEAD,
        "QUEUE_RETRY_CONFIG": json.dumps(RETRY),
        "CLOUD_TASKS_API_ENDPOINT": local.rest,
        "GOOGLE_CLOUD_PROJECT": "demo-project",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("OIDC_AUDIENCE", "OIDC_CERTS_URL"):
        monkeypatch.delenv(name, raising=False)
    return local


def anonymous(app: Flask, key: str, make: Any) -> None:
    """The emulator without IAM policies takes calls without a token."""
    app.extensions[key] = make(session=requests.Session())


@pytest.fixture
def task_app(env: Local) -> Iterator[Flask]:
    from task_app import create_app
    from task_app.dead_letters import DeadLetterStore

    app = create_app(config={"TESTING": True}, credentials=AnonymousCredentials())
    settings = app.extensions["task_app.settings"]
    anonymous(
        app,
        "task_app.dead_letters",
        lambda session: DeadLetterStore(settings.dead_letters, settings, session),
    )
    yield app
    app.extensions["task_app.cloud_tasks"].close()


@pytest.fixture
def client(task_app: Flask) -> FlaskClient:
    return task_app.test_client()


@pytest.fixture
def park(env: Local, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Parks a task as the worker does: its third and last attempt fails (the worker's
    token check is off: these deliveries come from the test)."""
    from worker import create_app
    from worker.dead_letters import DeadLetters, DeadLetterSettings

    with monkeypatch.context() as patch:
        patch.delenv("OIDC_SERVICE_ACCOUNT")
        worker = create_app()
    anonymous(
        worker,
        "worker.dead_letters",
        lambda session: DeadLetters(
            DeadLetterSettings.from_worker(worker.extensions["worker.settings"]), session
        ),
    )
    client = worker.test_client()

    def park(task_id: str, message: str = "always fails") -> dict[str, Any]:
        answer = client.post(
            "/tasks",
            json={"message": message, "fail_attempts": 100},
            headers={
                "X-CloudTasks-QueueName": "jobs",
                "X-CloudTasks-TaskName": task_id,
                "X-CloudTasks-TaskRetryCount": "2",
                "X-CloudTasks-TaskExecutionCount": "2",
                "X-CloudTasks-TaskETA": f"{time.time():.3f}",
            },
        )
        assert answer.status_code == 200, answer.get_json()
        body: dict[str, Any] = answer.get_json()
        return body

    return park


def test_a_parked_task_is_listed_with_why_when_and_how_many_attempts(
    client: FlaskClient, park: Any
) -> None:
    park("dies-1", message="hello dead letters")
    answer = client.get("/api/dead-letters")
    assert answer.status_code == 200
    [letter] = answer.get_json()["dead_letters"]
    assert letter["id"] == "dies-1"
    assert letter["task"] == f"{JOBS}/tasks/dies-1"
    assert letter["attempts"] == 3
    assert letter["last_status"] == 500
    assert "simulated failure: attempt 3" in letter["last_error"]
    assert "attempt 3 of 3" in letter["reason"]
    assert letter["message"] == "hello dead letters"
    assert letter["last_attempt"]
    assert letter["parked_at"]


def test_replay_creates_one_task_with_the_same_body_then_removes_the_dead_letter(
    client: FlaskClient, park: Any, env: Local
) -> None:
    park("dies-2")
    [dead] = tasks_of(env, DEAD)
    answer = client.post("/api/dead-letters/dies-2/replay", json={})
    assert answer.status_code == 201, answer.get_json()
    replayed = answer.get_json()["replayed_as"]
    assert replayed.startswith("dies-2-replay-")
    [task] = tasks_of(env, JOBS)
    assert task["name"] == f"{JOBS}/tasks/{replayed}"
    http = task["httpRequest"]
    assert base64.b64decode(http["body"]) == base64.b64decode(dead["httpRequest"]["body"])
    assert http["url"] == f"{WORKER_URL}/tasks"
    assert http["oidcToken"] == {"serviceAccountEmail": CALLER, "audience": WORKER_URL}
    assert FIRST_SCHEDULE_HEADER in http["headers"]
    assert "X-Dead-Letter" not in http["headers"]
    # The worker's "first K attempts fail" counts the 3 attempts of its first life.
    assert http["headers"]["X-Task-Earlier-Attempts"] == "3"
    assert tasks_of(env, DEAD) == []
    # The dead letter is gone: a second replay finds nothing to replay.
    assert client.post("/api/dead-letters/dies-2/replay", json={}).status_code == 404


def test_a_replay_asked_twice_creates_one_task(
    client: FlaskClient, task_app: Flask, park: Any, env: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first replay's delete fails (503 saying the task was replayed); the second
    replay finds the task already created (ALREADY_EXISTS), creates none, finishes."""
    from task_app.dead_letters import CloudTasksError

    park("dies-3")
    store = task_app.extensions["task_app.dead_letters"]
    real_delete = store.delete
    calls = []

    def failing_once(dead_letter: str) -> None:
        calls.append(dead_letter)
        if len(calls) == 1:
            raise CloudTasksError("UNAVAILABLE", "the service is currently unavailable")
        real_delete(dead_letter)

    monkeypatch.setattr(store, "delete", failing_once)
    first = client.post("/api/dead-letters/dies-3/replay", json={})
    assert first.status_code == 503
    assert "UNAVAILABLE" in first.get_json()["error"]
    second = client.post("/api/dead-letters/dies-3/replay", json={})
    assert second.status_code == 201
    assert second.get_json()["already"] is True
    assert second.get_json()["replayed_as"] == first.get_json()["replayed_as"]
    assert len(tasks_of(env, JOBS)) == 1
    assert tasks_of(env, DEAD) == []


def test_discard_removes_the_dead_letter(client: FlaskClient, park: Any, env: Local) -> None:
    park("dies-4")
    assert client.delete("/api/dead-letters/dies-4").status_code == 200
    assert tasks_of(env, DEAD) == []
    assert tasks_of(env, JOBS) == []
    assert client.delete("/api/dead-letters/dies-4").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/api/dead-letters/nobody/replay", 404),
        ("delete", "/api/dead-letters/nobody", 404),
        ("post", "/api/dead-letters/bad.id/replay", 400),
        ("delete", "/api/dead-letters/bad.id", 400),
    ],
)
def test_unknown_and_malformed_ids(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status
    assert "error" in answer.get_json()


def test_replay_takes_json_only(client: FlaskClient, park: Any) -> None:
    """A cross-site form cannot send JSON: a replay without it is refused (415)."""
    park("dies-5")
    answer = client.post("/api/dead-letters/dies-5/replay", data="x", content_type="text/plain")
    assert answer.status_code == 415


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/dead-letters"),
        ("post", "/api/dead-letters/dies-6/replay"),
        ("delete", "/api/dead-letters/dies-6"),
    ],
)
def test_cloud_tasks_unreachable_is_503_naming_it(
    task_app: Flask, client: FlaskClient, method: str, path: str
) -> None:
    store = task_app.extensions["task_app.dead_letters"]
    store.api_endpoint = "http://127.0.0.1:9"
    kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == 503
    assert "UNAVAILABLE" in answer.get_json()["error"]


def test_the_pages_buttons_replay_and_discard_with_the_pages_csrf_token(
    client: FlaskClient, park: Any, env: Local
) -> None:
    """The page's section (filled by its script from /api/dead-letters) and its buttons'
    forms: refused without the page's CSRF token, done with it, then back to the page."""
    park("dies-7", message="see me on the page")
    page = client.get("/").get_data(as_text=True)
    assert '<table id="dead-letters" data-enabled="true">' in page
    token = CSRF_FIELD.search(page)
    assert token is not None
    assert client.post("/dead-letters/dies-7/discard").status_code == 400
    assert len(tasks_of(env, DEAD)) == 1
    done = client.post(
        "/dead-letters/dies-7/replay", data={"csrf_token": token.group(1)}, follow_redirects=True
    )
    assert done.status_code == 200
    assert "Replayed dies-7 as task dies-7-replay-" in done.get_data(as_text=True)
    assert tasks_of(env, DEAD) == []
    park("dies-8")
    gone = client.post(
        "/dead-letters/dies-8/discard", data={"csrf_token": token.group(1)}, follow_redirects=True
    )
    assert "Discarded dead letter dies-8" in gone.get_data(as_text=True)
    assert tasks_of(env, DEAD) == []


def test_each_live_task_has_its_retry_plan(client: FlaskClient) -> None:
    """3 attempts at 1 s, doubling: a new task is at attempt 1 of 3, given up 3 s after its
    first attempt, its attempts drawn at 0, 1/3 and 1 of the timeline."""
    assert client.post("/tasks", json={"task_id": "lives-1"}).status_code == 201
    [task] = client.get("/api/tasks").get_json()["tasks"]
    plan = task["plan"]
    assert (plan["attempt"], plan["of"]) == (1, 3)
    assert [point["x"] for point in plan["timeline"]] == [0, pytest.approx(1 / 3, abs=1e-3), 1]
    assert [point["number"] for point in plan["timeline"]] == [1, 2, 3]
    assert plan["given_up_at"] == plan["timeline"][-1]["at"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEAD_LETTER_QUEUE": "jobs-dead"}, "DEAD_LETTER_QUEUE"),
        ({"QUEUE_RETRY_CONFIG": "[1]"}, "must be a JSON object"),
        ({"QUEUE_RETRY_CONFIG": '{"maxBackoff": "soon"}'}, "retryConfig.maxBackoff"),
    ],
)
def test_the_task_apps_bad_dead_letter_settings_are_refused(
    env: dict[str, str], named: str
) -> None:
    from service_common.config import ConfigError
    from task_app.settings import TaskAppSettings

    base = {"QUEUE": JOBS, "WORKER_URL": WORKER_URL, "SECRET_KEY": "k"}
    with pytest.raises(ConfigError, match=named):
        TaskAppSettings.from_env({**base, **env})
