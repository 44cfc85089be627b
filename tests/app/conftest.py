"""Fixtures for the services' tests: the fake Cloud Tasks endpoint, apps built from the
environment, a local OIDC key server, and a reader for the JSON log lines."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask import Flask
from flask.testing import FlaskClient
from services_support import QUEUE, TASK_APP_SA, WORKER_URL, OidcKeys


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeCloudTasks]:
    fake = FakeCloudTasks()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_tasks(fake_server: FakeCloudTasks) -> FakeCloudTasks:
    """The fake Cloud Tasks API, emptied for each test."""
    fake_server.reset()
    return fake_server


@pytest.fixture
def task_app_env(monkeypatch: pytest.MonkeyPatch, fake_tasks: FakeCloudTasks) -> dict[str, str]:
    env = {
        "QUEUE": QUEUE,
        "WORKER_URL": WORKER_URL,
        "OIDC_SERVICE_ACCOUNT": TASK_APP_SA,
        "DISPATCH_DEADLINE_SECONDS": "900",
        "SECRET_KEY": "test-secret-key",
        "CLOUD_TASKS_EMULATOR_HOST": fake_tasks.address,
        "CLOUD_TASKS_TIMEOUT_SECONDS": "10",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def task_app(task_app_env: dict[str, str]) -> Iterator[Flask]:
    from task_app import create_app

    app = create_app()
    yield app
    app.extensions["task_app.cloud_tasks"].close()


@pytest.fixture
def client(task_app: Flask) -> FlaskClient:
    return task_app.test_client()


CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the page, as a browser would have it."""
    page = client.get("/")
    match = CSRF_FIELD.search(page.get_data(as_text=True))
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[dict[str, Any]]]:
    """Every JSON log line written to stdout so far, parsed."""

    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        seen.extend(json.loads(line) for line in out.splitlines() if line.startswith("{"))
        return list(seen)

    return read


# --- OIDC ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oidc_keys() -> Iterator[OidcKeys]:
    keys = OidcKeys()
    keys.start()
    yield keys
    keys.stop()


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OIDC_SERVICE_ACCOUNT", "OIDC_AUDIENCE", "OIDC_CERTS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPATCH_DEADLINE_SECONDS", "15")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")


@pytest.fixture
def worker_client(worker_env: None) -> FlaskClient:
    """The worker without token verification."""
    from worker import create_app

    return create_app().test_client()


@pytest.fixture
def secured_worker_client(
    worker_env: None, monkeypatch: pytest.MonkeyPatch, oidc_keys: OidcKeys
) -> FlaskClient:
    """The worker verifying tokens against the local key server, for the worker's URL."""
    from worker import create_app

    monkeypatch.setenv("OIDC_SERVICE_ACCOUNT", TASK_APP_SA)
    monkeypatch.setenv("OIDC_AUDIENCE", WORKER_URL)
    monkeypatch.setenv("OIDC_CERTS_URL", oidc_keys.url)
    return create_app().test_client()
