"""The floor for the services' cold start: a Flask app with nothing but ``/healthz``, run
by bench_services under gunicorn with the services' own server settings."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
