"""The worker's answers to Cloud Tasks deliveries: status discipline and the log line."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
TRACE_ID = "105445aa7843bc8bf206b12000100000"


def cloud_tasks_headers(retry_count: int = 0, task: str = "task-0001") -> dict[str, str]:
    """The headers Cloud Tasks adds to an attempt (a retry also names the previous answer)."""
    headers = {
        "X-CloudTasks-QueueName": "jobs",
        "X-CloudTasks-TaskName": task,
        "X-CloudTasks-TaskRetryCount": str(retry_count),
        "X-CloudTasks-TaskExecutionCount": str(retry_count),
        "X-CloudTasks-TaskETA": "1767225600.123",
        "User-Agent": "Google-Cloud-Tasks",
        "X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1",
    }
    if retry_count:
        headers["X-CloudTasks-TaskPreviousResponse"] = "500"
        headers["X-CloudTasks-TaskRetryReason"] = ""
    return headers


def test_success_logs_one_structured_line_with_the_task_headers(
    worker_client: FlaskClient, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A delivery is logged once, as JSON, with the queue, task id, counts, ETA, previous
    response, the message, and the trace of the request; then it is acknowledged (200)."""
    response = worker_client.post(
        "/tasks",
        json={"message": "hello worker", "work_seconds": 0.05},
        headers=cloud_tasks_headers(retry_count=2, task="task-42"),
    )

    assert response.status_code == 200
    assert response.get_json()["acknowledged"] is True
    received = [line for line in log_lines() if "cloud_tasks" in line]
    assert len(received) == 1
    [line] = received
    assert line["severity"] == "INFO"
    assert "task-42" in line["message"]
    assert line["task_message"] == "hello worker"
    assert line["cloud_tasks"] == {
        "queue": "jobs",
        "task": "task-42",
        "retry_count": "2",
        "execution_count": "2",
        "eta": "1767225600.123",
        "previous_response": "500",
        "retry_reason": "",
    }
    assert line["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"


def test_work_takes_the_requested_time(worker_client: FlaskClient) -> None:
    """The simulated work lasts work_seconds before the task is acknowledged."""
    started = time.monotonic()
    response = worker_client.post("/tasks", json={"work_seconds": 0.3})

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert response.get_json()["work_seconds"] >= 0.3


@pytest.mark.parametrize(
    ("fail_attempts", "retry_count", "status"),
    [(0, 0, 200), (1, 0, 500), (1, 1, 200), (3, 2, 500), (3, 3, 200), (3, 7, 200)],
)
def test_first_attempts_fail_while_retry_count_is_below_fail_attempts(
    worker_client: FlaskClient, fail_attempts: int, retry_count: int, status: int
) -> None:
    """fail_attempts=K makes attempts with X-CloudTasks-TaskRetryCount < K answer 5xx
    (retried by Cloud Tasks), and the attempt after them succeed."""
    response = worker_client.post(
        "/tasks",
        json={"fail_attempts": fail_attempts},
        headers=cloud_tasks_headers(retry_count=retry_count),
    )

    assert response.status_code == status


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"message": 12}', "message must be a string"),
        (b'{"work_seconds": "long"}', "work_seconds must be a number"),
        (b'{"work_seconds": -1}', "work_seconds must be a number >= 0"),
        (b'{"fail_attempts": 1.5}', "fail_attempts must be an integer"),
        (b'{"fail_attempts": true}', "fail_attempts must be an integer"),
    ],
)
def test_payload_that_can_never_succeed_is_logged_and_acknowledged(
    worker_client: FlaskClient,
    log_lines: Callable[[], list[dict[str, Any]]],
    body: bytes,
    words: str,
) -> None:
    """A malformed payload is logged at ERROR and answered 2xx: a 4xx/5xx would make Cloud
    Tasks retry it a hundred times for nothing."""
    response = worker_client.post(
        "/tasks", data=body, content_type="application/json", headers=cloud_tasks_headers()
    )

    assert response.status_code == 200
    assert words in response.get_json()["error"]
    errors = [line for line in log_lines() if line["severity"] == "ERROR"]
    assert any("task-0001" in line["message"] and words in line["message"] for line in errors)


def test_empty_body_means_the_defaults(worker_client: FlaskClient) -> None:
    """Every payload field is optional, so no body is a valid task."""
    assert worker_client.post("/tasks", headers=cloud_tasks_headers()).status_code == 200


def test_work_is_capped_below_the_dispatch_deadline() -> None:
    """Work stops 5 s before the dispatch deadline, so the answer arrives before Cloud Tasks
    gives up on the attempt (which would retry a task that succeeded)."""
    assert WorkerSettings.from_env({"DISPATCH_DEADLINE_SECONDS": "15"}).max_work_seconds == 10
    assert WorkerSettings.from_env({}).max_work_seconds == 595


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/tasks", 405), ("GET", "/", 404), ("GET", "/healthz", 200), ("POST", "/x", 404)],
)
def test_other_routes(worker_client: FlaskClient, method: str, path: str, status: int) -> None:
    """Only POST /tasks and GET /healthz exist; errors are short JSON."""
    response = worker_client.open(path, method=method)

    assert response.status_code == status
    assert response.is_json


def test_oversized_body_is_refused(worker_client: FlaskClient) -> None:
    """Nothing Cloud Tasks sends exceeds 1 MiB; larger bodies are not read."""
    response = worker_client.post(
        "/tasks", data=b"x" * (2 * 1024 * 1024), content_type="application/json"
    )
    assert response.status_code == 413


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_sigterm_answers_in_flight_task_503_within_cloud_runs_grace() -> None:
    """Under gunicorn, as in the container: on SIGTERM a task still working stops and
    answers 503 (not acknowledged, so Cloud Tasks delivers it again), and the process exits
    well within Cloud Run's 10 s."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "app"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DISPATCH_DEADLINE_SECONDS": "60",
    }
    env.pop("OIDC_SERVICE_ACCOUNT", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "-c", "python:worker.gunicorn_conf", "worker:create_app()"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as health:
                    if health.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        answer: dict[str, Any] = {}

        def deliver() -> None:
            request = urllib.request.Request(
                f"{base}/tasks",
                data=json.dumps({"work_seconds": 1000}).encode(),
                headers={"Content-Type": "application/json", "X-CloudTasks-TaskName": "long"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=15) as response:
                    answer["status"] = response.status
            except urllib.error.HTTPError as error:
                answer["status"] = error.code
                error.close()

        delivery = threading.Thread(target=deliver)
        delivery.start()
        time.sleep(0.5)  # the task is now doing its (capped, 55 s) work
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        delivery.join(timeout=15)
        exit_code = process.wait(timeout=15)
        exited_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=5)[0]

    assert answer.get("status") == 503
    assert exited_after < 9
    assert exit_code == 0
    assert "work of 1000 s capped at 55 s" in output
    assert "shutting down, not acknowledged" in output


@pytest.mark.parametrize(
    ("booted", "alive", "ends_at_once"),
    [(True, False, True), (True, True, False), (False, False, False)],
)
def test_a_worker_told_to_stop_ends_at_once_and_a_failed_one_exits_as_usual(
    monkeypatch: pytest.MonkeyPatch, booted: bool, alive: bool, ends_at_once: bool
) -> None:
    """Only a worker that booted and was told to stop skips the interpreter's teardown; a
    worker that failed to boot or crashed keeps its exit status for gunicorn to read."""
    from types import SimpleNamespace

    from service_common import gunicorn_defaults

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    gunicorn_defaults.worker_exit(None, SimpleNamespace(booted=booted, alive=alive))
    assert exits == ([0] if ends_at_once else [])
