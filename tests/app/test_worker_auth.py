"""The worker's own OIDC check, with tokens signed locally and keys served over HTTP."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from services_support import TASK_APP_SA, WORKER_URL, OidcKeys
from werkzeug.test import TestResponse
from worker.settings import WorkerSettings


def deliver_response(client: FlaskClient, token: str | None, **kwargs: object) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(
        "/tasks", json={"message": "m"}, headers=headers, base_url=WORKER_URL, **kwargs
    )


def deliver(client: FlaskClient, token: str | None, **kwargs: object) -> int:
    return deliver_response(client, token, **kwargs).status_code


def test_verification_is_off_without_caller_email(worker_client: FlaskClient) -> None:
    """Without OIDC_SERVICE_ACCOUNT the worker trusts its platform (Cloud Run IAM)."""
    assert deliver(worker_client, None) == 200


def test_valid_token_from_the_caller_is_accepted(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """Google-shaped token, right audience (the worker's base URL), right caller: 200."""
    assert deliver(secured_worker_client, oidc_keys.token()) == 200


@pytest.mark.parametrize(
    ("audience", "headers"),
    [
        ("http://evil.example:9999", {"Host": "evil.example:9999"}),
        ("https://evil.example", {"Host": "evil.example", "X-Forwarded-Proto": "https"}),
        ("gopher://worker-abc123-ew.a.run.app", {"X-Forwarded-Proto": "gopher"}),
    ],
    ids=["http-host", "https-forwarded", "gopher"],
)
def test_audience_never_comes_from_the_request(
    secured_worker_client: FlaskClient,
    oidc_keys: OidcKeys,
    audience: str,
    headers: dict[str, str],
) -> None:
    """Whatever Host and X-Forwarded-Proto say, only the configured audience is accepted:
    a token minted for the caller's own URL proves nothing."""
    token = oidc_keys.token(aud=audience)
    response = secured_worker_client.post(
        "/tasks", json={}, headers={"Authorization": f"Bearer {token}", **headers}
    )
    assert response.status_code == 401


def test_configured_audience_holds_behind_a_tls_terminating_front(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """Cloud Run hands the container plain HTTP on another host name; the token for the
    configured https URL is accepted all the same."""
    response = secured_worker_client.post(
        "/tasks",
        json={},
        base_url="http://10.0.0.7:8080",
        headers={"Authorization": f"Bearer {oidc_keys.token()}"},
    )
    assert response.status_code == 200


def test_missing_token_is_401_with_a_challenge(secured_worker_client: FlaskClient) -> None:
    """No token: 401 and WWW-Authenticate, and the task is not run."""
    response = secured_worker_client.post("/tasks", json={}, base_url=WORKER_URL)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "missing bearer token"


def test_refusals_tell_the_caller_nothing_about_what_was_expected(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys
) -> None:
    """A 401 body names neither the expected audience nor the known key ids; the log does."""
    wrong_audience = deliver_response(
        secured_worker_client, oidc_keys.token(aud="https://someone-else.run.app")
    )
    unknown_key = deliver_response(secured_worker_client, _other_key_token(kid="made-up-kid"))

    for response in (wrong_audience, unknown_key):
        assert response.status_code == 401
        assert response.get_json() == {"error": "invalid token"}
        text = response.get_data(as_text=True)
        assert WORKER_URL not in text
        assert oidc_keys.kid not in text
        assert "made-up-kid" not in text


def _other_key_token(kid: str = "test-key-1") -> str:
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
    return jwt.encode(claims, other, algorithm="RS256", headers={"kid": kid})


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
        (lambda keys: keys.token(exp=int(time.time()) + 7200), 401),
        (lambda keys: keys.token(nbf=int(time.time()) + 600), 401),
        (lambda keys: keys.token(iat="yesterday"), 401),
        (lambda keys: keys.token(nbf="soon"), 401),
        (lambda keys: _other_key_token(kid="never-served"), 401),
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
        "lives-two-hours",
        "not-yet-valid",
        "iat-not-a-number",
        "nbf-not-a-number",
        "unknown-key-id",
    ],
)
def test_bad_tokens_are_refused(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys, make_token: object, status: int
) -> None:
    """Invalid tokens are 401, valid tokens of another account 403; neither runs the task."""
    assert callable(make_token)
    assert deliver(secured_worker_client, make_token(oidc_keys)) == status


