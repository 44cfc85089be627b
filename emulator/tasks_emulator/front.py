"""The emulator's gRPC front: a process of its own that serves the CloudTasks API on
``host:port`` and hands every call, still serialized, to the engine over the link its
parent gave it (``--link-fd``). Parsing HTTP/2 and running gRPC's per-call machinery
takes more than half the work of a created task; in a second process it no longer
competes with the engine and the HTTP deliveries for one interpreter.

It stops when the engine closes the link (or on SIGTERM); Ctrl-C is left to the engine,
which stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import grpc

from .link import FAILED, MAX_PAYLOAD, METHODS, OVERSIZED, READY, SERVICE, Link, pack_request
from .loop import run

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Front:
    def __init__(self) -> None:
        self.link: Link | None = None
        self.pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.ids = itertools.count(1)
        self.stopped = asyncio.Event()

    def on_frame(self, call_id: int, kind: int, payload: bytes) -> None:
        future = self.pending.pop(call_id, None)
        if future is not None and not future.done():
            if kind == OVERSIZED:
                kind = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                payload = (
                    f"The response is larger than the {MAX_PAYLOAD} bytes the emulator can "
                    "pass on; ask for smaller pages."
                ).encode()
            future.set_result((kind, payload))

    def on_close(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result((grpc.StatusCode.UNAVAILABLE.value[0], b"emulator stopped"))
        self.pending.clear()
        self.stopped.set()

    def handler(
        self, index: int
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes | None]]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes | None:
            link = self.link
            if link is None or self.stopped.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "emulator stopped")
            assert link is not None
            packed = pack_request(authorization_of(context), request)
            if len(packed) > MAX_PAYLOAD:
                # Never sent: the engine would only drop it; this call alone fails.
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"The request ({len(request)} bytes) is larger than the {MAX_PAYLOAD} "
                    "bytes the emulator can pass on.",
                )
            call_id = next(self.ids) & 0xFFFFFFFF
            future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            self.pending[call_id] = future
            link.send(call_id, index, packed)
            code, payload = await future
            if code:
                await context.abort(_CODES[code], payload.decode("utf-8", "replace"))
            return payload

        return handle


def authorization_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's ``authorization`` metadata, as an HTTP Authorization header."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


async def start_grpc_server(
    host: str, port: int, handler: grpc.GenericRpcHandler
) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server with ``handler`` on ``host:port`` (0: a free port), and the
    port it listens on; OSError when it cannot listen there."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # newer grpc raises where older returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} (gRPC)")
    await server.start()
    return server, bound


async def serve(host: str, port: int, link_fd: int) -> int:
    loop = asyncio.get_running_loop()
    front = Front()
    _, link = await loop.create_connection(
        lambda: Link(front.on_frame, front.on_close), sock=socket.socket(fileno=link_fd)
    )
    front.link = link
    loop.add_signal_handler(signal.SIGTERM, front.stopped.set)
    # Bytes in, bytes out: the engine parses and serializes.
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(front.handler(index))
        for index, name in enumerate(METHODS)
    }
    try:
        server, bound = await start_grpc_server(
            host, port, grpc.method_handlers_generic_handler(SERVICE, handlers)
        )
    except OSError as error:
        link.send(0, FAILED, str(error).encode())
        await asyncio.sleep(0.1)  # let the frame go out
        link.close()
        return 1
    link.send(0, READY, str(bound).encode())
    await front.stopped.wait()
    await server.stop(grace=0.5)
    link.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks_emulator.front")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--link-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when to stop
    return run(serve(args.host, args.port, args.link_fd))


if __name__ == "__main__":
    sys.exit(main())
