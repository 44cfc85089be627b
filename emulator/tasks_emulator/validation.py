"""Checks and defaults of the API's inputs, with the real service's messages where the
reference quotes them (and messages in the same style where it does not)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from google.cloud.tasks_v2.types import cloudtasks
from google.cloud.tasks_v2.types import queue as queue_types
from google.cloud.tasks_v2.types import target as target_types
from google.cloud.tasks_v2.types import task as task_types
from google.protobuf import duration_pb2

from .errors import api_error, invalid
from .retry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MAX_RETRY_DURATION,
    DEFAULT_MIN_BACKOFF,
    RetryPolicy,
)

QueuePb: Any = queue_types.Queue.pb()
RateLimitsPb: Any = queue_types.RateLimits.pb()
RetryConfigPb: Any = queue_types.RetryConfig.pb()
TaskPb: Any = task_types.Task.pb()
ListQueuesResponsePb: Any = cloudtasks.ListQueuesResponse.pb()
ListTasksResponsePb: Any = cloudtasks.ListTasksResponse.pb()
HttpMethod = target_types.HttpMethod

MAX_RATE = 500.0
DEFAULT_RATE = 500.0
MAX_CONCURRENCY = 5000
DEFAULT_CONCURRENCY = 1000
MAX_BURST = 100
MIN_DEADLINE = 15.0
MAX_DEADLINE = 30 * 60.0
DEFAULT_DEADLINE = 10 * 60.0
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0
MAX_TASK_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 80 * 1024
# At most this much of tasks in one ListTasks answer: under gRPC's default limit of
# 4 MiB for a received message, so that any client with default settings can read every
# page (a task is at most 1 MiB, so a page always holds at least one).
MAX_PAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024
MAX_URL_LENGTH = 2083
# Plain ints: HttpMethod members compare slowly, and these are checked for every task.
UNSPECIFIED_METHOD = int(HttpMethod.HTTP_METHOD_UNSPECIFIED)
POST_METHOD = int(HttpMethod.POST)
BODY_METHODS = {int(HttpMethod.POST), int(HttpMethod.PUT), int(HttpMethod.PATCH)}

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
LOCATION_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
QUEUE_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+)/queues/([A-Za-z0-9-]{1,100})$")
TASK_RE = re.compile(
    r"^(projects/[^/]+/locations/[^/]+/queues/[^/]+)/tasks/([A-Za-z0-9_-]{1,500})$"
)
QUEUE_FORMAT = '"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>"'
# The service stores this User-Agent among every HTTP task's headers (GetTask shows it),
# whatever the creator sent.
USER_AGENT = "Google-Cloud-Tasks"
_LOCAL_HOST = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\]|[^.\[\]]+)$", re.I)


def burst_for(rate: float) -> int:
    """max_burst_size, which the service picks from the rate (100 at 500/s): one fifth
    of a second's worth of dispatches, at least 1, at most 100."""
    return max(1, min(MAX_BURST, math.ceil(rate / 5)))


def seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def to_duration(value: float) -> Any:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def check_location(parent: str) -> None:
    if not LOCATION_RE.match(parent):
        raise invalid(
            f'Invalid resource field value in the request: parent "{parent}" must be '
            'formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>"'
        )


def check_queue_name(name: str) -> None:
    if not QUEUE_RE.match(name):
        raise invalid(f"Queue name must be formatted: {QUEUE_FORMAT} (got {name!r})")


def check_task_name(name: str) -> None:
    if not TASK_RE.match(name):
        raise api_error("task_name_format")


