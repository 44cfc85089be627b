"""task-app: the public service with the "Schedule task" button and a JSON API.

``create_app()`` reads its settings from the environment (QUEUE and WORKER_URL required)
and fails at start with a message naming a missing or bad variable; ``create_app(settings)``
takes them as ``TaskAppSettings`` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from service_common.config import ConfigError
from service_common.health import health
from service_common.logs import configure_logging, project_id_for_traces
from service_common.web import (
    add_security_headers,
    register_error_handlers,
    route_exact_paths,
)

from task_app import dead_letters
from task_app.cloud_tasks import CloudTasksGateway
from task_app.settings import TaskAppSettings
from task_app.views import api, pages

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

logger = logging.getLogger(__name__)

# The form and the JSON API carry a few short fields; nothing legitimate comes near this.
MAX_REQUEST_BYTES = 64 * 1024


class _SessionInterface(SecureCookieSessionInterface):
    """Marks the session cookie Secure whenever the page was served over HTTPS.

    Cloud Run terminates TLS and hands the container plain HTTP with X-Forwarded-Proto;
    a fixed SESSION_COOKIE_SECURE would either leak the cookie over HTTP or break the form
    on a local http:// run.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", request.scheme)
        return forwarded.split(",")[0].strip() == "https" or bool(
            app.config["SESSION_COOKIE_SECURE"]
        )


def _render_error(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, message=message), status


def create_app(
    settings: TaskAppSettings | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    credentials: Credentials | None = None,
) -> Flask:
    """Build task-app from ``settings`` (None: read from the environment, as in the
    container); ``config`` overrides Flask settings; ``credentials`` are those of the Cloud
    Tasks calls (None: google-auth's default credentials, as on Cloud Run)."""
    if settings is None:
        # Structured from the first line, so that a refused start is logged as one.
        configure_logging("task-app", project_id_for_traces(os.environ))
        try:
            settings = TaskAppSettings.from_env()
        except ConfigError as error:
            logger.error("task-app cannot start: %s", error)
            raise
    configure_logging("task-app", settings.project)

    app = Flask(__name__)
    app.session_interface = _SessionInterface()
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    if config:
        app.config.update(config)
    app.extensions["task_app.settings"] = settings
    app.extensions["task_app.cloud_tasks"] = CloudTasksGateway(settings, credentials)

    csrf = CSRFProtect(app)
    csrf.exempt(api)  # JSON only; see views.create_tasks
    csrf.exempt(health)
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.register_blueprint(health)
    dead_letters.init_app(app, csrf, credentials)
    add_security_headers(app)
    route_exact_paths(app)
    register_error_handlers(app, _render_error)
    logger.info(
        "task-app ready: queue %s, worker %s%s",
        settings.queue,
        settings.worker_tasks_url,
        f", Cloud Tasks at {settings.api_endpoint}" if settings.api_endpoint else "",
    )
    return app


__all__ = ["create_app"]
