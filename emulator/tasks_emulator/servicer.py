"""The ``google.cloud.tasks.v2.CloudTasks`` gRPC service in this process, served from the
protobuf classes that ship with google-cloud-tasks (no generated stubs): each method is a
call on ``calls.Api`` with the caller's ``authorization`` metadata."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .calls import Api, Method
from .errors import ApiError
from .front import authorization_of
from .link import SERVICE


def _unary(api: Api, method: Method) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await api.call_durable(method, request, authorization_of(context))
        except ApiError as error:
            await context.abort(error.code, error.message)

    return handle


def generic_handler(api: Api) -> grpc.GenericRpcHandler:
    """Every implemented method; others (CMEK, batch) answer UNIMPLEMENTED."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _unary(api, method),
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
        for name, method in api.methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)
