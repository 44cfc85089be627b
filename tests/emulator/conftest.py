"""Fixtures: an emulator on free ports (virtual or real clock), the official client on an
insecure channel to it or through its REST transport, and small HTTP servers standing in
for workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from tasks_emulator import EmulatorThread, VirtualClock

PARENT = "projects/test-project/locations/us-central1"
ROOT = Path(__file__).resolve().parents[2]
START = 1_800_000_000.0  # a fixed virtual start time, so ETAs are exact


@dataclass
class Received:
    """One request a target server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # the emulator clock's time when it arrived


Reply = tuple[int, dict[str, str]] | int


@dataclass
class Target:
    """A worker stand-in: answers each request with the next scripted reply (the last one
    repeats), records what it received, and may hang until released."""

    url: str
    received: list[Received] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=lambda: [200])
    hang: threading.Event | None = None
    clock_now: Callable[[], float] = time.time
    in_flight: int = 0
    max_in_flight: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self) -> list[int]:
        return [int(r.headers.get("X-Test-Status", "0")) for r in self.received]


def _start_target() -> tuple[Target, ThreadingHTTPServer]:
    target_ref: list[Target] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm
        # and delayed ACKs add 40 ms to every request.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            target = target_ref[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with target.lock:
                target.received.append(
                    Received(
                        self.command, self.path, dict(self.headers.items()), body,
                        target.clock_now(),
                    )
                )  # fmt: skip
                index = len(target.received) - 1
                reply = target.replies[min(index, len(target.replies) - 1)]
                target.in_flight += 1
                target.max_in_flight = max(target.max_in_flight, target.in_flight)
            try:
                if target.hang is not None:
                    target.hang.wait(30)
                if target.delay:
                    time.sleep(target.delay)
                status, headers = (reply, {}) if isinstance(reply, int) else reply
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the emulator gave up on this request (dispatch deadline)
            finally:
                with target.lock:
                    target.in_flight -= 1

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    target = Target(url=f"http://127.0.0.1:{server.server_address[1]}")
    target_ref.append(target)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return target, server


@pytest.fixture
def make_target() -> Iterator[Callable[[], Target]]:
    servers: list[ThreadingHTTPServer] = []
    targets: list[Target] = []

    def make() -> Target:
        target, server = _start_target()
        servers.append(server)
        targets.append(target)
        return target

    yield make
    for target in targets:
        if target.hang is not None:
            target.hang.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def client_for(address: str) -> tasks_v2.CloudTasksClient:
    channel = grpc.insecure_channel(address)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def rest_client_for(url: str, credentials: Any = None) -> tasks_v2.CloudTasksClient:
    """The official client's REST transport against the emulator's REST port."""
    return tasks_v2.CloudTasksClient(
        transport="rest",
        client_options={"api_endpoint": url},
        credentials=credentials or AnonymousCredentials(),
    )


def status_of(error: exceptions.GoogleAPICallError) -> tuple[str, str]:
    """(status name, the API's message) of a failed call, over either transport: over
    REST the client keeps only the HTTP status's class, so both come from the JSON body."""
    response = getattr(error, "response", None)
    if response is not None and hasattr(response, "json"):
        body = response.json()["error"]
        return body["status"], body["message"]
    assert error.grpc_status_code is not None
    return error.grpc_status_code.name, error.message


@contextmanager
def raises(status: str, match: str | None = None, exact: str | None = None) -> Iterator[None]:
    """The call inside fails with ``status``; its message contains ``match`` (a regex) or
    is ``exact``."""
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        yield
    got_status, message = status_of(caught.value)
    assert got_status == status, (got_status, message)
    if exact is not None:
        assert message == exact
    if match is not None:
        assert re.search(match, message), (match, message)


@dataclass
class Harness:
    """An emulator on a virtual clock, the official client, and helpers."""

    runner: EmulatorThread
    client: tasks_v2.CloudTasksClient
    clock: VirtualClock
    transport: str = "grpc"

    @property
    def emulator(self) -> Any:
        assert self.runner.emulator is not None
        return self.runner.emulator

    def advance(self, seconds: float) -> None:
        self.runner.advance(seconds)

    def queue(self, queue_id: str = "q", **config: Any) -> str:
        name = f"{PARENT}/queues/{queue_id}"
        self.client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **config))
        return name

    def task(self, queue: str, url: str, **fields: Any) -> tasks_v2.Task:
        http = {"url": url, **fields.pop("http", {})}
        return self.client.create_task(
            parent=queue, task=tasks_v2.Task(http_request=http, **fields)
        )


def virtual_harness(front_process: bool = False, transport: str = "grpc") -> Iterator[Harness]:
    """An emulator on a virtual clock and the official client, for a fixture to yield
    from; ``front_process`` puts its gRPC server in a child process, as the command line
    runs it; ``transport`` "rest" makes the client speak REST to it."""
    clock = VirtualClock(start=START)
    runner = EmulatorThread(
        host="127.0.0.1",
        port=0,
        keys_port=0,
        rest_port=0,
        clock=clock,
        front_process=front_process,
    )
    emulator = runner.start()
    if transport == "rest":
        client = rest_client_for(emulator.rest_url)
    else:
        client = client_for(emulator.address)
    try:
        yield Harness(runner, client, clock, transport)
    finally:
        client.transport.close()
        runner.stop()


@pytest.fixture
def harness(make_target: Callable[[], Target]) -> Iterator[Harness]:
    yield from virtual_harness()


@pytest.fixture
def target(make_target: Callable[[], Target], harness: Harness) -> Target:
    """A target whose arrival times are read on the harness's virtual clock."""
    made = make_target()
    made.clock_now = harness.clock.now
    return made


@pytest.fixture
def real_harness() -> Iterator[Harness]:
    """An emulator on the real clock (for OIDC tokens checked against the real time)."""
    runner = EmulatorThread(host="127.0.0.1", port=0, keys_port=0)
    emulator = runner.start()
    client = client_for(emulator.address)
    try:
        yield Harness(runner, client, VirtualClock())
    finally:
        client.transport.close()
        runner.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls ``condition`` (real-clock tests only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _state(args: tuple[str, ...]) -> tuple[str, ...]:
    """In memory unless the test names a data directory: never the user's own."""
    chosen = {"--data-dir", "--in-memory"} & {arg.split("=", 1)[0] for arg in args}
    return args if chosen else (*args, "--in-memory")


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m tasks_emulator`` on free ports: the process and its first line."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasks_emulator",
            "--port",
            "0",
            "--keys-port",
            "0",
            "--rest-port",
            "0",
            *_state(args),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    return process, process.stdout.readline()