def test_every_configured_audience_is_accepted_and_no_other(oidc_keys: OidcKeys) -> None:
    """OIDC_AUDIENCE may list several URLs (the deterministic one and the one Cloud Run's
    uri gives); each is accepted, anything else is not."""
    from worker import create_app

    settings = WorkerSettings.from_env(
        {
            "OIDC_SERVICE_ACCOUNT": TASK_APP_SA,
            "OIDC_CERTS_URL": oidc_keys.url,
            "OIDC_AUDIENCE": (
                "https://worker-123456789012.europe-west1.run.app/, https://pinned.example"
            ),
        }
    )
    client = create_app(settings).test_client()

    assert deliver(client, oidc_keys.token(aud="https://pinned.example")) == 200
    assert (
        deliver(client, oidc_keys.token(aud="https://worker-123456789012.europe-west1.run.app"))
        == 200
    )
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


@pytest.fixture
def own_keys() -> Iterator[OidcKeys]:
    """A key server of this test's own, free to rotate or break."""
    keys = OidcKeys()
    keys.start()
    yield keys
    keys.stop()


def _worker_for(secured_settings: WorkerSettings, keys: OidcKeys) -> Flask:
    from worker import create_app

    return create_app(dataclasses.replace(secured_settings, oidc_certs_url=keys.url))


@pytest.mark.parametrize(
    "answer", [b"<html>maintenance</html>", b"[]", b"{}", b'{"kid": 42}'], ids=str
)
def test_a_certificate_endpoint_answering_no_key_set_is_503(
    secured_settings: WorkerSettings, own_keys: OidcKeys, answer: bytes
) -> None:
    """A 200 that is not a key set is the key server's fault, not the caller's: 503, so
    the task is retried, rather than a 401 that refuses a genuine caller."""
    own_keys.raw_answer = answer
    client = _worker_for(secured_settings, own_keys).test_client()

    assert deliver(client, own_keys.token()) == 503


def test_a_new_signing_key_is_accepted_at_once(
    secured_settings: WorkerSettings, own_keys: OidcKeys
) -> None:
    """The signer restarts with a new key while the old set is still cached: the first
    token with the new key id makes the worker fetch the keys again, and it is accepted."""
    client = _worker_for(secured_settings, own_keys).test_client()
    assert deliver(client, own_keys.token()) == 200
    assert own_keys.fetches == 1

    own_keys.rotate("test-key-2")

    assert deliver(client, own_keys.token()) == 200
    assert own_keys.fetches == 2
    assert deliver(client, own_keys.token()) == 200
    assert own_keys.fetches == 2, "a known key id costs no fetch"


def test_unknown_key_ids_fetch_the_keys_at_most_once_per_interval(
    secured_settings: WorkerSettings, own_keys: OidcKeys
) -> None:
    """Tokens with made-up key ids cannot turn every request into a fetch."""
    from worker import auth

    now = [1000.0]
    app = _worker_for(secured_settings, own_keys)
    verifier = app.extensions["worker.verifier"]
    verifier.keys = auth.KeySet(own_keys.url, clock=lambda: now[0])
    client = app.test_client()
    assert deliver(client, own_keys.token()) == 200
    assert own_keys.fetches == 1

    for index in range(5):
        assert deliver(client, _other_key_token(kid=f"made-up-{index}")) == 401
    assert own_keys.fetches == 2, "one refetch for the first unknown key id, then none"

    now[0] += auth.UNKNOWN_KEY_REFETCH_SECONDS
    assert deliver(client, _other_key_token(kid="made-up-later")) == 401
    assert own_keys.fetches == 3
