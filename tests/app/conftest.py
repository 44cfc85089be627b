"""Fixtures for the services' tests: the fake Cloud Tasks endpoint, apps built from settings
objects (the environment is read by the settings tests only), a local OIDC key server, and
a reader for the JSON log lines."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask import Flask
from flask.testing import FlaskClient
from google.auth.credentials import AnonymousCredentials
from services_support import QUEUE, TASK_APP_SA, WORKER_URL, OidcKeys
from task_app.settings import TaskAppSettings
from worker.settings import WorkerSettings


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
def task_app_settings(fake_tasks: FakeCloudTasks) -> TaskAppSettings:
    """task-app's settings, as the stack gives them, pointed at the fake Cloud Tasks."""
    return TaskAppSettings.from_env(
        {
            "QUEUE": QUEUE,
            "WORKER_URL": WORKER_URL,
            "OIDC_SERVICE_ACCOUNT": TASK_APP_SA,
            "DISPATCH_DEADLINE_SECONDS": "900",
            "SECRET_KEY": "test-secret-key",
            "CLOUD_TASKS_API_ENDPOINT": fake_tasks.url,
            "CLOUD_TASKS_TIMEOUT_SECONDS": "10",
        }
    )


@pytest.fixture
def make_task_app() -> Iterator[Callable[[TaskAppSettings], Flask]]:
    """Builds task-apps from settings; their Cloud Tasks clients are closed afterwards. The
    fake API asks for no credentials: the calls carry none."""
    from task_app import create_app

    apps: list[Flask] = []

    def make(settings: TaskAppSettings) -> Flask:
        apps.append(create_app(settings, credentials=AnonymousCredentials()))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["task_app.cloud_tasks"].close()


@pytest.fixture
def task_app(
    task_app_settings: TaskAppSettings, make_task_app: Callable[[TaskAppSettings], Flask]
) -> Flask:
    return make_task_app(task_app_settings)


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
def worker_settings() -> WorkerSettings:
    """The worker's settings without token verification."""
    return WorkerSettings.from_env(
        {"DISPATCH_DEADLINE_SECONDS": "15", "GOOGLE_CLOUD_PROJECT": "demo-project"}
    )


@pytest.fixture
def worker_client(worker_settings: WorkerSettings) -> FlaskClient:
    """The worker without token verification."""
    from worker import create_app

    return create_app(worker_settings).test_client()


@pytest.fixture
def secured_settings(worker_settings: WorkerSettings, oidc_keys: OidcKeys) -> WorkerSettings:
    """Token verification on, against the local key server, for the worker's URL."""
    return dataclasses.replace(
        worker_settings,
        oidc_caller_email=TASK_APP_SA,
        oidc_audiences=(WORKER_URL,),
        oidc_certs_url=oidc_keys.url,
    )


@pytest.fixture
def secured_worker_client(secured_settings: WorkerSettings) -> FlaskClient:
    """The worker verifying tokens against the local key server, for the worker's URL."""
    from worker import create_app

    return create_app(secured_settings).test_client()
