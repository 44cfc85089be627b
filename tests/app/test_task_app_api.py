"""task-app's JSON API (POST /tasks, GET /api/tasks) against a Cloud Tasks API on a local
port: the real google-cloud-tasks client, faked only at the network edge."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask import Flask
from flask.testing import FlaskClient
from google.cloud import tasks_v2
from google.rpc import code_pb2
from services_support import QUEUE, TASK_APP_SA, WORKER_URL
from task_app.settings import TaskAppSettings


def test_one_task_is_an_authenticated_json_post_to_the_worker(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """The task must reach WORKER_URL/tasks as a JSON POST with an OIDC token for the worker's
    base URL and the configured dispatch deadline; otherwise Cloud Run refuses it or the
    worker cannot read it."""
    response = client.post("/tasks", json={"message": "hello", "fail_attempts": 2})

    assert response.status_code == 201
    [request] = fake_tasks.create_requests
    assert request.parent == QUEUE
    http = request.task.http_request
    assert http.url == f"{WORKER_URL}/tasks"
    assert http.http_method == tasks_v2.HttpMethod.POST
    assert http.headers["Content-Type"] == "application/json"
    assert json.loads(http.body) == {"message": "hello", "fail_attempts": 2, "work_seconds": 0.0}
    assert http.oidc_token.service_account_email == TASK_APP_SA
    assert http.oidc_token.audience == WORKER_URL
    assert request.task.dispatch_deadline == datetime.timedelta(seconds=900)
    assert "schedule_time" not in request.task
    assert not request.task.name, "without task_id, Cloud Tasks names the task"
    created = next(iter(fake_tasks.tasks))
    assert response.get_json() == {"tasks": [created.rsplit("/", 1)[-1]]}


def test_delay_sets_the_schedule_time(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """A delay becomes schedule_time = now + delay (Cloud Tasks' way to run a task later)."""
    before = datetime.datetime.now(datetime.UTC)
    response = client.post("/tasks", json={"delay_seconds": 3600})
    after = datetime.datetime.now(datetime.UTC)

    assert response.status_code == 201
    scheduled = fake_tasks.create_requests[0].task.schedule_time
    assert before + datetime.timedelta(hours=1) <= scheduled <= after + datetime.timedelta(hours=1)


def test_count_fans_out_into_distinct_tasks(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """count=N creates N tasks and reports each of their ids."""
    response = client.post("/tasks", json={"count": 5, "work_seconds": 1.5})

    assert response.status_code == 201
    ids = response.get_json()["tasks"]
    assert len(ids) == 5 == len(set(ids))
    assert sorted(ids) == sorted(name.rsplit("/", 1)[-1] for name in fake_tasks.tasks)
    bodies = [json.loads(r.task.http_request.body) for r in fake_tasks.create_requests]
    assert all(body["work_seconds"] == 1.5 for body in bodies)


def test_task_id_names_the_task_and_duplicates_get_409(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """A caller-given id becomes the task's name, so Cloud Tasks refuses a second task with
    it (ALREADY_EXISTS); the API says so with 409 rather than an outage."""
    first = client.post("/tasks", json={"task_id": "order-42"})
    second = client.post("/tasks", json={"task_id": "order-42"})

    assert first.status_code == 201
    assert first.get_json() == {"tasks": ["order-42"]}
    assert fake_tasks.create_requests[0].task.name == f"{QUEUE}/tasks/order-42"
    assert second.status_code == 409
    body = second.get_json()
    assert "order-42" in body["error"]
    assert "already exists" in body["error"]
    assert body["tasks"] == []


def test_task_id_with_count_numbers_each_task(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """A fan-out with a caller-given id derives one distinct name per task."""
    response = client.post("/tasks", json={"task_id": "batch", "count": 3})

    assert response.status_code == 201
    assert response.get_json() == {"tasks": ["batch-1", "batch-2", "batch-3"]}


def test_without_service_account_no_token_is_requested(
    task_app_settings: TaskAppSettings,
    make_task_app: Callable[[TaskAppSettings], Flask],
    fake_tasks: FakeCloudTasks,
) -> None:
    """No service account (OIDC_SERVICE_ACCOUNT empty) means tasks carry no OIDC token (a
    public worker)."""
    app = make_task_app(dataclasses.replace(task_app_settings, oidc_service_account=None))
    assert app.test_client().post("/tasks", json={}).status_code == 201
    assert "oidc_token" not in fake_tasks.create_requests[0].task.http_request


def test_tokens_are_minted_for_the_configured_audience(
    make_task_app: Callable[[TaskAppSettings], Flask], fake_tasks: FakeCloudTasks
) -> None:
    """With OIDC_AUDIENCE set (the worker's deterministic URL), each task's token is for
    its first URL, the one the worker accepts, not for WORKER_URL."""
    audience = "https://worker-123456789012.europe-west1.run.app"
    settings = TaskAppSettings.from_env(
        {
            "QUEUE": QUEUE,
            "WORKER_URL": WORKER_URL,
            "OIDC_SERVICE_ACCOUNT": TASK_APP_SA,
            "OIDC_AUDIENCE": f"{audience}/, https://other.example",
            "CLOUD_TASKS_API_ENDPOINT": fake_tasks.url,
        }
    )
    app = make_task_app(settings)

    assert app.test_client().post("/tasks", json={}).status_code == 201
    http = fake_tasks.create_requests[0].task.http_request
    assert http.oidc_token.audience == audience
    assert http.url == f"{WORKER_URL}/tasks"


INVALID_BODIES = [
    ({"message": 5}, "message"),
    ({"message": "x" * 1001}, "message"),
    ({"delay_seconds": -1}, "delay_seconds"),
    ({"delay_seconds": 30 * 24 * 3600 + 1}, "delay_seconds"),
    ({"delay_seconds": "10"}, "delay_seconds"),
    ({"delay_seconds": True}, "delay_seconds"),
    ({"count": 0}, "count"),
    ({"count": 101}, "count"),
    ({"count": 2.5}, "count"),
    ({"count": "3"}, "count"),
    ({"count": None}, "count"),
    ({"fail_attempts": -1}, "fail_attempts"),
    ({"fail_attempts": 101}, "fail_attempts"),
    ({"fail_attempts": 1.0}, "fail_attempts"),
    ({"work_seconds": -0.5}, "work_seconds"),
    ({"work_seconds": 896}, "work_seconds"),
    ({"work_seconds": [1]}, "work_seconds"),
    ({"task_id": "has space"}, "task_id"),
    ({"task_id": ""}, "task_id"),
    ({"task_id": "a" * 501}, "task_id"),
    ({"task_id": "a" * 499, "count": 2}, "task_id"),
    ({"task_id": 7}, "task_id"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES)
def test_invalid_field_is_named_and_nothing_is_scheduled(
    client: FlaskClient, fake_tasks: FakeCloudTasks, body: dict[str, Any], field: str
) -> None:
    """Every invalid field gets a 400 that names it, and no task is created."""
    response = client.post("/tasks", json=body)

    assert response.status_code == 400
    payload = response.get_json()
    assert list(payload["fields"]) == [field]
    assert field in payload["error"]
    assert fake_tasks.create_requests == []


def test_boundary_values_are_accepted(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """The limits themselves are allowed: 30 days, 100 tasks, 100 failures, deadline - 5 s."""
    response = client.post(
        "/tasks",
        json={
            "message": "x" * 1000,
            "delay_seconds": 30 * 24 * 3600,
            "count": 100,
            "fail_attempts": 100,
            "work_seconds": 895,
        },
    )
    assert response.status_code == 201
    assert len(response.get_json()["tasks"]) == 100


def test_all_invalid_fields_are_reported_at_once(client: FlaskClient) -> None:
    """A caller fixes every problem in one round trip."""
    response = client.post("/tasks", json={"count": 0, "delay_seconds": -1})

    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"count", "delay_seconds"}


@pytest.mark.parametrize(
    ("data", "content_type", "status", "words"),
    [
        ("{}", "text/plain", 415, "application/json"),
        ("count=2", "application/x-www-form-urlencoded", 415, "application/json"),
        ("{not json", "application/json", 400, "not valid JSON"),
        ("", "application/json", 400, "not valid JSON"),
        ("[1, 2]", "application/json", 400, "JSON object"),
    ],
)
def test_body_that_is_not_a_json_object_is_refused(
    client: FlaskClient,
    fake_tasks: FakeCloudTasks,
    data: str,
    content_type: str,
    status: int,
    words: str,
) -> None:
    """Only a JSON object is accepted; requiring the JSON content type also keeps
    cross-site HTML forms out of this CSRF-exempt endpoint."""
    response = client.post("/tasks", data=data, content_type=content_type)

    assert response.status_code == status
    assert words in response.get_json()["error"]
    assert fake_tasks.create_requests == []


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED])
def test_api_failure_is_503_logged_and_the_process_keeps_serving(
    client: FlaskClient,
    fake_tasks: FakeCloudTasks,
    log_lines: Callable[[], list[dict[str, Any]]],
    code: grpc.StatusCode,
) -> None:
    """A Cloud Tasks failure is a 503 with a clear message, an ERROR log line, no task
    reported; the next request works again."""
    fake_tasks.fail("CreateTask", code, call=1)

    failed = client.post("/tasks", json={})
    recovered = client.post("/tasks", json={})

    assert failed.status_code == 503
    body = failed.get_json()
    assert "Cloud Tasks is unavailable" in body["error"]
    assert code.name in body["error"]
    assert body["tasks"] == []
    assert recovered.status_code == 201
    errors = [line for line in log_lines() if line["severity"] == "ERROR"]
    assert any(code.name in line["message"] for line in errors)


def test_calls_carry_the_credentials_token(
    task_app_settings: TaskAppSettings, fake_tasks: FakeCloudTasks
) -> None:
    """Every call is authorized by the credentials it was given (on Cloud Run, google-auth's
    default ones: the service account's token from the metadata server)."""
    from google.oauth2.credentials import Credentials
    from task_app import create_app

    app = create_app(task_app_settings, credentials=Credentials(token="the-token"))
    try:
        client = app.test_client()
        assert client.post("/tasks", json={}).status_code == 201
        assert client.get("/api/tasks").status_code == 200
    finally:
        app.extensions["task_app.cloud_tasks"].close()

    assert fake_tasks.authorizations == ["Bearer the-token"] * 2


def _denial(permission: str) -> str:
    return (
        f'The principal (user or service account) lacks IAM permission "{permission}" for the '
        f'resource "{QUEUE}" (or the resource may not exist).'
    )


def test_a_denied_create_names_the_permission_the_stack_must_grant(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """PERMISSION_DENIED is a 503 naming the missing permission (no "try again later":
    only a grant helps), and nothing is reported created."""
    fake_tasks.fail(
        "CreateTask", grpc.StatusCode.PERMISSION_DENIED, details=_denial("cloudtasks.tasks.create")
    )

    response = client.post("/tasks", json={})

    assert response.status_code == 503
    body = response.get_json()
    assert "(PERMISSION_DENIED)" in body["error"]
    assert "lacks cloudtasks.tasks.create on queue 'jobs'" in body["error"]
    assert "Try again later" not in body["error"]
    assert body["tasks"] == []


def test_a_denied_listing_names_the_permission(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    fake_tasks.fail(
        "ListTasks", grpc.StatusCode.PERMISSION_DENIED, details=_denial("cloudtasks.tasks.list")
    )

    # The page shows what /api/tasks answers (its script loads the list from there).
    listing = client.get("/api/tasks")

    assert listing.status_code == 503
    assert "(PERMISSION_DENIED)" in listing.get_json()["error"]
    assert "lacks cloudtasks.tasks.list on queue 'jobs'" in listing.get_json()["error"]


def test_a_denial_without_a_permission_in_it_says_only_its_code(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    fake_tasks.fail("ListTasks", grpc.StatusCode.PERMISSION_DENIED, details="denied")

    error = client.get("/api/tasks").get_json()["error"]

    assert error == "Cloud Tasks is unavailable (PERMISSION_DENIED): cannot list the queue's tasks."


def test_fan_out_failure_reports_exactly_the_created_tasks(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """When task 3 of 5 fails, the answer lists tasks 1 and 2 (which exist) and stops:
    nothing is reported that was not created, nothing is tried after the failure."""
    fake_tasks.fail("CreateTask", grpc.StatusCode.UNAVAILABLE, call=3)

    response = client.post("/tasks", json={"count": 5})

    assert response.status_code == 503
    body = response.get_json()
    assert body["failed_task"] == 3
    assert body["requested"] == 5
    assert "task 3 of 5" in body["error"]
    assert sorted(body["tasks"]) == sorted(name.rsplit("/", 1)[-1] for name in fake_tasks.tasks)
    assert len(body["tasks"]) == 2
    assert len(fake_tasks.create_requests) == 3


def test_slow_api_times_out_with_503_and_says_the_outcome_is_unknown(
    task_app_settings: TaskAppSettings,
    make_task_app: Callable[[TaskAppSettings], Flask],
    fake_tasks: FakeCloudTasks,
) -> None:
    """CreateTask has a call timeout: a hung API gives a 503 in about that time, and the
    answer admits the task may exist (a timeout does not prove it was not created)."""
    fake_tasks.delay("CreateTask", 1.5)
    app = make_task_app(dataclasses.replace(task_app_settings, api_timeout_seconds=0.3))
    started = time.monotonic()
    response = app.test_client().post("/tasks", json={})
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.get_json()
    assert body["outcome_unknown"] is True
    assert "may or may not have been created" in body["error"]
    assert elapsed < 1.2


def test_unreachable_api_is_503(
    task_app_settings: TaskAppSettings, make_task_app: Callable[[TaskAppSettings], Flask]
) -> None:
    """Nothing listening at the Cloud Tasks address: 503, not a crash."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = dataclasses.replace(
        task_app_settings, api_endpoint=f"http://127.0.0.1:{closed_port}"
    )
    client = make_task_app(settings).test_client()
    created = client.post("/tasks", json={})
    listed = client.get("/api/tasks")

    assert created.status_code == 503
    assert "UNAVAILABLE" in created.get_json()["error"]
    assert listed.status_code == 503


def _attempted_task(task_id: str, status_code: int, message: str) -> tasks_v2.Task:
    now = datetime.datetime.now(datetime.UTC)
    return tasks_v2.Task(
        name=f"{QUEUE}/tasks/{task_id}",
        schedule_time=now,
        create_time=now,
        dispatch_count=3,
        response_count=3,
        last_attempt=tasks_v2.Attempt(
            dispatch_time=now,
            response_status={"code": status_code, "message": message},
        ),
    )


def test_list_tasks_reports_attempts(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """GET /api/tasks shows each task's id, schedule time, counts and last response, so the
    page can show retries happening."""
    fake_tasks.add_task(_attempted_task("retrying", code_pb2.UNAVAILABLE, "HTTP 503"))

    response = client.get("/api/tasks")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["queue"] == "jobs"
    [task] = body["tasks"]
    assert task["id"] == "retrying"
    assert task["dispatch_count"] == 3
    assert task["response_count"] == 3
    assert task["last_response_status"] == {
        "code": code_pb2.UNAVAILABLE,
        "name": "UNAVAILABLE",
        "message": "HTTP 503",
    }
    assert task["schedule_time"] is not None
    assert fake_tasks.list_requests[0].parent == QUEUE
    assert fake_tasks.list_requests[0].page_size == 100


def test_list_tasks_outage_is_503(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """ListTasks failing is a 503 with a message, not an empty list that looks true."""
    fake_tasks.fail("ListTasks", grpc.StatusCode.UNAVAILABLE)

    response = client.get("/api/tasks")

    assert response.status_code == 503
    assert "cannot list" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/favicon.ico", 404),
        ("GET", "/tasks", 405),
        ("GET", "/api/tasks", 200),
        ("GET", "/healthz", 200),
        ("HEAD", "/", 200),
        ("GET", "/no/such/page", 404),
        ("PUT", "/tasks", 405),
    ],
)
def test_nothing_but_a_post_creates_a_task(
    client: FlaskClient, fake_tasks: FakeCloudTasks, method: str, path: str, status: int
) -> None:
    """The chapter's app scheduled a task on every GET, favicon included; here no GET does,
    and unknown paths are 404."""
    response = client.open(path, method=method)

    assert response.status_code == status
    assert fake_tasks.create_requests == []


def test_security_headers_on_pages_api_and_errors(client: FlaskClient) -> None:
    """Every response forbids framing, sniffing and foreign scripts, errors included."""
    for response in (client.get("/"), client.get("/api/tasks"), client.get("/missing")):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"


def test_request_size_is_bounded(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """A body over the limit is refused before it is read into memory."""
    response = client.post(
        "/tasks", data=json.dumps({"message": "x" * 100_000}), content_type="application/json"
    )

    assert response.status_code == 413
    assert fake_tasks.create_requests == []


def test_unexpected_error_shows_no_traceback(
    task_app: Flask, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A bug answers 500 with a short message; the traceback goes to the ERROR log only."""

    def broken() -> str:
        raise RuntimeError("secret internal detail")

    task_app.add_url_rule("/broken", "broken", broken)
    response = task_app.test_client().get("/broken", headers={"Accept": "application/json"})

    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "secret internal detail" not in text
    assert "Traceback" not in text
    assert response.get_json() == {
        "error": "500 Internal Server Error: the server failed; see its logs"
    }
    assert any(
        line["severity"] == "ERROR" and "unhandled error" in line["message"] for line in log_lines()
    )
    page = task_app.test_client().get("/broken", headers={"Accept": "text/html"})
    assert page.status_code == 500
    assert "500 Internal Server Error: the server failed; see its logs" in page.get_data(
        as_text=True
    )
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_duplicate_inside_a_fan_out_stops_there(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """When the second of three named tasks already exists, the answer is 409 naming it,
    lists only the first as created, and the third is not attempted."""
    fake_tasks.add_task(tasks_v2.Task(name=f"{QUEUE}/tasks/batch-2"))

    response = client.post("/tasks", json={"task_id": "batch", "count": 3})

    assert response.status_code == 409
    body = response.get_json()
    assert body["tasks"] == ["batch-1"]
    assert body["failed_task"] == 2
    assert "'batch-2' already exists" in body["error"]
    assert [r.task.name.rsplit("/", 1)[-1] for r in fake_tasks.create_requests] == [
        "batch-1",
        "batch-2",
    ]


def test_method_not_allowed_keeps_the_allow_header(client: FlaskClient) -> None:
    """The short error body replaces Werkzeug's page, not its Allow header."""
    response = client.get("/tasks", headers={"Accept": "application/json"})

    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["error"].startswith("405 Method Not Allowed")


def test_a_hung_cloud_tasks_holds_at_most_two_threads_for_at_most_the_timeout(
    task_app_settings: TaskAppSettings,
    make_task_app: Callable[[TaskAppSettings], Flask],
    fake_tasks: FakeCloudTasks,
) -> None:
    """Eight tabs polling /api/tasks while ListTasks hangs: two calls wait on Cloud Tasks,
    each given up after the call timeout (503); the others are answered 503 at once, so
    the page's other requests still find free threads."""
    from task_app.cloud_tasks import MAX_CONCURRENT_LISTS

    fake_tasks.delay("ListTasks", 5)
    app = make_task_app(dataclasses.replace(task_app_settings, api_timeout_seconds=1.5))
    answers: list[tuple[int, str, float]] = []
    lock = threading.Lock()

    def poll() -> None:
        started = time.monotonic()
        response = app.test_client().get("/api/tasks")
        with lock:
            answers.append(
                (response.status_code, response.get_json()["error"], time.monotonic() - started)
            )

    try:
        waiting = [threading.Thread(target=poll) for _ in range(MAX_CONCURRENT_LISTS)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 5
        while len(fake_tasks.list_requests) < MAX_CONCURRENT_LISTS:
            assert time.monotonic() < deadline, "the first lists never reached Cloud Tasks"
            time.sleep(0.01)
        others = [threading.Thread(target=poll) for _ in range(8 - MAX_CONCURRENT_LISTS)]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join()
        busy = list(answers)
        for thread in waiting:
            thread.join()
    finally:
        app.extensions["task_app.cloud_tasks"].close()

    assert len(busy) == 8 - MAX_CONCURRENT_LISTS, "the others did not wait for the hung calls"
    assert all(status == 503 and "slow to answer" in error for status, error, _ in busy)
    assert len(fake_tasks.list_requests) == MAX_CONCURRENT_LISTS
    timed_out = [answer for answer in answers if answer not in busy]
    assert [status for status, _, _ in timed_out] == [503] * MAX_CONCURRENT_LISTS
    assert all("DEADLINE_EXCEEDED" in error for _, error, _ in timed_out)
    assert all(seconds < 5 for _, _, seconds in timed_out), "held beyond the call timeout"
