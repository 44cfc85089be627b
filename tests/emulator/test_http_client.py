"""The emulator's HTTP/1.1 client against servers that answer in the less common ways:
chunked bodies, bodies ended by close, keep-alive connections closed while idle, and
answers that are not HTTP at all."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from google.api_core import exceptions

from .conftest import Harness


class RawServer:
    """Answers each request with fixed bytes; optionally closes after each answer."""

    def __init__(self, answer: bytes, close_after: bool) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests += 1
                conn.sendall(self.answer)
                if self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_servers() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for server in servers:
        server.close()


def _run(harness: Harness, url: str, tasks: int = 2) -> list[str]:
    queue = harness.queue(
        "jobs",
        rate_limits={"max_concurrent_dispatches": 1},
        retry_config={"max_attempts": 1},
    )
    names = [harness.task(queue, url).name for _ in range(tasks)]
    harness.advance(1)
    return names


@pytest.mark.parametrize(
    ("answer", "close_after"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),  # idle connection closed
        (b"HTTP/1.0 200 OK\r\n\r\nbody until close", True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False),
    ],
)
def test_successful_answers(
    harness: Harness, raw_servers: list[RawServer], answer: bytes, close_after: bool
) -> None:
    """Every well-formed 2xx answer completes its task, connections reused or not."""
    server = RawServer(answer, close_after)
    raw_servers.append(server)
    names = _run(harness, server.url)
    assert server.requests == 2
    for name in names:
        with pytest.raises(exceptions.NotFound, match="no longer exists"):
            harness.client.get_task(name=name)


def test_not_http_is_a_failed_attempt(harness: Harness, raw_servers: list[RawServer]) -> None:
    """An answer that is not HTTP fails the attempt; the emulator carries on."""
    server = RawServer(b"SSH-2.0-OpenSSH\r\n\r\n", False)
    raw_servers.append(server)
    queue = harness.queue("jobs", retry_config={"max_attempts": 2, "min_backoff": {"seconds": 1}})
    task = harness.task(queue, server.url)
    harness.advance(0.5)
    info = harness.client.get_task(name=task.name)
    assert info.dispatch_count == 1
    assert info.response_count == 0
    assert "ProtocolError" in info.last_attempt.response_status.message
    assert harness.client.get_queue(name=queue).name == queue
