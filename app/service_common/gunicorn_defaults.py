"""gunicorn settings both services use; each service's gunicorn_conf takes them whole.

Cloud Run gives the port in PORT and sends SIGTERM about 10 s before SIGKILL, so in-flight
requests get a graceful timeout below that. Threads (gthread) rather than processes: one
process per container keeps one Cloud Tasks client and one certificate cache per instance,
and a long request never trips gunicorn's worker timeout, which only watches the process'
heartbeat.
"""

from __future__ import annotations

import logging
import os
import sys
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


def server_config(service: str, project_id: str | None) -> dict[str, Any]:
    """Every gunicorn setting of one service's container, by gunicorn's own names.

    One process, many threads (see the module docstring), the port and threads from the
    environment, the graceful timeout under Cloud Run's, and gunicorn's lines as JSON.
    """
    return {
        "bind": bind_address(),
        "workers": 1,
        "worker_class": WORKER_CLASS,
        "threads": thread_count(),
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        # gunicorn's control socket would need a writable home; nothing here uses it.
        "control_socket_disable": True,
        "logconfig_dict": logconfig_dict(service, project_id),
        "worker_exit": worker_exit,
    }


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook in the worker process, as it leaves: a worker that stopped because it
    was told to (SIGTERM; gthread has answered every request by then) ends its process at
    once, its log lines flushed. Tearing down the interpreter module by module (the Cloud
    Tasks client's hundreds among them) would add 0.1-0.2 s to every stop that Cloud Run,
    a redeploy or the local runner waits for, and clean up nothing that outlives the process.
    A worker that failed keeps Python's ordinary exit and its exit status."""
    if worker.booted and not worker.alive:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
