"""The environment contract between the stack, the local runner and the two services.

Every variable that one side sets and another reads is named here once, with what it means
and its limits: the Pulumi program (``__main__.py``) and the local runner (``local_stack``)
set them, ``task_app`` and ``worker`` read them. Standard library only: both service images
ship this module, and the stack reads the same file from the source tree.

Renaming a variable: prod runs the image digests dev ran, so an image may meet the
environment of an older or newer program. A renamed variable keeps its old name in
``aliases``, which readers still accept, until both stacks have moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    """One environment variable of the contract."""

    name: str
    meaning: str
    aliases: tuple[str, ...] = ()
    """Earlier names of the same variable, still read (see the module docstring)."""

    def read(self, environ: Mapping[str, str]) -> str | None:
        """The non-blank value under this name or, failing that, under an earlier one."""
        for name in (self.name, *self.aliases):
            value = environ.get(name, "").strip()
            if value:
                return value
        return None


# ---- limits both sides enforce ------------------------------------------------------------

# Cloud Tasks accepts a dispatch deadline from 15 s to 30 min for HTTP targets
# (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks,
# Task.dispatchDeadline); it defaults to 10 minutes.
MIN_DISPATCH_DEADLINE_SECONDS = 15
MAX_DISPATCH_DEADLINE_SECONDS = 1800
DEFAULT_DISPATCH_DEADLINE_SECONDS = 600

# Requests one instance serves at once: the services' request threads, and what the stack
# lets Cloud Run send one instance.
DEFAULT_REQUEST_THREADS = 8
MAX_REQUEST_THREADS = 64

# ---- the task-app -------------------------------------------------------------------------

QUEUE = Variable("QUEUE", "the queue's full id, projects/P/locations/L/queues/Q")
WORKER_URL = Variable("WORKER_URL", "the worker's base URL; every task is POSTed to it + /tasks")
SECRET_KEY = Variable("SECRET_KEY", "the session and CSRF key (from Secret Manager on Cloud Run)")
CLOUD_TASKS_TIMEOUT_SECONDS = Variable(
    "CLOUD_TASKS_TIMEOUT_SECONDS", "timeout of each Cloud Tasks call, in seconds"
)

# ---- both, or one each side of a task -------------------------------------------------------

OIDC_SERVICE_ACCOUNT = Variable(
    "OIDC_SERVICE_ACCOUNT",
    "the account whose OIDC token each task carries: the task-app asks Cloud Tasks to mint "
    "tokens for it, the worker accepts tokens of this account only",
    aliases=("OIDC_CALLER_EMAIL",),
)
OIDC_AUDIENCE = Variable(
    "OIDC_AUDIENCE",
    "the audiences the worker accepts in a task's token: one URL or several, comma-separated "
    "(e.g. the worker's deterministic https://NAME-PROJECT_NUMBER.REGION.run.app and the one "
    "Cloud Run's uri gives), each https:// (http:// only for a loopback host); required by the "
    "worker when OIDC_SERVICE_ACCOUNT is set, since it never takes it from the request. The "
    "task-app has each task's token minted for the first (WORKER_URL when unset)",
)
OIDC_CERTS_URL = Variable("OIDC_CERTS_URL", "where the worker fetches the tokens' signing keys")
DISPATCH_DEADLINE_SECONDS = Variable(
    "DISPATCH_DEADLINE_SECONDS",
    f"each task's dispatch deadline, {MIN_DISPATCH_DEADLINE_SECONDS} to "
    f"{MAX_DISPATCH_DEADLINE_SECONDS} (default {DEFAULT_DISPATCH_DEADLINE_SECONDS})",
)
CLOUD_TASKS_API_ENDPOINT = Variable(
    "CLOUD_TASKS_API_ENDPOINT",
    "the Cloud Tasks API's base URL; unset means Google's (a local emulator's otherwise)",
)
QUEUE_RETRY_CONFIG = Variable(
    "QUEUE_RETRY_CONFIG",
    "the queue's retry config as the API writes it (JSON), for the retry plan and the "
    "worker's last-attempt judgement",
)
DEAD_LETTER_QUEUE = Variable(
    "DEAD_LETTER_QUEUE", "the full id of the paused queue that keeps tasks given up on"
)
GOOGLE_CLOUD_PROJECT = Variable(
    "GOOGLE_CLOUD_PROJECT", "the project the logs' trace ids belong to (when QUEUE does not say)"
)

# ---- the web server (both images) -----------------------------------------------------------

HOST = Variable("HOST", "the address to listen on; empty means every interface")
PORT = Variable("PORT", "the port to listen on (Cloud Run sets it)")
GUNICORN_THREADS = Variable(
    "GUNICORN_THREADS",
    f"request threads of the one server process, 1 to {MAX_REQUEST_THREADS} "
    f"(default {DEFAULT_REQUEST_THREADS})",
)

TASK_APP_VARIABLES = (
    QUEUE,
    WORKER_URL,
    OIDC_SERVICE_ACCOUNT,
    DISPATCH_DEADLINE_SECONDS,
    SECRET_KEY,
    CLOUD_TASKS_API_ENDPOINT,
    CLOUD_TASKS_TIMEOUT_SECONDS,
    QUEUE_RETRY_CONFIG,
    DEAD_LETTER_QUEUE,
    OIDC_AUDIENCE,
)
WORKER_VARIABLES = (
    OIDC_SERVICE_ACCOUNT,
    OIDC_AUDIENCE,
    OIDC_CERTS_URL,
    DISPATCH_DEADLINE_SECONDS,
    GOOGLE_CLOUD_PROJECT,
    QUEUE_RETRY_CONFIG,
    DEAD_LETTER_QUEUE,
    CLOUD_TASKS_API_ENDPOINT,
    CLOUD_TASKS_TIMEOUT_SECONDS,
)
SERVER_VARIABLES = (HOST, PORT, GUNICORN_THREADS)
ALL_VARIABLES = (*TASK_APP_VARIABLES, *WORKER_VARIABLES, *SERVER_VARIABLES)
