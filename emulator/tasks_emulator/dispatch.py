"""HTTP delivery of one attempt: the request goes out exactly as built, nothing followed.

A small HTTP/1.1 client on asyncio protocols, with keep-alive connections pooled per
origin: an attempt is one write and one parsed response, with no task or coroutine of its
own, which is what lets one process deliver thousands of tasks a second. Redirects are not
followed (a 3xx is a failed attempt), bodies are not decompressed, and no header is added
beyond Host and Content-Length: Cloud Tasks does not default Content-Type, so neither does
this client. The caller enforces deadlines by completing the returned future itself; the
connection is then closed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

Response = tuple[int, str | None]  # status, Retry-After header
_NO_BODY_STATUS = {204, 304}
_MAX_HEAD = 256 * 1024
# An idle connection is reused only this long: servers close idle keep-alive connections
# after a few seconds (gunicorn: 2 s), and a request written just as they do is lost. The
# client should be the side that gives up first. (Such a loss, with nothing received, is
# also sent again once on a fresh connection.)
IDLE_REUSE_SECONDS = 1.0
_BREAKS = re.compile(r"[\r\n]")


class ProtocolError(Exception):
    """The target answered something that is not HTTP/1.x."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, client: HttpClient, origin: tuple[str, str, int]) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[Response] | None = None
        self.buffer = bytearray()
        self.received = False
        self.reused = False
        self.retry: tuple[bytes, bool] | None = None
        self.head_request = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's TCP transport (the latter is not an asyncio.Transport
        # subclass, but has the same methods).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._discard(self)
        future = self.future
        self.future = None
        if future is None or future.done():
            return
        if self.buffer and self._read_until_close():
            status, retry_after = self._parsed_head
            future.set_result((status, retry_after))
            return
        if self.reused and not self.received and self.retry is not None:
            # The server closed an idle keep-alive connection just as it was reused:
            # nothing reached it, so the request goes again on a fresh connection.
            request, head = self.retry
            self.client._send_new(self.origin, request, head, future)
            return
        future.set_exception(exc or ConnectionResetError("connection closed before a response"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError) as error:
            self._fail(ProtocolError(str(error)))

    # -- requests ------------------------------------------------------------------

    def send(self, request: bytes, head: bool, future: asyncio.Future[Response]) -> None:
        assert self.transport is not None
        self.future = future
        self.received = False
        self.retry = (request, head)
        self.head_request = head
        self.buffer.clear()
        self._parsed_head: tuple[int, str | None] = (0, None)
        self._body_mode = ""
        future.add_done_callback(self._on_future_done)
        self.transport.write(request)

    def _on_future_done(self, future: asyncio.Future[Response]) -> None:
        if self.future is future:
            # Completed from outside (the dispatch deadline): the response, if it ever
            # comes, belongs to nobody, so this connection cannot be reused.
            self.future = None
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        future = self.future
        self.future = None
        self.close()
        if future is not None and not future.done():
            future.set_exception(error)

    def _complete(self, keep_alive: bool) -> None:
        future = self.future
        self.future = None
        del self.buffer[: self._consumed]
        if future is not None and not future.done():
            future.set_result(self._parsed_head)
        if keep_alive and not self.closed:
            self.client._release(self)
        else:
            self.close()

    def _parse(self) -> None:
        while self.future is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    raise ProtocolError("response head larger than 256 KiB")
                return
            version, status, headers = _parse_head(bytes(self.buffer[:end]))
            body_start = end + 4
            if 100 <= status < 200:
                del self.buffer[:body_start]  # 100 Continue and friends: the real one follows
                continue
            keep_alive = headers.get("connection", "").lower() != "close" and version != "HTTP/1.0"
            self._parsed_head = (status, headers.get("retry-after"))
            if self.head_request or status in _NO_BODY_STATUS:
                body_end: int | None = body_start
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                body_end = _chunked_end(self.buffer, body_start)
            elif "content-length" in headers:
                body_end = body_start + _content_length(headers["content-length"])
                if len(self.buffer) < body_end:
                    return
            else:
                self._body_mode = "until-close"
                return
            if body_end is None:
                return
            self._consumed = body_end
            self._complete(keep_alive)
            return

    def _read_until_close(self) -> bool:
        """A response without length ends when the server closes: complete it now."""
        return self._body_mode == "until-close"


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """A response head -> (HTTP version, status, headers with lower-case names)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], int(parts[1]), headers


def _content_length(value: str) -> int:
    if not value.isdigit():
        raise ProtocolError(f"not a Content-Length: {value[:40]!r}")
    return int(value)


def _chunked_end(buffer: bytearray, start: int) -> int | None:
    """Where a chunked body starting at ``start`` ends, or None if not all here yet."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0].strip() or b"0", 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            return None if trailer_end < 0 else trailer_end + 4
        if len(buffer) < position + size + 2:
            return None
        position += size + 2


class HttpClient:
    """Pooled HTTP/1.1 client for every queue. ``request`` returns a future of
    (status, Retry-After); deadlines are the caller's (it completes the future)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ssl = ssl.create_default_context()

    async def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._all):
            connection.close()
        self._idle.clear()

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> asyncio.Future[Response]:
        """Starts one request. Bad input (a header with a line break) fails the future."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        try:
            origin, request = _encode(method, url, headers, body)
        except (ValueError, UnicodeError) as error:
            future.set_exception(error)
            return future
        head = method == "HEAD"
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since > IDLE_REUSE_SECONDS:
                connection.close()
            elif not connection.closed:
                connection.reused = True
                connection.send(request, head, future)
                return future
        self._send_new(origin, request, head, future)
        return future

    def _send_new(
        self,
        origin: tuple[str, str, int],
        request: bytes,
        head: bool,
        future: asyncio.Future[Response],
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(origin, request, head, future))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(
        self,
        origin: tuple[str, str, int],
        request: bytes,
        head: bool,
        future: asyncio.Future[Response],
    ) -> None:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self, origin),
                host,
                port,
                ssl=self._ssl if scheme == "https" else None,
            )
        except (OSError, ssl.SSLError) as error:
            if not future.done():
                future.set_exception(error)
            return
        if future.done():  # the deadline passed while connecting
            connection.close()
            return
        self._all.add(connection)
        connection.send(request, head, future)

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)

    def _discard(self, connection: _Connection) -> None:
        self._all.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)


@lru_cache(maxsize=1024)
def _split_url(url: str) -> tuple[tuple[str, str, int], str, str]:
    """(scheme, host, port), Host header and request target of ``url`` (tasks of a queue
    mostly share one URL, so this is parsed once)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), host_header, target


def _encode(
    method: str, url: str, headers: Mapping[str, str], body: bytes
) -> tuple[tuple[str, str, int], bytes]:
    origin, host_header, target = _split_url(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    for name, value in headers.items():
        if _BREAKS.search(name) or _BREAKS.search(value) or ":" in name:
            raise ValueError(f"header {name!r} has a line break or colon where none may be")
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return origin, head + body
