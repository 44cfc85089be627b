"""Idle and slow clients against a service under gunicorn on 127.0.0.1, and the time
``/healthz`` takes to answer meanwhile. Shared by the robustness tests and the services'
benchmark."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
START_TIMEOUT_SECONDS = 60.0

# What each kind of client sends when it connects, then drips every DRIP_SECONDS.
ATTACKS: dict[str, tuple[bytes, bytes]] = {
    # Connects and says nothing.
    "idle": (b"", b""),
    # Slow loris: a request head that never ends, one header line at a time.
    "slow-head": (b"POST /tasks HTTP/1.1\r\nHost: attacker\r\n", b"X-Drip: 1\r\n"),
    # A whole head announcing a body that then comes one byte at a time.
    "slow-body": (
        b"POST /tasks HTTP/1.1\r\nHost: attacker\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n",
        b" ",
    ),
}
DRIP_SECONDS = 0.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def healthz_seconds(port: int, timeout: float = 30.0) -> float:
    """Seconds until GET /healthz on a new connection answers 200 (``timeout`` if never)."""
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        connection.close()
    except OSError:
        return timeout
    if response.status != 200:
        raise AssertionError(f"/healthz answered {response.status}")
    return time.monotonic() - started


def _wait_ready(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the service exited with {service.process.returncode}")
        try:
            if healthz_seconds(service.port, timeout=1.0) < 1.0:
                return
        except AssertionError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"no 200 from /healthz within {START_TIMEOUT_SECONDS} s")


@contextmanager
def running(
    package: str, env: Mapping[str, str], gunicorn_args: str = "", log: Path | None = None
) -> Iterator[Service]:
    """``package`` under gunicorn with its own config, as in its container, on 127.0.0.1.

    ``gunicorn_args`` (GUNICORN_CMD_ARGS) overrides the config, e.g. ``-k gthread``.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "app"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **env,
    }
    if gunicorn_args:
        full_env["GUNICORN_CMD_ARGS"] = gunicorn_args
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [GUNICORN, "-c", f"python:{package}.gunicorn_conf", f"{package}:create_app()"],
        env=full_env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    service = Service(process, port)
    try:
        _wait_ready(service)
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None and not isinstance(output, int):
            output.close()


@contextmanager
def attacking(port: int, kind: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections of ``kind`` (see ATTACKS), held (and dripping) until exit."""
    opening, drip = ATTACKS[kind]
    sockets = []
    stop = threading.Event()
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            if opening:
                client.sendall(opening)
            sockets.append(client)

        def dripping() -> None:
            while not stop.wait(DRIP_SECONDS):
                for client in sockets:
                    with suppress(OSError):
                        client.sendall(drip)

        if drip:
            threading.Thread(target=dripping, daemon=True).start()
        # Let the server accept them all before anyone measures.
        time.sleep(0.2)
        yield sockets
    finally:
        stop.set()
        for client in sockets:
            client.close()
