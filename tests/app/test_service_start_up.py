"""What a service loads before it can answer its first request: Flask, its own code, and
nothing heavy that the request does not need. A cold start on Cloud Run waits for every
import, so the Cloud Tasks client (about a second) loads at the first Cloud Tasks call, the
token verifier's libraries at the first task, and the log lines need no library at all.

Checked by module names, not by timing (bench_services measures the seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Loaded by the first call that needs them, never at start.
HEAVY = ("google.cloud.tasks_v2", "grpc", "google.api_core", "requests", "google.oauth2")

START = r"""
import json, sys
from task_app import create_app as task_app
from task_app.settings import TaskAppSettings
from worker import create_app as worker
from worker.settings import WorkerSettings

app = task_app(TaskAppSettings.from_env({
    "QUEUE": "projects/p/locations/l/queues/q", "WORKER_URL": "https://w.example",
    "OIDC_SERVICE_ACCOUNT": "task-app@p.iam.gserviceaccount.com", "SECRET_KEY": "k",
}))
assert app.test_client().get("/healthz").status_code == 200
verifying = worker(WorkerSettings.from_env({
    "OIDC_SERVICE_ACCOUNT": "task-app@p.iam.gserviceaccount.com",
    "OIDC_AUDIENCE": "https://w.example",
}))
assert verifying.test_client().get("/healthz").status_code == 200
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    """Every module a fresh interpreter holds once both services answered /healthz."""
    done = subprocess.run(
        [sys.executable, "-c", START],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONPATH": str(REPO / "app"), "PATH": "/usr/bin:/bin"},
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("heavy", HEAVY)
def test_nothing_heavy_loads_before_the_first_request(loaded: set[str], heavy: str) -> None:
    assert "flask" in loaded
    assert not {name for name in loaded if name == heavy or name.startswith(heavy + ".")}


def test_the_first_cloud_tasks_call_loads_the_client() -> None:
    """The lazy import is a real one: the client is there when the first call needs it."""
    from google.auth.credentials import AnonymousCredentials
    from task_app.cloud_tasks import CloudTasksGateway
    from task_app.settings import TaskAppSettings

    settings = TaskAppSettings.from_env(
        {"QUEUE": "projects/p/locations/l/queues/q", "WORKER_URL": "https://w.example"}
    )
    gateway = CloudTasksGateway(settings, AnonymousCredentials())
    try:
        assert type(gateway._get_client()).__name__ == "CloudTasksClient"
    finally:
        gateway.close()
