"""The one call path into the engine, shared by every transport: the in-process gRPC
server, the gRPC front process (through the link) and the REST server.

A call is (method, request message, the caller's Authorization). ``Api.call`` authorizes
it, runs the engine and returns the response message; every failure is an ApiError, so
each transport only turns that into its own status (a gRPC status, or Google's JSON
error body). An unexpected exception is the call's INTERNAL status, never a crash.
Transports answer through ``call_durable`` / ``answer_later``: a call that changed the
state is answered once the change is committed to the store, and UNAVAILABLE (with the
store's reason) if it could not be written; a call that changed nothing is answered at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.tasks_v2.types import cloudtasks
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError

from .engine import Engine
from .errors import ApiError
from .iam import Caller, Iam
from .link import MAX_PAYLOAD, METHODS, unpack_request
from .store import WriteFailed
from .validation import QueuePb, TaskPb

log = logging.getLogger("tasks_emulator")

Handler = Callable[[Any, Caller], Any]


@dataclass(frozen=True)
class Method:
    """One API method: its request and response classes and what it does."""

    name: str
    request: Any
    response: Any
    run: Handler


def _queue_methods(engine: Engine) -> dict[str, tuple[Any, Any, Handler]]:
    def delete_queue(r: Any, _: Caller) -> Any:
        engine.delete_queue(r.name)
        return empty_pb2.Empty()

    return {
        "CreateQueue": (
            cloudtasks.CreateQueueRequest.pb(), QueuePb,
            lambda r, _: engine.create_queue(r.parent, r.queue),
        ),
        "GetQueue": (
            cloudtasks.GetQueueRequest.pb(), QueuePb, lambda r, _: engine.get_queue(r.name),
        ),
        "ListQueues": (
            cloudtasks.ListQueuesRequest.pb(), cloudtasks.ListQueuesResponse.pb(),
            lambda r, _: engine.list_queues(r.parent, r.filter, r.page_size, r.page_token),
        ),
        "UpdateQueue": (
            cloudtasks.UpdateQueueRequest.pb(), QueuePb,
            lambda r, _: engine.update_queue(r.queue, r.update_mask),
        ),
        "DeleteQueue": (cloudtasks.DeleteQueueRequest.pb(), empty_pb2.Empty, delete_queue),
        "PurgeQueue": (
            cloudtasks.PurgeQueueRequest.pb(), QueuePb, lambda r, _: engine.purge_queue(r.name),
        ),
        "PauseQueue": (
            cloudtasks.PauseQueueRequest.pb(), QueuePb, lambda r, _: engine.pause_queue(r.name),
        ),
        "ResumeQueue": (
            cloudtasks.ResumeQueueRequest.pb(), QueuePb,
            lambda r, _: engine.resume_queue(r.name),
        ),
    }  # fmt: skip


def _task_methods(engine: Engine) -> dict[str, tuple[Any, Any, Handler]]:
    def delete_task(r: Any, _: Caller) -> Any:
        engine.delete_task(r.name)
        return empty_pb2.Empty()

    return {
        "CreateTask": (
            cloudtasks.CreateTaskRequest.pb(), TaskPb,
            lambda r, _: engine.create_task(r.parent, r.task, r.response_view),
        ),
        "GetTask": (
            cloudtasks.GetTaskRequest.pb(), TaskPb,
            lambda r, _: engine.get_task(r.name, r.response_view),
        ),
        "ListTasks": (
            cloudtasks.ListTasksRequest.pb(), cloudtasks.ListTasksResponse.pb(),
            lambda r, _: engine.list_tasks(r.parent, r.response_view, r.page_size, r.page_token),
        ),
        "DeleteTask": (cloudtasks.DeleteTaskRequest.pb(), empty_pb2.Empty, delete_task),
        "RunTask": (
            cloudtasks.RunTaskRequest.pb(), TaskPb,
            lambda r, _: engine.run_task(r.name, r.response_view),
        ),
    }  # fmt: skip


def _iam_methods(iam: Iam) -> dict[str, tuple[Any, Any, Handler]]:
    def test(r: Any, caller: Caller) -> Any:
        held = iam.test_permissions(caller, r.resource, list(r.permissions))
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=held)

    return {
        "GetIamPolicy": (
            iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy,
            lambda r, _: iam.get_policy(r.resource),
        ),
        "SetIamPolicy": (
            iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy,
            lambda r, _: iam.set_policy(r.resource, r.policy),
        ),
        "TestIamPermissions": (
            iam_policy_pb2.TestIamPermissionsRequest,
            iam_policy_pb2.TestIamPermissionsResponse, test,
        ),
    }  # fmt: skip


class Api:
    """Every method of the emulator, and the one way to call one."""

    def __init__(self, engine: Engine, iam: Iam) -> None:
        self.iam = iam
        self.store = engine.store
        table = {**_queue_methods(engine), **_task_methods(engine), **_iam_methods(iam)}
        assert tuple(table) == METHODS, "link.METHODS and the method table disagree"
        self.methods = {name: Method(name, *entry) for name, entry in table.items()}
        self.by_index = [self.methods[name] for name in METHODS]

    def call(self, method: Method, request: Any, authorization: str = "") -> Any:
        """The response to one call; ApiError with the status the caller gets."""
        try:
            caller = self.iam.authorize(method.name, request, authorization)
            return method.run(request, caller)
        except ApiError:
            raise
        except Exception:
            # A bug must not take the server down; the caller sees INTERNAL.
            log.exception("%s failed", method.name)
            raise ApiError(
                grpc.StatusCode.INTERNAL, f"{method.name} failed inside the emulator"
            ) from None

    async def call_durable(self, method: Method, request: Any, authorization: str = "") -> Any:
        """``call``, answered once what it changed is committed to the store."""
        before = self.store.changes
        response = self.call(method, request, authorization)
        if self.store.changes != before:
            waiter = self.store.committed()
            if waiter is not None:
                try:
                    await waiter
                except WriteFailed as error:
                    raise _unavailable(error) from None
        return response

    def answer(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        """A call passed on by the front process: (status code, response or message),
        without waiting for the store (``answer_later`` waits)."""
        return self._answer(kind, payload)[:2]

    def answer_later(self, kind: int, payload: bytes, reply: Callable[[int, bytes], None]) -> None:
        """Answers a call passed on by the front process with ``reply(status, payload)``:
        at once, or once what it changed is committed to the store."""
        code, body, waiter = self._answer(kind, payload)
        if waiter is None:
            reply(code, body)
            return

        def committed(done: asyncio.Future[None]) -> None:
            error = done.exception() if not done.cancelled() else WriteFailed("emulator stopped")
            if error is None:
                reply(code, body)
            else:
                failure = _unavailable(error)
                reply(failure.code.value[0], failure.message.encode())

        waiter.add_done_callback(committed)

    def _answer(self, kind: int, payload: bytes) -> tuple[int, bytes, asyncio.Future[None] | None]:
        if not 0 <= kind < len(self.by_index):
            return grpc.StatusCode.UNIMPLEMENTED.value[0], b"unknown method", None
        method = self.by_index[kind]
        try:
            authorization, body = unpack_request(payload)
            request = method.request.FromString(body)
        except (DecodeError, ValueError):
            code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            return code, b"the request could not be parsed", None
        before = self.store.changes
        try:
            response = self.call(method, request, authorization)
        except ApiError as error:
            return error.code.value[0], error.message.encode(), None
        waiter = self.store.committed() if self.store.changes != before else None
        serialized: bytes = response.SerializeToString()
        if len(serialized) > MAX_PAYLOAD:
            return *too_large(method.name, len(serialized)), waiter
        return 0, serialized, waiter


def _unavailable(error: BaseException) -> ApiError:
    """The status of a call whose change could not be made durable."""
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        f"{error}. The change is kept in memory and written again with the next one; "
        "its outcome is unknown until then.",
    )


def request_too_large(size: int | None = None) -> tuple[int, bytes]:
    """The status of a request larger than the link carries."""
    measured = f" ({size} bytes)" if size is not None else ""
    message = (
        f"The request{measured} is larger than the {MAX_PAYLOAD} bytes the emulator can pass on."
    )
    return grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message.encode()


def too_large(method: str, size: int) -> tuple[int, bytes]:
    """The status of an answer larger than the link carries."""
    message = (
        f"The {method} response ({size} bytes) is larger than the {MAX_PAYLOAD} bytes the "
        "emulator can pass on; ask for smaller pages."
    )
    return grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message.encode()
