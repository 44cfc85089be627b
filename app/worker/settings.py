"""worker's settings, read once from the environment and validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from service_common import contract
from service_common.config import (
    ConfigError,
    audience_urls,
    bounded_float,
    bounded_int,
    http_url,
    max_work_seconds,
    optional,
)
from service_common.dead_letter import DeadLetterConfig
from service_common.logs import project_id_for_traces

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from its environment."""

    # Token verification is on exactly when the expected caller is configured.
    oidc_caller_email: str | None
    # Every audience a task's token may carry (the worker's URLs); never the request's own.
    oidc_audiences: tuple[str, ...]
    oidc_certs_url: str
    dispatch_deadline_seconds: int
    # The project the log lines' trace ids belong to; None: traces are not linked.
    project: str | None = None
    # Where a task given up on is parked, and the queue's retry config to tell when.
    dead_letters: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    # The Cloud Tasks REST API's base URL (for parking); None: Google's.
    api_endpoint: str | None = None
    api_timeout_seconds: float = 10.0

    @property
    def verify_tokens(self) -> bool:
        return self.oidc_caller_email is not None

    @property
    def max_work_seconds(self) -> float:
        return max_work_seconds(self.dispatch_deadline_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Read and check every setting; a ConfigError names the bad variable."""
        env = os.environ if environ is None else environ
        caller = optional(env, contract.OIDC_SERVICE_ACCOUNT)
        audiences = audience_urls(
            contract.OIDC_AUDIENCE.name, optional(env, contract.OIDC_AUDIENCE) or ""
        )
        if caller is not None and not audiences:
            raise ConfigError(
                f"{contract.OIDC_AUDIENCE.name} is not set: with "
                f"{contract.OIDC_SERVICE_ACCOUNT.name} set the worker verifies each task's "
                "token and must know the audience it carries, the worker's URL (e.g. "
                "https://worker-123456789012.europe-west1.run.app; several, comma-separated)"
            )
        certs_url = optional(env, contract.OIDC_CERTS_URL) or GOOGLE_CERTS_URL
        endpoint = optional(env, contract.CLOUD_TASKS_API_ENDPOINT)
        return cls(
            oidc_caller_email=caller,
            oidc_audiences=audiences,
            oidc_certs_url=http_url(contract.OIDC_CERTS_URL.name, certs_url),
            dispatch_deadline_seconds=bounded_int(
                env,
                contract.DISPATCH_DEADLINE_SECONDS,
                default=contract.DEFAULT_DISPATCH_DEADLINE_SECONDS,
                minimum=contract.MIN_DISPATCH_DEADLINE_SECONDS,
                maximum=contract.MAX_DISPATCH_DEADLINE_SECONDS,
            ),
            project=project_id_for_traces(env),
            dead_letters=DeadLetterConfig.from_env(env, retry_required=True),
            api_endpoint=(
                http_url(contract.CLOUD_TASKS_API_ENDPOINT.name, endpoint) if endpoint else None
            ),
            api_timeout_seconds=bounded_float(
                env, contract.CLOUD_TASKS_TIMEOUT_SECONDS, default=10.0, minimum=0.1, maximum=60.0
            ),
        )


__all__ = ["ConfigError", "WorkerSettings"]
