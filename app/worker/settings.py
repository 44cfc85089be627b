"""worker's settings, read once from the environment and validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from service_common import contract
from service_common.config import ConfigError, bounded_int, http_url, max_work_seconds, optional
from service_common.logs import project_id_for_traces

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from its environment."""

    # Token verification is on exactly when the expected caller is configured.
    oidc_caller_email: str | None
    # None: the base URL the request arrived at (what Cloud Tasks uses as audience).
    oidc_audience: str | None
    oidc_certs_url: str
    dispatch_deadline_seconds: int
    # The project the log lines' trace ids belong to; None: traces are not linked.
    project: str | None = None

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
        audience = optional(env, contract.OIDC_AUDIENCE)
        certs_url = optional(env, contract.OIDC_CERTS_URL) or GOOGLE_CERTS_URL
        return cls(
            oidc_caller_email=optional(env, contract.OIDC_SERVICE_ACCOUNT),
            oidc_audience=http_url(contract.OIDC_AUDIENCE.name, audience) if audience else None,
            oidc_certs_url=http_url(contract.OIDC_CERTS_URL.name, certs_url),
            dispatch_deadline_seconds=bounded_int(
                env,
                contract.DISPATCH_DEADLINE_SECONDS,
                default=contract.DEFAULT_DISPATCH_DEADLINE_SECONDS,
                minimum=contract.MIN_DISPATCH_DEADLINE_SECONDS,
                maximum=contract.MAX_DISPATCH_DEADLINE_SECONDS,
            ),
            project=project_id_for_traces(env),
        )


__all__ = ["ConfigError", "WorkerSettings"]
