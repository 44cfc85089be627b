"""gunicorn settings both services use; each service's gunicorn_conf imports them.

Cloud Run gives the port in PORT and sends SIGTERM about 10 s before SIGKILL, so in-flight
requests get a graceful timeout below that. Threads (gthread) rather than processes: one
process per container keeps one Cloud Tasks client and one certificate cache per instance,
and a long request never trips gunicorn's worker timeout, which only watches the process'
heartbeat.
"""

from __future__ import annotations

import os
from typing import Any

from service_common import contract
from service_common.config import bounded_int

# gthread, but no request thread waits for an idle or slow client (see gunicorn_worker).
WORKER_CLASS = "service_common.gunicorn_worker.BoundedThreadWorker"

# Under Cloud Run's ~10 s between SIGTERM and SIGKILL, with room for the exit itself.
GRACEFUL_TIMEOUT_SECONDS = 8


def bind_address() -> str:
    """``HOST:PORT`` from the environment; an empty HOST means every interface (containers)."""
    port = bounded_int(os.environ, contract.PORT, default=8080, minimum=1, maximum=65535)
    host = contract.HOST.read(os.environ) or ""
    return f"{host}:{port}"


def thread_count() -> int:
    """Request threads per process (GUNICORN_THREADS, default 8)."""
    return bounded_int(
        os.environ,
        contract.GUNICORN_THREADS,
        default=contract.DEFAULT_REQUEST_THREADS,
        minimum=1,
        maximum=contract.MAX_REQUEST_THREADS,
    )


def logconfig_dict(service: str, project_id: str | None) -> dict[str, Any]:
    """gunicorn's own lines (boot, worker exits) as structured JSON too; no access log,
    since Cloud Run already records every request."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {
            "structured": {
                "()": "service_common.logs.structured_handler",
                "service": service,
                "project_id": project_id,
            }
        },
        "root": {"level": "INFO", "handlers": ["structured"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
