"""The startup and liveness probe both services answer: ``GET /healthz``.

It says only that the process serves requests; it consults nothing (Cloud Tasks, the token
keys), so a dependency's outage never makes Cloud Run restart a healthy instance.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Startup/liveness probe."""
    return jsonify({"status": "ok"}), 200
