"""Fixtures for the services' tests: the fake Cloud Tasks endpoint, apps built from the
environment, a local OIDC key server, and a reader for the JSON log lines."""

from __future__ import annotations

import datetime
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fake_cloud_tasks import FakeCloudTasks
from flask import Flask
from flask.testing import FlaskClient

QUEUE = "projects/demo-project/locations/europe-west1/queues/jobs"
WORKER_URL = "https://worker-abc123-ew.a.run.app"
TASK_APP_SA = "task-app@demo-project.iam.gserviceaccount.com"


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


class OidcKeys:
    """An RSA key with its certificate served over HTTP, signing Google-shaped ID tokens."""

    def __init__(self) -> None:
        self.kid = "test-key-1"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-oidc")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.private_key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.fetches = 0
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> None:
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                keys.fetches += 1
                body = json.dumps({keys.kid: keys.cert_pem}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/v1/certs"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def token(self, **overrides: Any) -> str:
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": WORKER_URL,
            "email": TASK_APP_SA,
            "email_verified": True,
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {key: value for key, value in claims.items() if value is not None}
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def oidc_keys() -> Iterator[OidcKeys]:
    keys = OidcKeys()
    keys.start()
    yield keys
    keys.stop()


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OIDC_CALLER_EMAIL", "OIDC_AUDIENCE", "OIDC_CERTS_URL"):
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
    """The worker verifying tokens against the local key server, audience from the request."""
    from worker import create_app

    monkeypatch.setenv("OIDC_CALLER_EMAIL", TASK_APP_SA)
    monkeypatch.setenv("OIDC_CERTS_URL", oidc_keys.url)
    return create_app().test_client()
