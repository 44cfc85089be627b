"""gunicorn's threaded worker, giving a request thread only to a request that has arrived.

Stock ``gthread`` hands every new connection to a request thread, which waits up to 5 s for
its first byte and then reads the request head and body with no deadline at all: eight
idle connections hold all eight threads for 5 s each, and eight slow-loris connections
(a header line now and then) hold them for as long as they like, so ``/healthz`` and every
genuine request wait.

This worker keeps a connection in gunicorn's event loop (no thread) until its request has
arrived: the head, and the body too when its Content-Length is given and within
``MAX_BUFFERED_REQUEST_BYTES``, for at most ``REQUEST_RECEIVE_TIMEOUT_SECONDS`` from the
moment the connection starts waiting (accepted, or kept alive and readable again). Idle
and slow connections are closed there without ever costing a thread. What the loop holds
is bounded too: a head by ``MAX_BUFFERED_HEAD_BYTES``, all waiting requests together by
``MAX_BUFFERED_TOTAL_BYTES``; past either, the connection goes to a thread. A body the loop does
not wait for (chunked, after ``Expect: 100-continue``, or too large) is read by the
request thread under a deadline of the same length, so it too holds a thread for a bounded
time only. Plain HTTP/1.1 only, as Cloud Run hands it to the container (TLS and HTTP/2 end
at Google's front); the worker refuses to start with either turned on.

Each service's gunicorn_conf names it in ``worker_class``.
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

# From the moment a connection waits for a request until the request has been received
# (its head, and its body when the event loop waits for it), or, for a body left to the
# request thread, until that thread has read it.
REQUEST_RECEIVE_TIMEOUT_SECONDS = 10.0
# Each write of the answer; a client that stops reading does not hold a thread longer.
SEND_TIMEOUT_SECONDS = 30.0
# The event loop holds a request up to this size until it is whole (the worker's largest
# genuine body, a Cloud Tasks task, is 1 MiB); a larger one goes to a thread at once,
# where gunicorn's limits and the app's MAX_CONTENT_LENGTH refuse it.
MAX_BUFFERED_REQUEST_BYTES = 2 * 1024 * 1024
# A head not ended within this many bytes goes to a thread, whose parser refuses it (or
# reads the rest within the deadline): no client makes the loop hold more for its head.
MAX_BUFFERED_HEAD_BYTES = 64 * 1024
# What the loop holds for all waiting connections together; past it, a connection goes to
# a thread at once, so hostile clients cannot make the process hold more than this.
MAX_BUFFERED_TOTAL_BYTES = 32 * 1024 * 1024
RECV_BYTES = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*\r?$")


def _buffered_length(head: bytes) -> int | None:
    """Bytes of body the event loop waits for after this head: its Content-Length, or
    None when a request thread must read the body itself (chunked, Expect, anything odd;
    gunicorn's parser then judges the head)."""
    length = 0
    seen_length = False
    for line in head.split(b"\n")[1:]:
        match = _FIELD.match(line)
        if match is None:
            continue
        name, value = match[1].lower(), match[2]
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            if seen_length or not value.isdigit():
                return None
            seen_length, length = True, int(value)
    return length


def ready_for_a_thread(received: bytes | bytearray, buffered_elsewhere: int = 0) -> bool:
    """Whether a request thread may take the connection now: its request is whole, or the
    loop would hold too much for it (then the thread reads the rest within the deadline).

    ``buffered_elsewhere`` is what the loop holds for the other waiting connections.
    """
    if len(received) + buffered_elsewhere > MAX_BUFFERED_TOTAL_BYTES:
        return True
    end = _HEAD_END.search(received)
    if end is None:
        return len(received) >= MAX_BUFFERED_HEAD_BYTES
    length = _buffered_length(bytes(received[: end.start()]))
    if length is None:
        return True
    needed = end.end() + length
    return needed > MAX_BUFFERED_REQUEST_BYTES or needed <= len(received)


class _DeadlineSocket:
    """The connection's socket as the request parser reads it: each read ends by the
    request's deadline, and the socket is left with the send timeout for the answer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None

    def recv(self, size: int) -> bytes:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request was not received within its deadline")
            self._sock.settimeout(min(remaining, SEND_TIMEOUT_SECONDS))
        try:
            return self._sock.recv(size)
        finally:
            self._sock.settimeout(SEND_TIMEOUT_SECONDS)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """``gthread`` whose request threads never wait for a client to start or finish
    sending a request, but for a body it streams, and then for a bounded time."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.http2_cleartext != "off":
            raise RuntimeError(
                "BoundedThreadWorker serves plain HTTP/1.1 only: turn off TLS and HTTP/2 "
                "(Cloud Run ends both in front of the container)"
            )

    # ---- the event loop (main thread) -------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # TConn makes the socket non-blocking, as the event loop needs it.
        self._await_request(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection is sending its next request: wait for it here."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)

    def _await_request(self, conn: TConn) -> None:
        conn.head = bytearray()
        # The same timeout for every entry keeps pending_conns sorted, as murder_pending
        # (which closes the expired ones) expects.
        conn.timeout = time.monotonic() + REQUEST_RECEIVE_TIMEOUT_SECONDS
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _cap_keepalive(self, deadline: float) -> None:
        """A stopping worker keeps the connections still sending a request only as long
        as its kept-alive ones (gunicorn's short linger), not their whole receive timeout,
        so idle clients do not hold its exit to the graceful timeout."""
        super()._cap_keepalive(deadline)
        # The same cap on every entry keeps the deque sorted.
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, deadline)

    def _on_request_bytes(self, conn: TConn, client: socket.socket) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            conn.head.extend(data)
            others = sum(len(other.head) for other in self.pending_conns if other is not conn)
            if not ready_for_a_thread(conn.head, others):
                return
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        if not data:
            # Closed by the client before its request was whole.
            self.nr_conns -= 1
            conn.close()
            return
        conn.data_ready = True
        self.enqueue_req(conn)

    # ---- a request thread --------------------------------------------------------------

    def handle(self, conn: TConn) -> Any:
        if not conn.initialized:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.sock = _DeadlineSocket(conn.sock)
        head = getattr(conn, "head", None)
        if head:
            conn.parser.unreader.unread(bytes(head))
            conn.head = bytearray()
        conn.parser.unreader.sock.deadline = time.monotonic() + REQUEST_RECEIVE_TIMEOUT_SECONDS
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        # The head is parsed; the answer's writes get the send timeout from here on.
        conn.sock.settimeout(SEND_TIMEOUT_SECONDS)
        return super().handle_request(req, conn)


__all__ = ["BoundedThreadWorker"]
