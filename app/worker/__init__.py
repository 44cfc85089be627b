"""worker: takes the tasks Cloud Tasks delivers, logs them and does their (simulated) work.

``create_app()`` reads OIDC_SERVICE_ACCOUNT, OIDC_AUDIENCE, OIDC_CERTS_URL and
DISPATCH_DEADLINE_SECONDS from the environment (or takes them as ``WorkerSettings``); token
verification is on when OIDC_SERVICE_ACCOUNT is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from service_common.config import ConfigError
from service_common.health import health
from service_common.logs import configure_logging, project_id_for_traces
from service_common.web import (
    add_security_headers,
    register_error_handlers,
    route_exact_paths,
)

from worker import dead_letters
from worker.auth import TokenVerifier
from worker.settings import WorkerSettings
from worker.views import tasks

logger = logging.getLogger(__name__)

# Cloud Tasks refuses tasks over 1 MiB, so no genuine delivery is larger.
MAX_REQUEST_BYTES = 1024 * 1024 + 64 * 1024


def create_app(
    settings: WorkerSettings | None = None, config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the worker from ``settings`` (None: read from the environment, as in the
    container); ``config`` overrides Flask settings."""
    if settings is None:
        # Structured from the first line, so that a refused start is logged as one.
        configure_logging("worker", project_id_for_traces(os.environ))
        try:
            settings = WorkerSettings.from_env()
        except ConfigError as error:
            logger.error("worker cannot start: %s", error)
            raise
    configure_logging("worker", settings.project)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES)
    if config:
        app.config.update(config)
    app.extensions["worker.settings"] = settings
    app.extensions["worker.verifier"] = (
        TokenVerifier(settings.oidc_caller_email, settings.oidc_certs_url, settings.oidc_audiences)
        if settings.oidc_caller_email
        else None
    )
    dead_letters.init_app(app)
    app.register_blueprint(tasks)
    app.register_blueprint(health)
    add_security_headers(app)
    route_exact_paths(app)
    register_error_handlers(app)
    if settings.verify_tokens:
        logger.info(
            "worker ready: tokens must come from %s (audiences %s, keys from %s)",
            settings.oidc_caller_email,
            ", ".join(settings.oidc_audiences),
            settings.oidc_certs_url,
        )
    else:
        logger.warning("worker ready: OIDC_SERVICE_ACCOUNT is not set, tokens are not verified")
    return app


__all__ = ["create_app"]
