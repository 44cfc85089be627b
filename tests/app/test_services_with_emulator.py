"""task-app and worker through the project's Cloud Tasks emulator: the real client creates
the task, the emulator delivers it with a minted OIDC token, retries the simulated failure,
and the worker verifies the token against the emulator's keys."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from flask import Flask
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from tasks_emulator import EmulatorThread
from werkzeug.serving import BaseWSGIServer, make_server

LOCATION = "projects/emulated-project/locations/europe-west1"
CALLER = "task-app@emulated-project.iam.gserviceaccount.com"


@pytest.fixture
def emulated_queue() -> Iterator[tuple[str, str, str]]:
    """(emulator address, certs URL, queue id) for a queue with a short backoff."""
    runner = EmulatorThread(host="127.0.0.1", port=0, keys_port=0)
    emulator = runner.start()
    channel = grpc.insecure_channel(emulator.address)
    admin = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    queue = f"{LOCATION}/queues/jobs"
    admin.create_queue(
        parent=LOCATION,
        queue=tasks_v2.Queue(
            name=queue,
            retry_config=tasks_v2.RetryConfig(
                max_attempts=5, min_backoff={"nanos": 100_000_000}, max_backoff={"seconds": 1}
            ),
        ),
    )
    try:
        yield emulator.address, emulator.certs_url, queue
    finally:
        admin.transport.close()
        runner.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(app: Flask, port: int = 0) -> tuple[BaseWSGIServer, str]:
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the emulated delivery did not happen in time")
        time.sleep(0.05)


def test_task_is_delivered_verified_retried_and_finished(
    monkeypatch: pytest.MonkeyPatch,
    emulated_queue: tuple[str, str, str],
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """fail_attempts=1 through the emulator: attempt 1 gets the worker's 500, attempt 2
    (RetryCount 1, PreviousResponse 500) succeeds, both carry a token the worker accepts,
    and the task then leaves the queue's list."""
    from task_app import create_app as create_task_app
    from worker import create_app as create_worker

    address, certs_url, queue = emulated_queue
    monkeypatch.setenv("OIDC_SERVICE_ACCOUNT", CALLER)
    monkeypatch.setenv("OIDC_CERTS_URL", certs_url)
    # The worker accepts only its own URL as the audience, as the stack configures it.
    port = _free_port()
    monkeypatch.setenv("OIDC_AUDIENCE", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DISPATCH_DEADLINE_SECONDS", "15")
    worker_server, worker_url = _serve(create_worker(), port)
    monkeypatch.setenv("QUEUE", queue)
    monkeypatch.setenv("WORKER_URL", worker_url)
    monkeypatch.setenv("OIDC_SERVICE_ACCOUNT", CALLER)
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", address)
    monkeypatch.setenv("SECRET_KEY", "emulated")
    task_app = create_task_app()
    client = task_app.test_client()
    try:
        created = client.post("/tasks", json={"message": "via emulator", "fail_attempts": 1})
        assert created.status_code == 201
        [task_id] = created.get_json()["tasks"]

        def attempts() -> list[dict[str, Any]]:
            return [
                line
                for line in log_lines()
                if line.get("cloud_tasks", {}).get("task") == task_id
                and line["message"].startswith("task ")
            ]

        _wait_for(lambda: len(attempts()) >= 2)
        _wait_for(lambda: client.get("/api/tasks").get_json()["tasks"] == [])
    finally:
        task_app.extensions["task_app.cloud_tasks"].close()
        worker_server.shutdown()
        worker_server.server_close()

    first, second = attempts()[:2]
    assert first["cloud_tasks"]["retry_count"] == "0"
    assert first["cloud_tasks"]["queue"] == "jobs"
    assert second["cloud_tasks"]["retry_count"] == "1"
    assert second["cloud_tasks"]["previous_response"] == "500"
    assert first["caller"] == second["caller"] == CALLER
    assert second["task_message"] == "via emulator"
    refused = [line for line in log_lines() if "refused a task" in line.get("message", "")]
    assert refused == []
