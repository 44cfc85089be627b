"""The link between the emulator's engine and its gRPC front process: length-prefixed
frames over one stream socket (a socketpair, so no port or path is involved).

A frame is ``length (4 bytes) | call id (4) | kind (1) | payload``. The front sends a
request as kind = the method's index in ``METHODS`` with the serialized request as
payload; the engine answers with kind = the gRPC status code (0 = OK) and the serialized
response, or the error message. A request's payload starts with the caller's
Authorization (``pack_request``). The front announces itself with ``READY``
(payload: the port it listens on) or ``FAILED`` (payload: why). Frames written in one
pass of the event loop go out in one write.

A frame larger than ``MAX_FRAME`` is never held: its bytes are dropped as they arrive and
the receiver gets ``(call id, OVERSIZED, b"")`` so that it answers that call with an
error. The link stays open: one oversized answer must not take the emulator down.

This module imports nothing heavy: the front process loads only grpc and this.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

SERVICE = "google.cloud.tasks.v2.CloudTasks"
# The CloudTasks methods the emulator implements, in a fixed order (the frame's kind).
METHODS = (
    "CreateQueue", "GetQueue", "ListQueues", "UpdateQueue", "DeleteQueue", "PurgeQueue",
    "PauseQueue", "ResumeQueue", "CreateTask", "GetTask", "ListTasks", "DeleteTask", "RunTask",
    "GetIamPolicy", "SetIamPolicy", "TestIamPermissions",
)  # fmt: skip
OVERSIZED = 253
READY = 254
FAILED = 255
_HEAD = struct.Struct("!IIB")
_AUTH_LENGTH = struct.Struct("!H")
MAX_FRAME = 64 * 1024 * 1024
MAX_PAYLOAD = MAX_FRAME - 5  # a frame's length counts its call id and kind

FrameHandler = Callable[[int, int, bytes], None]


def pack_request(authorization: str, request: bytes) -> bytes:
    """A request as the front passes it on: the caller's Authorization, then the message."""
    auth = authorization.encode("latin-1", "replace")[:0xFFFF]
    return _AUTH_LENGTH.pack(len(auth)) + auth + request


def unpack_request(payload: bytes) -> tuple[str, bytes]:
    if len(payload) < _AUTH_LENGTH.size:
        raise ValueError("no authorization length")
    (length,) = _AUTH_LENGTH.unpack_from(payload)
    end = _AUTH_LENGTH.size + length
    if len(payload) < end:
        raise ValueError("truncated authorization")
    return payload[_AUTH_LENGTH.size : end].decode("latin-1"), payload[end:]


class Link(asyncio.Protocol):
    """One end of the link: ``on_frame(call_id, kind, payload)`` for each frame received,
    ``on_close()`` once when the other end is gone."""

    def __init__(self, on_frame: FrameHandler, on_close: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.on_close = on_close
        self.transport: asyncio.WriteTransport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._closed = False
        self._skip = 0  # bytes of an oversized frame still to drop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._closed = True
            self.on_close()

    def data_received(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEAD.size:
            length, call_id, kind = _HEAD.unpack_from(buffer, start)
            end = start + 4 + length
            if length > MAX_FRAME:
                self._skip = max(0, end - len(buffer))
                start = min(end, len(buffer))
                self.on_frame(call_id, OVERSIZED, b"")
                continue
            if len(buffer) < end:
                break
            payload = bytes(buffer[start + _HEAD.size : end])
            start = end
            self.on_frame(call_id, kind, payload)
        del buffer[:start]

    def send(self, call_id: int, kind: int, payload: bytes) -> None:
        if self._closed or self.transport is None:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(_HEAD.pack(len(payload) + 5, call_id, kind))
        self._out.append(payload)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self._closed:
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
