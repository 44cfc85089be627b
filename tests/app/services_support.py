"""Constants and helpers the services' tests share (a module of its own, since every test
directory has a conftest.py and only one of them can be imported as ``conftest``)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

QUEUE = "projects/demo-project/locations/europe-west1/queues/jobs"
WORKER_URL = "https://worker-abc123-ew.a.run.app"
TASK_APP_SA = "task-app@demo-project.iam.gserviceaccount.com"


def _key_and_certificate() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-oidc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


class OidcKeys:
    """An RSA key with its certificate served over HTTP, signing Google-shaped ID tokens."""

    def __init__(self) -> None:
        self.kid = "test-key-1"
        self.private_key, self.cert_pem = _key_and_certificate()
        self.fetches = 0
        # When set, served instead of the key set (a broken or impostor endpoint).
        self.raw_answer: bytes | None = None
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on and serve only its certificate, as a signer
        that restarted with a new key does."""
        self.kid = kid
        self.private_key, self.cert_pem = _key_and_certificate()

    def start(self) -> None:
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                keys.fetches += 1
                body = keys.raw_answer or json.dumps({keys.kid: keys.cert_pem}).encode()
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


def gunicorn_start(
    package: str, unset: set[str], given: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The service's container command (gunicorn with its config) run to its exit, with
    ``unset`` removed from this environment and ``given`` added."""
    env = {key: value for key, value in os.environ.items() if key not in unset | {"PORT", "HOST"}}
    env.update({**given, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "app")})
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return subprocess.run(
        [str(gunicorn), "-c", f"python:{package}.gunicorn_conf", f"{package}:create_app()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
