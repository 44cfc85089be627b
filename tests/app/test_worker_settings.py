"""The worker's settings: the audiences it accepts come from its environment only, and a
setting it cannot trust stops it at start with a message naming the variable."""

from __future__ import annotations

import pytest
from services_support import TASK_APP_SA, gunicorn_start
from worker.settings import ConfigError, WorkerSettings


def settings(**env: str) -> WorkerSettings:
    return WorkerSettings.from_env({"OIDC_SERVICE_ACCOUNT": TASK_APP_SA, **env})


def test_verifying_tokens_needs_an_audience() -> None:
    """Without OIDC_AUDIENCE the worker would have to guess its own URL from the request,
    which the caller chooses: it refuses to start instead."""
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE is not set"):
        settings()


def test_without_a_caller_no_audience_is_needed() -> None:
    """Verification off (OIDC_SERVICE_ACCOUNT unset): nothing to check tokens against."""
    assert WorkerSettings.from_env({}).oidc_audiences == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "https://worker-123456789012.europe-west1.run.app/",
            ("https://worker-123456789012.europe-west1.run.app",),
        ),
        (
            "https://a.run.app, https://b.run.app",
            ("https://a.run.app", "https://b.run.app"),
        ),
        ("http://127.0.0.1:18081", ("http://127.0.0.1:18081",)),
        ("http://localhost:8081", ("http://localhost:8081",)),
        ("http://[::1]:8081", ("http://[::1]:8081",)),
        ("http://127.8.9.10", ("http://127.8.9.10",)),
    ],
)
def test_accepted_audiences(raw: str, expected: tuple[str, ...]) -> None:
    assert settings(OIDC_AUDIENCE=raw).oidc_audiences == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("http://worker.example", "must be an https:// URL"),
        ("http://evil.example:9999", "must be an https:// URL"),
        ("http://127.0.0.1.evil.example", "must be an https:// URL"),
        ("http://10.0.0.7:8080", "must be an https:// URL"),
        ("gopher://worker.example", "is not a base URL"),
        ("https://a.run.app, ftp://b", "is not a base URL"),
        ("https://a.run.app?x=1", "is not a base URL"),
    ],
)
def test_refused_audiences_name_the_variable_and_the_rule(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE") as error:
        settings(OIDC_AUDIENCE=raw)
    assert message in str(error.value)


@pytest.mark.process
def test_gunicorn_process_stops_at_start_without_an_audience() -> None:
    """The container's command exits at once and says what is missing."""
    result = gunicorn_start(
        "worker", {"OIDC_AUDIENCE", "OIDC_CERTS_URL"}, {"OIDC_SERVICE_ACCOUNT": TASK_APP_SA}
    )

    assert result.returncode != 0
    assert "worker cannot start: OIDC_AUDIENCE is not set" in result.stderr
