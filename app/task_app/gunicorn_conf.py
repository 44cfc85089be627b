"""gunicorn settings for task-app.

Run as ``gunicorn -c python:task_app.gunicorn_conf 'task_app:create_app()'``.
"""

from __future__ import annotations

import os

from service_common import gunicorn_defaults as defaults
from service_common.config import ConfigError
from service_common.logs import project_id_for_traces

from task_app.settings import TaskAppSettings

# Checked here, in gunicorn's master, so a missing variable stops the process at once with
# a message naming it, instead of a worker crashing in a loop.
try:
    TaskAppSettings.from_env()
except ConfigError as error:
    raise SystemExit(f"task-app cannot start: {error}") from None

bind = defaults.bind_address()
# One process, many threads: one Cloud Tasks client (gRPC channel) per instance.
workers = 1
worker_class = defaults.WORKER_CLASS
threads = defaults.thread_count()
graceful_timeout = defaults.GRACEFUL_TIMEOUT_SECONDS
# gunicorn's control socket would need a writable home; nothing here uses it.
control_socket_disable = True
logconfig_dict = defaults.logconfig_dict("task-app", project_id_for_traces(os.environ))
