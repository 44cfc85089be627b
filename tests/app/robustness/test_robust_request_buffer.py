"""When the services' gunicorn worker hands a connection to a request thread: only once
its request is whole, unless holding it would cost the event loop too much memory."""

from __future__ import annotations

import pytest
from service_common.gunicorn_worker import (
    MAX_BUFFERED_HEAD_BYTES,
    MAX_BUFFERED_REQUEST_BYTES,
    MAX_BUFFERED_TOTAL_BYTES,
    ready_for_a_thread,
)

HEAD = b"POST /tasks HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("received", "ready"),
    [
        (b"", False),
        (b"GET /healthz HTTP/1.1\r\nHost: w\r\n", False),
        (b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n", True),
        (b"GET /healthz HTTP/1.1\nHost: w\n\n", True),
        (HEAD + b"Content-Length: 5\r\n\r\n{}", False),
        (HEAD + b'Content-Length: 5\r\n\r\n{"a"}', True),
        (HEAD + b'content-length:5\r\n\r\n{"a"}', True),
        # Bodies the thread reads itself, within its deadline.
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n", True),
        (HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n", True),
        (HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n", True),
        (HEAD + b"Content-Length: -5\r\n\r\n", True),
        (HEAD + b"Content-Length: %d\r\n\r\n" % MAX_BUFFERED_REQUEST_BYTES, True),
        # A head that never ends is not held beyond its cap.
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_BUFFERED_HEAD_BYTES, True),
    ],
)
def test_a_connection_goes_to_a_thread_only_when_its_request_is_whole(
    received: bytes, ready: bool
) -> None:
    assert ready_for_a_thread(received) is ready


def test_the_loop_holds_a_bounded_total_for_all_connections() -> None:
    """A body still arriving is held while the loop's total stays under its cap; past it,
    the connection goes to a thread rather than the process holding more."""
    partial = HEAD + b"Content-Length: 1000000\r\n\r\n" + b" " * 1000

    assert not ready_for_a_thread(partial, buffered_elsewhere=0)
    assert ready_for_a_thread(partial, buffered_elsewhere=MAX_BUFFERED_TOTAL_BYTES)
