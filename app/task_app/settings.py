"""task-app's settings, read once from the environment and validated at start."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from service_common import contract
from service_common.config import (
    ConfigError,
    audience_urls,
    bounded_float,
    bounded_int,
    http_url,
    optional,
    parse_queue_path,
    required,
)
from service_common.dead_letter import DeadLetterConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskAppSettings:
    """Everything task-app reads from its environment."""

    queue: str
    project: str
    location: str
    queue_id: str
    worker_url: str
    oidc_service_account: str | None
    # The audience each task's token is minted for: the first URL the worker accepts.
    oidc_audience: str
    dispatch_deadline_seconds: int
    secret_key: str
    # The Cloud Tasks API's base URL; None: Google's.
    api_endpoint: str | None
    api_timeout_seconds: float
    # The dead letters the page lists, and the queue's retry config for each task's plan.
    dead_letters: DeadLetterConfig = field(default_factory=DeadLetterConfig)

    @property
    def worker_tasks_url(self) -> str:
        """Where each task is POSTed."""
        return f"{self.worker_url}/tasks"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskAppSettings:
        """Read and check every setting; a ConfigError names the first bad variable."""
        env = os.environ if environ is None else environ
        queue = required(
            env, contract.QUEUE, "the queue's full id, projects/P/locations/L/queues/Q"
        )
        project, location, queue_id = parse_queue_path(contract.QUEUE.name, queue)
        worker_url = http_url(
            contract.WORKER_URL.name,
            required(env, contract.WORKER_URL, "the worker's base URL, e.g. https://..."),
        )
        endpoint = optional(env, contract.CLOUD_TASKS_API_ENDPOINT)
        secret_key = optional(env, contract.SECRET_KEY)
        if secret_key is None:
            # Sessions (flash messages, CSRF) then last only as long as this process.
            logger.warning("SECRET_KEY is not set: using a random key for this process only")
            secret_key = secrets.token_urlsafe(32)
        return cls(
            queue=queue,
            project=project,
            location=location,
            queue_id=queue_id,
            worker_url=worker_url,
            oidc_service_account=optional(env, contract.OIDC_SERVICE_ACCOUNT),
            oidc_audience=next(
                iter(
                    audience_urls(
                        contract.OIDC_AUDIENCE.name, optional(env, contract.OIDC_AUDIENCE) or ""
                    )
                ),
                worker_url,
            ),
            dispatch_deadline_seconds=bounded_int(
                env,
                contract.DISPATCH_DEADLINE_SECONDS,
                default=contract.DEFAULT_DISPATCH_DEADLINE_SECONDS,
                minimum=contract.MIN_DISPATCH_DEADLINE_SECONDS,
                maximum=contract.MAX_DISPATCH_DEADLINE_SECONDS,
            ),
            secret_key=secret_key,
            api_endpoint=(
                http_url(contract.CLOUD_TASKS_API_ENDPOINT.name, endpoint) if endpoint else None
            ),
            api_timeout_seconds=bounded_float(
                env, contract.CLOUD_TASKS_TIMEOUT_SECONDS, default=10.0, minimum=0.1, maximum=60.0
            ),
            dead_letters=DeadLetterConfig.from_env(env, retry_required=False),
        )


__all__ = ["ConfigError", "TaskAppSettings"]
