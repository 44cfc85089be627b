"""The worker's own OIDC check, with tokens signed locally and keys served over HTTP."""

from __future__ import annotations

import dataclasses
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from services_support import TASK_APP_SA, WORKER_URL, OidcKeys
from worker.settings import WorkerSettings


def deliver(client: FlaskClient, token: str | None, **kwargs: object) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = client.post(
        "/tasks", json={"message": "m"}, headers=headers, base_url=WORKER_URL, **kwargs
    )
    return response.status_code


def test_verification_is_off_without_caller_email(worker_client: FlaskClient) -> None:
    """Without OIDC_SERVICE_ACCOUNT the worker trusts its platform (Cloud Run IAM)."""
    assert deliver(worker_client, None) == 200


def test_valid_token_from_the_caller_is_accepted(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """Google-shaped token, right audience (the worker's base URL), right caller: 200."""
    assert deliver(secured_worker_client, oidc_keys.token()) == 200


def test_audience_honours_x_forwarded_proto(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """Cloud Run hands the container plain HTTP; the audience is still the https URL."""
    response = secured_worker_client.post(
        "/tasks",
        json={},
        base_url=WORKER_URL.replace("https://", "http://"),
        headers={"Authorization": f"Bearer {oidc_keys.token()}", "X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 200


def test_missing_token_is_401_with_a_challenge(secured_worker_client: FlaskClient) -> None:
    """No token: 401 and WWW-Authenticate, and the task is not run."""
    response = secured_worker_client.post("/tasks", json={}, base_url=WORKER_URL)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "missing bearer token"


def _other_key_token() -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": WORKER_URL,
        "email": TASK_APP_SA,
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, other, algorithm="RS256", headers={"kid": "test-key-1"})


def _unsigned_token() -> str:
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": WORKER_URL, "email": TASK_APP_SA}
    return jwt.encode({**claims, "iat": now, "exp": now + 600}, key="", algorithm="none")


@pytest.mark.parametrize(
    ("make_token", "status"),
    [
        (lambda keys: keys.token(aud="https://someone-else.run.app"), 401),
        (lambda keys: keys.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), 401),
        (lambda keys: keys.token(iss="https://evil.example"), 401),
        (lambda keys: "garbage.not-a.jwt", 401),
        (lambda keys: _unsigned_token(), 401),
        (lambda keys: _other_key_token(), 401),
        (lambda keys: keys.token(email="intruder@demo-project.iam.gserviceaccount.com"), 403),
        (lambda keys: keys.token(email_verified=False), 403),
        (lambda keys: keys.token(email=None), 403),
    ],
    ids=[
        "wrong-audience",
        "expired",
        "wrong-issuer",
        "garbage",
        "unsigned",
        "signed-by-another-key",
        "wrong-caller",
        "email-not-verified",
        "no-email",
    ],
)
def test_bad_tokens_are_refused(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys, make_token: object, status: int
) -> None:
    """Invalid tokens are 401, valid tokens of another account 403; neither runs the task."""
    assert callable(make_token)
    assert deliver(secured_worker_client, make_token(oidc_keys)) == status


def test_explicit_audience_setting_wins(oidc_keys: OidcKeys) -> None:
    """OIDC_AUDIENCE pins the audience whatever URL the request came through."""
    from worker import create_app

    settings = WorkerSettings.from_env(
        {
            "OIDC_SERVICE_ACCOUNT": TASK_APP_SA,
            "OIDC_CERTS_URL": oidc_keys.url,
            "OIDC_AUDIENCE": "https://pinned.example/",
        }
    )
    client = create_app(settings).test_client()

    assert deliver(client, oidc_keys.token(aud="https://pinned.example")) == 200
    assert deliver(client, oidc_keys.token()) == 401


def test_certificates_are_fetched_once_and_cached(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """The keys are cached for their max-age, not fetched again for every task."""
    before = oidc_keys.fetches
    for _ in range(3):
        assert deliver(secured_worker_client, oidc_keys.token()) == 200
    assert oidc_keys.fetches - before == 1


def test_unreachable_certificates_are_503_so_the_task_is_retried(
    secured_settings: WorkerSettings, oidc_keys: OidcKeys
) -> None:
    """Failing to fetch the keys is the worker's problem, not the caller's: 5xx, so Cloud
    Tasks delivers the task again later, rather than a 401 that reads like a bad caller."""
    import socket

    from worker import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/oauth2/v1/certs"
    client = create_app(dataclasses.replace(secured_settings, oidc_certs_url=closed)).test_client()

    assert deliver(client, oidc_keys.token()) == 503


def test_create_app_without_settings_reads_them_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, oidc_keys: OidcKeys
) -> None:
    """The container's ``create_app()`` takes the expected caller, its keys and the
    audience from the environment: verification is on, for that caller only."""
    from worker import create_app

    monkeypatch.setenv("OIDC_SERVICE_ACCOUNT", TASK_APP_SA)
    monkeypatch.setenv("OIDC_CERTS_URL", oidc_keys.url)
    monkeypatch.setenv("OIDC_AUDIENCE", WORKER_URL)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-the-environment")
    app = create_app()

    settings = app.extensions["worker.settings"]
    assert settings.oidc_caller_email == TASK_APP_SA
    assert settings.project == "from-the-environment"
    client = app.test_client()
    assert deliver(client, None) == 401
    assert deliver(client, oidc_keys.token()) == 200
