"""gunicorn settings for task-app.

Run as ``gunicorn -c python:task_app.gunicorn_conf 'task_app:create_app()'``.
"""

from __future__ import annotations

from service_common import gunicorn_defaults
from service_common.config import ConfigError

from task_app.settings import TaskAppSettings

# Checked here, in gunicorn's master, so a missing variable stops the process at once with
# a message naming it, instead of a worker crashing in a loop.
try:
    _settings = TaskAppSettings.from_env()
except ConfigError as error:
    raise SystemExit(f"task-app cannot start: {error}") from None

# gunicorn reads its settings from this module's top-level names.
globals().update(gunicorn_defaults.server_config("task-app", _settings.project))
