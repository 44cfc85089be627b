"""gunicorn settings of the bare Flask app: the services' own server settings (one process,
gthread, their thread count and graceful timeout), without their logging configuration."""

from __future__ import annotations

from service_common import gunicorn_defaults

bind = gunicorn_defaults.bind_address()
workers = 1
worker_class = "gthread"
threads = gunicorn_defaults.thread_count()
graceful_timeout = gunicorn_defaults.GRACEFUL_TIMEOUT_SECONDS
control_socket_disable = True