def normalize_rate_limits(limits: Any) -> None:
    """Validates ``limits`` in place and fills in the defaults. max_burst_size is output
    only: whatever a client sent is replaced."""
    rate = limits.max_dispatches_per_second
    if math.isnan(rate) or rate < 0:
        raise invalid("RateLimits.maxDispatchesPerSecond must be greater than 0.")
    if rate > MAX_RATE:
        raise invalid("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
    if rate == 0:
        limits.max_dispatches_per_second = DEFAULT_RATE
    if limits.max_concurrent_dispatches < 0:
        raise invalid("RateLimits.maxConcurrentDispatches must be greater than 0.")
    if limits.max_concurrent_dispatches > MAX_CONCURRENCY:
        raise invalid("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")
    if limits.max_concurrent_dispatches == 0:
        limits.max_concurrent_dispatches = DEFAULT_CONCURRENCY
    limits.max_burst_size = burst_for(limits.max_dispatches_per_second)


def _check_retry_signs(config: Any) -> None:
    if config.max_attempts < -1:
        raise invalid("RetryConfig.maxAttempts must be greater or equal to -1.")
    if config.max_doublings < 0:
        raise invalid("RetryConfig.maxDoublings cannot be negative.")
    for field, label in _RETRY_DURATIONS:
        if config.HasField(field) and seconds(getattr(config, field)) < 0:
            raise invalid(f"RetryConfig.{label} cannot be negative.")


_RETRY_DURATIONS = (
    ("min_backoff", "minBackoff"),
    ("max_backoff", "maxBackoff"),
    ("max_retry_duration", "maxRetryDuration"),
)


def normalize_retry_config(config: Any, fallback: RetryPolicy | None = None) -> RetryPolicy:
    """Validates ``config`` in place, fills in the defaults (or ``fallback``'s values for
    a task-level config) and returns the policy it describes."""
    base = fallback or RetryPolicy()
    _check_retry_signs(config)
    if config.max_attempts == 0:
        config.max_attempts = base.max_attempts
    for field, default in (
        ("min_backoff", base.min_backoff),
        ("max_backoff", base.max_backoff),
        ("max_retry_duration", base.max_retry_duration),
    ):
        if not config.HasField(field):
            getattr(config, field).CopyFrom(to_duration(default))
    if seconds(config.max_retry_duration) == 0:
        # Unlimited: the service leaves the field unset, so describe does not show it.
        config.ClearField("max_retry_duration")
    if seconds(config.min_backoff) > seconds(config.max_backoff):
        raise invalid(
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."
        )
    return RetryPolicy(
        max_attempts=config.max_attempts,
        min_backoff=seconds(config.min_backoff),
        max_backoff=seconds(config.max_backoff),
        max_doublings=config.max_doublings,
        max_retry_duration=seconds(config.max_retry_duration),
    )


def default_retry_config() -> Any:
    config = RetryConfigPb(max_attempts=DEFAULT_MAX_ATTEMPTS, max_doublings=DEFAULT_MAX_DOUBLINGS)
    config.min_backoff.CopyFrom(to_duration(DEFAULT_MIN_BACKOFF))
    config.max_backoff.CopyFrom(to_duration(DEFAULT_MAX_BACKOFF))
    config.max_retry_duration.CopyFrom(to_duration(DEFAULT_MAX_RETRY_DURATION))
    return config


@dataclass(frozen=True)
class QueueSettings:
    rate: float
    burst: int
    max_concurrent: int
    retry: RetryPolicy


def normalize_queue(queue: Any) -> QueueSettings:
    """Validates a queue's configuration in place (name checked by the caller), fills in
    the defaults the service picks, and returns the settings the engine runs with."""
    if queue.HasField("app_engine_routing_override"):
        raise invalid("App Engine routing is not supported by this emulator (HTTP targets only).")
    if not queue.HasField("rate_limits"):
        queue.rate_limits.CopyFrom(RateLimitsPb())
    normalize_rate_limits(queue.rate_limits)
    if queue.HasField("retry_config"):
        policy = normalize_retry_config(queue.retry_config)
    else:
        queue.retry_config.CopyFrom(default_retry_config())
        policy = normalize_retry_config(queue.retry_config)
    return QueueSettings(
        rate=queue.rate_limits.max_dispatches_per_second,
        burst=queue.rate_limits.max_burst_size,
        max_concurrent=queue.rate_limits.max_concurrent_dispatches,
        retry=policy,
    )


def _token_over_plain_http(request: Any) -> bool:
    """A token sent over plain HTTP, which the service refuses. Loopback and single-label
    hosts (a container's name) are allowed: no token leaves the machine or its network."""
    if not request.url.startswith("http://"):
        return False
    if not (request.HasField("oidc_token") or request.HasField("oauth_token")):
        return False
    host = request.url[7:].split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return not _LOCAL_HOST.match(host)


def _set_user_agent(headers: Any) -> None:
    for key in [key for key in headers if key.lower() == "user-agent"]:
        del headers[key]
    headers["User-Agent"] = USER_AGENT


def _header_bytes(headers: Any) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items())


def _check_url(url: str) -> None:
    if not url:
        raise api_error("url_required")
    if not (url.startswith("http://") or url.startswith("https://")):
        raise invalid(f"HttpRequest.url must start with 'http://' or 'https://' (got {url!r}).")
    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"HttpRequest.url must be at most {MAX_URL_LENGTH} characters long.")


def _check_headers(headers: Any) -> None:
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name) or "\r" in value or "\n" in value:
            raise invalid(f"HttpRequest.headers: {name!r} is not a valid header name and value.")
    if _header_bytes(headers) > MAX_HEADER_BYTES:
        raise invalid("HttpRequest.headers must be smaller than 80KB in total.")


def _normalize_http_request(request: Any) -> None:
    """The target: URL, method (POST by default), body only with a body method, headers,
    and a token only over https (or to a local host); the User-Agent is the service's."""
    _check_url(request.url)
    if request.http_method == UNSPECIFIED_METHOD:
        request.http_method = POST_METHOD
    if request.body and request.http_method not in BODY_METHODS:
        raise invalid(
            "HttpRequest.body can only be set when HttpRequest.httpMethod is POST, PUT or PATCH."
        )
    _check_headers(request.headers)
    if request.HasField("oidc_token") and not request.oidc_token.service_account_email:
        raise invalid("OidcToken.serviceAccountEmail must be set.")
    if _token_over_plain_http(request):
        raise api_error("url_https_with_token")
    _set_user_agent(request.headers)


def _normalize_deadline(task: Any) -> float:
    """The dispatch deadline in seconds: within [15 s, 30 min], 10 minutes when unset."""
    if not task.HasField("dispatch_deadline"):
        task.dispatch_deadline.CopyFrom(to_duration(DEFAULT_DEADLINE))
        return DEFAULT_DEADLINE
    deadline = seconds(task.dispatch_deadline)
    if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
        raise invalid("Task.dispatchDeadline must be between [15s, 30m].")
    return deadline


def normalize_task(task: Any, now: float) -> float:
    """Validates a task to create, in place, fills in the defaults, and returns its
    dispatch deadline in seconds. Name and queue are checked by the caller."""
    if task.HasField("app_engine_http_request"):
        raise invalid("App Engine tasks are not supported by this emulator (HTTP targets only).")
    if not task.HasField("http_request"):
        raise invalid("Task.httpRequest must be set: the task has no target.")
    _normalize_http_request(task.http_request)
    deadline = _normalize_deadline(task)
    if task.HasField("schedule_time"):
        when = task.schedule_time.ToNanoseconds() / 1e9
        if when > now + MAX_SCHEDULE_AHEAD:
            raise invalid("Task.scheduleTime must be no more than 720h in the future.")
    if task.ByteSize() > MAX_TASK_BYTES:
        raise invalid("Task size too large")
    return deadline
