"""The ``google.cloud.tasks.v2.CloudTasks`` gRPC service, served from the protobuf classes
that ship with google-cloud-tasks (no generated stubs): each method parses the request,
calls the engine and serializes its answer, either as a generic handler of a gRPC server
in this process or as the answer to a call the front process passed on (``answer``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.cloud.tasks_v2.types import cloudtasks
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError

from .engine import Engine
from .errors import ApiError
from .link import METHODS, SERVICE
from .validation import QueuePb, TaskPb

log = logging.getLogger("tasks_emulator")


def _methods(engine: Engine) -> dict[str, tuple[Any, Any, Callable[[Any], Any]]]:
    """Method name -> (request class, response class, handler)."""
    empty = empty_pb2.Empty

    def delete_queue(r: Any) -> Any:
        engine.delete_queue(r.name)
        return empty()

    def delete_task(r: Any) -> Any:
        engine.delete_task(r.name)
        return empty()

    return {
        "CreateQueue": (
            cloudtasks.CreateQueueRequest.pb(), QueuePb,
            lambda r: engine.create_queue(r.parent, r.queue),
        ),
        "GetQueue": (cloudtasks.GetQueueRequest.pb(), QueuePb, lambda r: engine.get_queue(r.name)),
        "ListQueues": (
            cloudtasks.ListQueuesRequest.pb(), cloudtasks.ListQueuesResponse.pb(),
            lambda r: engine.list_queues(r.parent, r.filter, r.page_size, r.page_token),
        ),
        "UpdateQueue": (
            cloudtasks.UpdateQueueRequest.pb(), QueuePb,
            lambda r: engine.update_queue(r.queue, r.update_mask),
        ),
        "DeleteQueue": (cloudtasks.DeleteQueueRequest.pb(), empty, delete_queue),
        "PurgeQueue": (
            cloudtasks.PurgeQueueRequest.pb(), QueuePb, lambda r: engine.purge_queue(r.name),
        ),
        "PauseQueue": (
            cloudtasks.PauseQueueRequest.pb(), QueuePb, lambda r: engine.pause_queue(r.name),
        ),
        "ResumeQueue": (
            cloudtasks.ResumeQueueRequest.pb(), QueuePb, lambda r: engine.resume_queue(r.name),
        ),
        "CreateTask": (
            cloudtasks.CreateTaskRequest.pb(), TaskPb,
            lambda r: engine.create_task(r.parent, r.task, r.response_view),
        ),
        "GetTask": (
            cloudtasks.GetTaskRequest.pb(), TaskPb,
            lambda r: engine.get_task(r.name, r.response_view),
        ),
        "ListTasks": (
            cloudtasks.ListTasksRequest.pb(), cloudtasks.ListTasksResponse.pb(),
            lambda r: engine.list_tasks(r.parent, r.response_view, r.page_size, r.page_token),
        ),
        "DeleteTask": (cloudtasks.DeleteTaskRequest.pb(), empty, delete_task),
        "RunTask": (
            cloudtasks.RunTaskRequest.pb(), TaskPb,
            lambda r: engine.run_task(r.name, r.response_view),
        ),
    }  # fmt: skip


Method = tuple[Any, Any, Callable[[Any], Any]]


def method_table(engine: Engine) -> list[Method]:
    """(request class, response class, handler) of each method, in ``link.METHODS`` order."""
    methods = _methods(engine)
    assert tuple(methods) == METHODS, "link.METHODS and the servicer disagree"
    return list(methods.values())


def _run(name: str, call: Callable[[Any], Any], request: Any) -> tuple[Any, ApiError | None]:
    """The engine's answer to one call, or the error its caller gets."""
    try:
        return call(request), None
    except ApiError as error:
        return None, error
    except Exception:
        # A bug must not take the server down; the caller sees INTERNAL.
        log.exception("%s failed", name)
        return None, ApiError(grpc.StatusCode.INTERNAL, f"{name} failed inside the emulator")


def answer(table: list[Method], kind: int, payload: bytes) -> tuple[int, bytes]:
    """Runs one call passed on by the front process: (status code, response or message)."""
    if not 0 <= kind < len(table):
        return grpc.StatusCode.UNIMPLEMENTED.value[0], b"unknown method"
    request_type, _, call = table[kind]
    try:
        request = request_type.FromString(payload)
    except DecodeError:
        return grpc.StatusCode.INVALID_ARGUMENT.value[0], b"the request could not be parsed"
    response, error = _run(METHODS[kind], call, request)
    if error is not None:
        return error.code.value[0], error.message.encode()
    return 0, response.SerializeToString()


def _unary(
    name: str, call: Callable[[Any], Any]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        response, error = _run(name, call, request)
        if error is not None:
            await context.abort(error.code, error.message)
        return response

    return handle


def generic_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """Every implemented method; others (IAM, CMEK, batch) answer UNIMPLEMENTED."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _unary(name, call),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        for name, (request_type, response_type, call) in _methods(engine).items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)
