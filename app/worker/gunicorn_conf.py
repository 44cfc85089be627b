"""gunicorn settings for the worker.

Run as ``gunicorn -c python:worker.gunicorn_conf 'worker:create_app()'``.
"""

from __future__ import annotations

from typing import Any

from service_common import gunicorn_defaults
from service_common.config import ConfigError

from worker import shutdown
from worker.settings import WorkerSettings

# Checked here, in gunicorn's master, so a bad variable stops the process at once with a
# message naming it, instead of a worker crashing in a loop.
try:
    _settings = WorkerSettings.from_env()
except ConfigError as error:
    raise SystemExit(f"worker cannot start: {error}") from None

# gunicorn reads its settings from this module's top-level names.
globals().update(gunicorn_defaults.server_config("worker", _settings.project))


def post_worker_init(worker: Any) -> None:
    """Let in-flight tasks see SIGTERM (see worker.shutdown)."""
    shutdown.install_sigterm_hook()
