"""task-app and worker through the project's Cloud Tasks emulator, over its REST API as on
Google Cloud: the real client creates the task, the emulator delivers it with a minted OIDC
token, retries the simulated failure, and the worker verifies the token against the
emulator's keys. Under gunicorn, the task-app finds its account with google-auth's default
credentials (the emulator's metadata server, as Cloud Run's) and the queue's IAM policy
decides what it may do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from google.auth.credentials import AnonymousCredentials
from google.iam.v1 import policy_pb2
from task_app.settings import TaskAppSettings
from tasks_emulator import Emulator, EmulatorThread
from werkzeug.serving import BaseWSGIServer, make_server
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
QUEUE = "projects/emulated-project/locations/europe-west1/queues/jobs"
CALLER = "task-app@emulated-project.iam.gserviceaccount.com"


@pytest.fixture
def emulated() -> Iterator[tuple[EmulatorThread, Emulator]]:
    """The emulator (REST, keys, a metadata server for the task-app's account) with a queue
    of short backoff and no IAM policy: every caller may do everything."""
    runner = EmulatorThread(
        host="127.0.0.1", port=0, keys_port=0, rest_port=0, metadata={CALLER: 0}
    )
    emulator = runner.start()
    retry = {"maxAttempts": 5, "minBackoff": "0.1s", "maxBackoff": "1s"}
    runner.call(emulator.ensure_queue, {"name": QUEUE, "retryConfig": retry})
    try:
        yield runner, emulator
    finally:
        runner.stop()


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
    emulated: tuple[EmulatorThread, Emulator],
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """fail_attempts=1 through the emulator: attempt 1 gets the worker's 500, attempt 2
    (RetryCount 1, PreviousResponse 500) succeeds, both carry a token the worker accepts,
    and the task then leaves the queue's list."""
    from task_app import create_app as create_task_app
    from worker import create_app as create_worker

    _, emulator = emulated
    # The worker accepts only its own URL as the audience, as the stack configures it.
    port = _free_port()
    worker_settings = WorkerSettings(
        oidc_caller_email=CALLER,
        oidc_audiences=(f"http://127.0.0.1:{port}",),
        oidc_certs_url=emulator.certs_url,
        dispatch_deadline_seconds=15,
    )
    worker_server, worker_url = _serve(create_worker(worker_settings), port)
    task_app_settings = TaskAppSettings.from_env(
        {
            "QUEUE": QUEUE,
            "WORKER_URL": worker_url,
            "OIDC_SERVICE_ACCOUNT": CALLER,
            "CLOUD_TASKS_API_ENDPOINT": emulator.rest_url,
            "SECRET_KEY": "emulated",
        }
    )
    # Without a policy on the queue, a call without a token has every right.
    task_app = create_task_app(task_app_settings, credentials=AnonymousCredentials())
    client = task_app.test_client()
    try:
        created = client.post("/tasks", json={"message": "via emulator", "fail_attempts": 1})
        assert created.status_code == 201
        [task_id] = created.get_json()["tasks"]
        listed = client.get("/api/tasks").get_json()["tasks"]
        assert [task["id"] for task in listed] == [task_id]

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _grant(runner: EmulatorThread, emulator: Emulator, role: str) -> None:
    binding = policy_pb2.Binding(role=role, members=[f"serviceAccount:{CALLER}"])
    runner.call(emulator.iam.set_policy, QUEUE, policy_pb2.Policy(bindings=[binding]))


def test_the_task_apps_own_account_is_held_to_the_queues_policy(
    emulated: tuple[EmulatorThread, Emulator], tmp_path: Path
) -> None:
    """The task-app under gunicorn, as in its container, with nothing but endpoints changed:
    google.auth.default() finds the metadata server, the calls carry its account's token,
    and the queue's policy decides. Enqueuer only: it creates, and listing is refused naming
    cloudtasks.tasks.list. Viewer only: it lists, and creating is refused naming
    cloudtasks.tasks.create, with nothing created."""
    runner, emulator = emulated
    port = _free_port()
    host = emulator.metadata_host(CALLER)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"}
    }
    env.update(
        PYTHONPATH=str(REPO / "app"),
        HOST="127.0.0.1",
        PORT=str(port),
        QUEUE=QUEUE,
        WORKER_URL="http://127.0.0.1:9",
        OIDC_SERVICE_ACCOUNT=CALLER,
        SECRET_KEY="emulated",
        CLOUD_TASKS_API_ENDPOINT=emulator.rest_url,
        GCE_METADATA_HOST=host,
        GCE_METADATA_IP=host,
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
    )
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "-c", "python:task_app.gunicorn_conf", "task_app:create_app()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _call(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        _grant(runner, emulator, "roles/cloudtasks.enqueuer")
        # An hour's delay: the task stays in the queue, undelivered.
        created_status, created = _call(f"{base}/tasks", {"delay_seconds": 3600})
        listed_status, listed = _call(f"{base}/api/tasks")
        _grant(runner, emulator, "roles/cloudtasks.viewer")
        refused_status, refused = _call(f"{base}/tasks", {})
        viewed_status, viewed = _call(f"{base}/api/tasks")
    finally:
        process.terminate()
        process.wait(timeout=15)

    assert created_status == 201
    assert listed_status == 503
    assert "(PERMISSION_DENIED)" in listed["error"]
    assert "lacks cloudtasks.tasks.list on queue 'jobs'" in listed["error"]
    assert refused_status == 503
    assert "(PERMISSION_DENIED)" in refused["error"]
    assert "lacks cloudtasks.tasks.create on queue 'jobs'" in refused["error"]
    assert refused["tasks"] == []
    assert viewed_status == 200
    assert [task["id"] for task in viewed["tasks"]] == created["tasks"]
