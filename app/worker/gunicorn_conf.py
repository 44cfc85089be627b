"""gunicorn settings for the worker.

Run as ``gunicorn -c python:worker.gunicorn_conf 'worker:create_app()'``.
"""

from __future__ import annotations

import os
from typing import Any

from service_common import gunicorn_defaults as defaults
from service_common.config import ConfigError
from service_common.logs import project_id_for_traces

from worker import shutdown
from worker.settings import WorkerSettings

try:
    WorkerSettings.from_env()
except ConfigError as error:
    raise SystemExit(f"worker cannot start: {error}") from None

bind = defaults.bind_address()
workers = 1
worker_class = defaults.WORKER_CLASS
threads = defaults.thread_count()
graceful_timeout = defaults.GRACEFUL_TIMEOUT_SECONDS
# gunicorn's control socket would need a writable home; nothing here uses it.
control_socket_disable = True
logconfig_dict = defaults.logconfig_dict("worker", project_id_for_traces(os.environ))


def post_worker_init(worker: Any) -> None:
    """Let in-flight tasks see SIGTERM (see worker.shutdown)."""
    shutdown.install_sigterm_hook()
