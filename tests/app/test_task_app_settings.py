"""task-app's start-up: settings from the environment, checked before serving."""

from __future__ import annotations

import pytest
from service_common.config import ConfigError
from services_support import QUEUE, gunicorn_start
from task_app.settings import TaskAppSettings

GOOD = {"QUEUE": QUEUE, "WORKER_URL": "https://worker.example.run.app/", "SECRET_KEY": "k"}


def test_good_environment_is_read() -> None:
    """The queue path is split, the URL normalised (no trailing slash: it is the audience)."""
    settings = TaskAppSettings.from_env({**GOOD, "DISPATCH_DEADLINE_SECONDS": "900"})

    assert (settings.project, settings.location, settings.queue_id) == (
        "demo-project",
        "europe-west1",
        "jobs",
    )
    assert settings.worker_url == "https://worker.example.run.app"
    assert settings.worker_tasks_url == "https://worker.example.run.app/tasks"
    assert settings.dispatch_deadline_seconds == 900
    assert settings.api_endpoint is None  # Google's
    assert settings.oidc_service_account is None


def test_the_cloud_tasks_endpoint_is_a_base_url() -> None:
    """CLOUD_TASKS_API_ENDPOINT points the same REST client at another Cloud Tasks (the
    local emulator's); the trailing slash is dropped."""
    env = {**GOOD, "CLOUD_TASKS_API_ENDPOINT": "http://127.0.0.1:8125/"}
    assert TaskAppSettings.from_env(env).api_endpoint == "http://127.0.0.1:8125"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"QUEUE": None}, "QUEUE is not set"),
        ({"QUEUE": "  "}, "QUEUE is not set"),
        ({"WORKER_URL": None}, "WORKER_URL is not set"),
        ({"QUEUE": "jobs"}, "QUEUE='jobs' is not a full queue id"),
        ({"QUEUE": "projects/p/locations/l/queues/j/tasks/t"}, "QUEUE="),
        ({"WORKER_URL": "worker:8081"}, "WORKER_URL='worker:8081' is not a base URL"),
        ({"WORKER_URL": "https://w.app/?x=1"}, "WORKER_URL="),
        ({"DISPATCH_DEADLINE_SECONDS": "10"}, "DISPATCH_DEADLINE_SECONDS=10 is out of range"),
        ({"DISPATCH_DEADLINE_SECONDS": "1801"}, "between 15 and 1800"),
        ({"DISPATCH_DEADLINE_SECONDS": "ten"}, "DISPATCH_DEADLINE_SECONDS='ten' is not an integer"),
        ({"CLOUD_TASKS_TIMEOUT_SECONDS": "0"}, "CLOUD_TASKS_TIMEOUT_SECONDS=0.0 is out of range"),
        (
            {"CLOUD_TASKS_API_ENDPOINT": "127.0.0.1:8123"},
            "CLOUD_TASKS_API_ENDPOINT='127.0.0.1:8123' is not a base URL",
        ),
    ],
)
def test_bad_environment_names_the_variable(changes: dict[str, str | None], words: str) -> None:
    """A missing or bad setting stops start-up with a message naming the variable."""
    env = {**GOOD, **changes}
    env = {key: value for key, value in env.items() if value is not None}

    with pytest.raises(ConfigError) as raised:
        TaskAppSettings.from_env(env)
    assert words in str(raised.value)


def test_create_app_refuses_to_start_without_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app itself fails (no half-configured app serving requests)."""
    from task_app import create_app

    monkeypatch.delenv("QUEUE", raising=False)
    monkeypatch.setenv("WORKER_URL", "https://w.example")
    with pytest.raises(ConfigError, match="QUEUE is not set"):
        create_app()


def test_create_app_without_settings_reads_them_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container's ``create_app()`` takes every setting from the environment."""
    from task_app import create_app

    env = {
        "QUEUE": QUEUE,
        "WORKER_URL": "https://w.example",
        "OIDC_SERVICE_ACCOUNT": "sa@p.iam.gserviceaccount.com",
        "DISPATCH_DEADLINE_SECONDS": "321",
        "SECRET_KEY": "from-the-environment",
        "CLOUD_TASKS_TIMEOUT_SECONDS": "2.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    try:
        settings = app.extensions["task_app.settings"]
        assert settings == TaskAppSettings.from_env(env)
        assert settings.dispatch_deadline_seconds == 321
        assert app.config["SECRET_KEY"] == "from-the-environment"
    finally:
        app.extensions["task_app.cloud_tasks"].close()


def test_gunicorn_process_stops_at_start_naming_the_missing_variable() -> None:
    """The container's command exits at once (not a crash loop of workers) and says which
    variable is missing."""
    result = gunicorn_start("task_app", {"QUEUE", "WORKER_URL"}, {"QUEUE": QUEUE})

    assert result.returncode != 0
    assert "task-app cannot start: WORKER_URL is not set" in result.stderr


@pytest.mark.parametrize("audience", ["http://worker.example", "gopher://worker.example"])
def test_an_audience_the_worker_could_not_accept_stops_the_start(audience: str) -> None:
    """The task-app would mint tokens the worker refuses: it says so at start."""
    env = {"QUEUE": QUEUE, "WORKER_URL": "https://w.example", "OIDC_AUDIENCE": audience}
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE"):
        TaskAppSettings.from_env(env)
