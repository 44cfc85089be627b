"""task-app's only door to Cloud Tasks: creating the worker's tasks and listing the queue.

One CloudTasksClient per process, created on first use: a missing credential must become a
503, not a crash at start, and the client library (about a second of imports) is then not
paid for before the first request that needs it. The client is the same locally and on
Cloud Run: REST, google-auth's default credentials (on Cloud Run, and under the local
runner, the metadata server's token for the service's own account), Google's endpoint or
the one CLOUD_TASKS_API_ENDPOINT names.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service_common.dead_letter import first_schedule_header

from task_app.options import TaskOptions
from task_app.settings import TaskAppSettings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import tasks_v2

logger = logging.getLogger(__name__)

LIST_PAGE_SIZE = 100
# At most this many ListTasks calls wait on Cloud Tasks at once; another is answered "busy"
# at once. A hung API then holds at most this many request threads, each for at most the
# call's timeout, and the rest stay free for the page, task creation and /healthz.
MAX_CONCURRENT_LISTS = 2
# How Google words an IAM denial (google.rpc.ErrorInfo carries the same as metadata):
# 'The principal (user or service account) lacks IAM permission "cloudtasks.tasks.list"
# for the resource "projects/P/locations/L/queues/Q" (or the resource may not exist).'
_LACKS_PERMISSION = re.compile(r'lacks IAM permission "([A-Za-z0-9_.]+)"')


class CloudTasksUnavailable(Exception):
    """Cloud Tasks could not be reached or refused the call; nothing was done by this call."""


@dataclass
class CreateOutcome:
    """What happened to a request for ``requested`` tasks, stopping at the first failure."""

    requested: int
    created: list[str] = field(default_factory=list)
    # Set when a task was not created (or may not have been): which one and why.
    failed_position: int | None = None
    error: str | None = None
    already_exists: bool = False
    outcome_unknown: bool = False

    @property
    def ok(self) -> bool:
        return self.failed_position is None


def short_id(name: str) -> str:
    """``projects/.../tasks/ID`` -> ``ID``."""
    return name.rsplit("/", 1)[-1]


def _api_failure(error: Any) -> _Failure:
    """The status name, Cloud Tasks' own message and any missing permission of a failed
    call.

    Over REST the HTTP status alone is ambiguous (409 is ALREADY_EXISTS or ABORTED), so the
    name comes from Google's JSON error body when it has one.
    """
    name = None
    message = error.message
    response = getattr(error, "response", None)
    try:
        body = response.json()["error"] if response is not None else {}
        name = body.get("status") or None
        message = body.get("message") or message
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    if name is None:
        code = error.grpc_status_code
        name = code.name if code is not None else str(error.code)
    return _Failure(name, str(message), missing_permission(name, str(message), error))


def missing_permission(status: str, message: str, error: Any = None) -> str | None:
    """The IAM permission a PERMISSION_DENIED says the caller lacks, when it names one."""
    if status != "PERMISSION_DENIED":
        return None
    metadata = getattr(error, "metadata", None) or {}
    if isinstance(metadata.get("permission"), str):
        return str(metadata["permission"])
    match = _LACKS_PERMISSION.search(message)
    return match.group(1) if match else None


def _transport_status(error: Exception) -> str:
    """The status a failure to send stands for, named as the API would: a timeout after
    sending is DEADLINE_EXCEEDED (the call may have happened), anything else UNAVAILABLE."""
    import requests

    if isinstance(error, requests.Timeout) and not isinstance(error, requests.ConnectTimeout):
        return "DEADLINE_EXCEEDED"
    return "UNAVAILABLE"


def _send_errors() -> tuple[type[Exception], ...]:
    """Failures to send a call at all: no credentials, no connection, a broken answer."""
    import requests
    from google.auth import exceptions as auth_exceptions

    return (auth_exceptions.GoogleAuthError, requests.RequestException, ValueError)


def _iso(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).isoformat() if value is not None else None


def describe_task(task: tasks_v2.Task) -> dict[str, object]:
    """The fields the page shows for one task."""
    from google.rpc import code_pb2

    last_status: dict[str, object] | None = None
    last_attempt_time = None
    if "last_attempt" in task:
        attempt = task.last_attempt
        if "response_status" in attempt:
            status = attempt.response_status
            last_status = {
                "code": status.code,
                "name": code_pb2.Code.Name(status.code)
                if status.code in code_pb2.Code.values()
                else str(status.code),
                "message": status.message,
            }
        if "dispatch_time" in attempt:
            last_attempt_time = _iso(attempt.dispatch_time)
    return {
        "id": short_id(task.name),
        "schedule_time": _iso(task.schedule_time) if "schedule_time" in task else None,
        "create_time": _iso(task.create_time) if "create_time" in task else None,
        "dispatch_count": task.dispatch_count,
        "response_count": task.response_count,
        "last_attempt_time": last_attempt_time,
        "first_attempt_time": _iso(task.first_attempt.dispatch_time)
        if "first_attempt" in task and "dispatch_time" in task.first_attempt
        else None,
        "last_response_status": last_status,
    }


class CloudTasksGateway:
    """Creates the worker's HTTP tasks on the configured queue and lists the queue."""

    def __init__(self, settings: TaskAppSettings, credentials: Credentials | None = None) -> None:
        """``credentials`` None: google-auth's default credentials, as on Cloud Run."""
        self._settings = settings
        self._credentials = credentials
        self._client: tasks_v2.CloudTasksClient | None = None
        self._lock = threading.Lock()
        self._list_slots = threading.BoundedSemaphore(MAX_CONCURRENT_LISTS)

    def _get_client(self) -> tasks_v2.CloudTasksClient:
        with self._lock:
            if self._client is None:
                from google.cloud import tasks_v2

                endpoint = self._settings.api_endpoint
                self._client = tasks_v2.CloudTasksClient(
                    transport="rest",
                    credentials=self._credentials,
                    client_options={"api_endpoint": endpoint} if endpoint else None,
                )
            return self._client

    def close(self) -> None:
        """Close the client's connections (at process exit)."""
        with self._lock:
            if self._client is not None:
                self._client.transport.close()
                self._client = None

    def build_task(
        self, options: TaskOptions, task_id: str | None, now: datetime.datetime
    ) -> tasks_v2.Task:
        """The Cloud Tasks task that makes the worker do what ``options`` ask."""
        from google.cloud import tasks_v2

        settings = self._settings
        http_request = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=settings.worker_tasks_url,
            # Cloud Tasks does not default the Content-Type; the worker parses JSON, and its
            # last-attempt judgement wants the earliest time of the first attempt.
            headers={
                "Content-Type": "application/json",
                **first_schedule_header(now.timestamp() + options.delay_seconds),
            },
            body=json.dumps(options.payload()).encode(),
        )
        if settings.oidc_service_account:
            # Cloud Tasks mints the token at each attempt, for the audience the worker
            # accepts (OIDC_AUDIENCE, by default the worker's base URL).
            http_request.oidc_token = tasks_v2.OidcToken(
                service_account_email=settings.oidc_service_account,
                audience=settings.oidc_audience,
            )
        task = tasks_v2.Task(
            http_request=http_request,
            dispatch_deadline=datetime.timedelta(seconds=settings.dispatch_deadline_seconds),
        )
        if task_id is not None:
            task.name = f"{settings.queue}/tasks/{task_id}"
        if options.delay_seconds > 0:
            task.schedule_time = now + datetime.timedelta(seconds=options.delay_seconds)
        return task

    def create_tasks(self, options: TaskOptions) -> CreateOutcome:
        """Create the tasks one after the other, stopping at the first failure.

        Sequential on purpose: the outcome then says exactly which tasks exist.
        """
        outcome = CreateOutcome(requested=options.count)
        now = datetime.datetime.now(datetime.UTC)
        for position, task_id in enumerate(options.task_ids(), start=1):
            result = self._create_one(options, task_id, now)
            if isinstance(result, _Failure):
                failure = result
                outcome.failed_position = position
                outcome.already_exists = failure.status == "ALREADY_EXISTS"
                outcome.outcome_unknown = failure.status == "DEADLINE_EXCEEDED"
                outcome.error = self._failure_message(failure, position, options.count, task_id)
                if outcome.already_exists:
                    logger.warning("CreateTask refused a duplicate name: %s", task_id)
                else:
                    logger.error(
                        "CreateTask failed for task %d of %d with %s: %s",
                        position,
                        options.count,
                        failure.status,
                        failure.message,
                        extra={"json_fields": {"created_before_failure": outcome.created}},
                    )
                break
            outcome.created.append(short_id(result.name))
        if outcome.created:
            logger.info(
                "created %d of %d tasks",
                len(outcome.created),
                options.count,
                extra={"json_fields": {"tasks": outcome.created}},
            )
        return outcome

    def _create_one(
        self, options: TaskOptions, task_id: str | None, now: datetime.datetime
    ) -> tasks_v2.Task | _Failure:
        """One CreateTask call: the created task, or why there is none."""
        from google.api_core import exceptions as api_exceptions
        from google.cloud import tasks_v2

        try:
            client = self._get_client()
            return client.create_task(
                request=tasks_v2.CreateTaskRequest(
                    parent=self._settings.queue, task=self.build_task(options, task_id, now)
                ),
                timeout=self._settings.api_timeout_seconds,
                # No automatic retry: a retried CreateTask without a name could create
                # the task twice. The caller may retry with a task_id instead.
                retry=None,
            )
        except api_exceptions.GoogleAPICallError as error:
            return _api_failure(error)
        except _send_errors() as error:
            # No credentials or no connection: the same for the user as an outage.
            return _Failure(_transport_status(error), repr(error))

    def _lacks(self, permission: str | None) -> str:
        if permission is None:
            return ""
        return (
            f" The task-app's service account lacks {permission} on queue"
            f" {self._settings.queue_id!r}: the stack must grant it."
        )

    def _failure_message(
        self, failure: _Failure, position: int, count: int, task_id: str | None
    ) -> str:
        which = f"task {position} of {count}" if count > 1 else "the task"
        if failure.status == "ALREADY_EXISTS":
            return (
                f"a task named {task_id!r} already exists or existed recently in queue "
                f"{self._settings.queue_id!r}; Cloud Tasks refuses the same name again for "
                "a while (de-duplication)"
            )
        if failure.status == "DEADLINE_EXCEEDED":
            return (
                f"Cloud Tasks did not answer within {self._settings.api_timeout_seconds:g} s "
                f"while creating {which}; it may or may not have been created. "
                "Tasks after it were not created."
            )
        return (
            f"Cloud Tasks is unavailable ({failure.status}): {which} was not created"
            + (", nor any after it." if position < count else ".")
            + (self._lacks(failure.permission) or " Try again later.")
        )

    def list_tasks(self) -> list[dict[str, object]]:
        """The queue's current tasks (first page, up to 100), as the page shows them."""
        if not self._list_slots.acquire(blocking=False):
            raise CloudTasksUnavailable(
                f"Cloud Tasks is slow to answer: {MAX_CONCURRENT_LISTS} lists of the queue's "
                "tasks are still waiting for it; try again shortly"
            )
        try:
            return self._list_first_page()
        finally:
            self._list_slots.release()

    def _list_first_page(self) -> list[dict[str, object]]:
        from google.api_core import exceptions as api_exceptions
        from google.cloud import tasks_v2

        try:
            pager = self._get_client().list_tasks(
                request=tasks_v2.ListTasksRequest(
                    parent=self._settings.queue, page_size=LIST_PAGE_SIZE
                ),
                timeout=self._settings.api_timeout_seconds,
                retry=None,
            )
            first_page = next(iter(pager.pages), None)
        except api_exceptions.GoogleAPICallError as error:
            failure = _api_failure(error)
            logger.error("ListTasks failed with %s: %s", failure.status, failure.message)
            raise CloudTasksUnavailable(
                f"Cloud Tasks is unavailable ({failure.status}): cannot list the queue's tasks."
                + self._lacks(failure.permission)
            ) from error
        except _send_errors() as error:
            logger.error("ListTasks could not be sent: %r", error)
            raise CloudTasksUnavailable(
                f"Cloud Tasks is unavailable ({_transport_status(error)}): "
                "cannot list the queue's tasks"
            ) from error
        if first_page is None:
            return []
        return [describe_task(task) for task in first_page.tasks]


@dataclass(frozen=True)
class _Failure:
    """A call that did not succeed: the API's status name, its message, and the IAM
    permission it says the caller lacks, if any."""

    status: str
    message: str
    permission: str | None = None
