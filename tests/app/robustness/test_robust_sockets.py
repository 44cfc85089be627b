"""Idle, slow and unusual clients against both services running under gunicorn on
127.0.0.1, as in their containers: none of them holds the request threads, and genuine
requests of every shape are still served.

Each service runs with 2 request threads, so 8 hostile connections are four times what it
would take to starve it. The bounds are generous (a starved service answered after 5 s or
never); the figures themselves are in bench/bench_services.py.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from fake_cloud_tasks import FakeCloudTasks
from service_common.gunicorn_worker import REQUEST_RECEIVE_TIMEOUT_SECONDS
from services_support import QUEUE
from socket_attacks import Service, attacking, healthz_seconds, running

pytestmark = pytest.mark.process

THREADS = "2"
HOSTILE_CONNECTIONS = 8
# Far below the 5 s an idle connection held a stock gthread thread, and the forever of a
# slow one, yet loose enough for a loaded 2-core machine.
HEALTHZ_BOUND_SECONDS = 2.0


@pytest.fixture(scope="module")
def worker_service() -> Iterator[Service]:
    env = {
        "OIDC_SERVICE_ACCOUNT": "",
        "DISPATCH_DEADLINE_SECONDS": "60",
        "GUNICORN_THREADS": THREADS,
    }
    with running("worker", env) as service:
        yield service


@pytest.fixture(scope="module")
def task_app_service(fake_server: FakeCloudTasks) -> Iterator[Service]:
    env = {
        "QUEUE": QUEUE,
        "WORKER_URL": "https://worker-abc123-ew.a.run.app",
        "OIDC_SERVICE_ACCOUNT": "",
        "SECRET_KEY": "robustness",
        "CLOUD_TASKS_API_ENDPOINT": fake_server.url,
        "GUNICORN_THREADS": THREADS,
    }
    with running("task_app", env) as service:
        yield service


@pytest.fixture(params=["worker", "task-app"])
def service(request: pytest.FixtureRequest) -> Service:
    name = "worker_service" if request.param == "worker" else "task_app_service"
    running_service: Service = request.getfixturevalue(name)
    return running_service


@pytest.mark.parametrize("kind", ["idle", "slow-head", "slow-body"])
def test_hostile_connections_do_not_hold_the_threads(service: Service, kind: str) -> None:
    """With 8 connections that say nothing, or send their head or body a byte at a time,
    /healthz keeps answering at once, again and again over two seconds."""
    with attacking(service.port, kind, HOSTILE_CONNECTIONS):
        times = []
        for _ in range(4):
            times.append(healthz_seconds(service.port, timeout=10))
            time.sleep(0.5)

    assert max(times) < HEALTHZ_BOUND_SECONDS, times


def test_many_idle_connections_do_not_hold_the_threads(worker_service: Service) -> None:
    """200 idle connections (what took /healthz away for 10 s before) cost no thread."""
    with attacking(worker_service.port, "idle", 200):
        seconds = healthz_seconds(worker_service.port, timeout=10)

    assert seconds < HEALTHZ_BOUND_SECONDS


def test_a_request_never_completed_is_closed_by_its_deadline(worker_service: Service) -> None:
    """A slow-loris connection is dropped once the receive deadline has passed, with no
    answer (it never finished asking)."""
    with socket.create_connection(("127.0.0.1", worker_service.port)) as client:
        client.sendall(b"POST /tasks HTTP/1.1\r\nHost: x\r\n")
        client.settimeout(REQUEST_RECEIVE_TIMEOUT_SECONDS + 10)
        started = time.monotonic()
        received = client.recv(1024)
        waited = time.monotonic() - started

    assert received == b""
    assert REQUEST_RECEIVE_TIMEOUT_SECONDS - 1 <= waited < REQUEST_RECEIVE_TIMEOUT_SECONDS + 5


def _raw(port: int, data: bytes, answers: int = 1) -> list[bytes]:
    """Send ``data`` as it is and read ``answers`` HTTP answers (status lines)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(data)
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 ") < answers and time.monotonic() < deadline:
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r\n]*", received)


def _chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_genuine_requests_of_every_shape_are_served(worker_service: Service) -> None:
    """Content-Length, chunked, Expect: 100-continue, pipelined and kept-alive requests all
    reach the worker whole."""
    body = json.dumps({"message": "x" * 300_000}).encode()
    head = b"POST /tasks HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
    sized = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n"

    assert _raw(worker_service.port, sized) == [b"HTTP/1.1 200 OK"]
    assert _raw(worker_service.port, chunked) == [b"HTTP/1.1 200 OK"]
    assert _raw(worker_service.port, healthz * 3 + sized, answers=4) == [b"HTTP/1.1 200 OK"] * 4

    connection = http.client.HTTPConnection("127.0.0.1", worker_service.port, timeout=10)
    for _ in range(3):
        connection.request(
            "POST",
            "/tasks",
            body=body,
            headers={"Content-Type": "application/json", "Expect": "100-continue"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["acknowledged"] is True
    connection.close()


def test_a_request_split_across_pauses_is_served(worker_service: Service) -> None:
    """A head and body that arrive in pieces within the deadline are one request."""
    body = json.dumps({"message": "in pieces"}).encode()
    pieces = [
        b"POST /tasks HTTP/1.1\r\nHost: w\r\n",
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
        b"\r\n" + body[:5],
        body[5:],
    ]
    with socket.create_connection(("127.0.0.1", worker_service.port), timeout=10) as client:
        for piece in pieces:
            client.sendall(piece)
            time.sleep(0.2)
        answer = client.recv(65536)

    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_a_streamed_body_over_the_limit_is_413_through_the_server(
    task_app_service: Service, fake_tasks: FakeCloudTasks
) -> None:
    """A real chunked request over 64 KiB is refused as too large, never cut and called
    invalid JSON."""
    body = json.dumps({"message": "x" * 70_000}).encode()
    request = (
        b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body)
    )

    assert _raw(task_app_service.port, request) == [b"HTTP/1.1 413 REQUEST ENTITY TOO LARGE"]
    assert fake_tasks.create_requests == []


def test_deep_json_is_acknowledged_through_the_server(worker_service: Service) -> None:
    """Through gunicorn too: a payload nested 10,000 deep is acknowledged, not a 500."""
    body = b"[" * 10_000 + b"]" * 10_000
    connection = http.client.HTTPConnection("127.0.0.1", worker_service.port, timeout=10)
    connection.request("POST", "/tasks", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()

    assert response.status == 200
    assert json.loads(response.read())["acknowledged"] is True
    connection.close()


def test_idle_connections_do_not_hold_a_stopping_service() -> None:
    """On SIGTERM, connections that never sent a request are dropped after a short linger,
    so the process exits well within Cloud Run's 10 s, not at the 8 s graceful timeout."""
    env = {
        "OIDC_SERVICE_ACCOUNT": "",
        "DISPATCH_DEADLINE_SECONDS": "60",
        "GUNICORN_THREADS": THREADS,
    }
    with running("worker", env) as service, attacking(service.port, "idle", HOSTILE_CONNECTIONS):
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=30)
        stopped_after = time.monotonic() - started

    assert stopped_after < 5, stopped_after
