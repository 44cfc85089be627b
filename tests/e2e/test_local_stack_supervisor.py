"""The local runner's process handling, with small stand-in processes instead of the real
parts: start order and readiness, one prefixed log stream, a dying part named, and a stop
that leaves no process behind (grandchildren and SIGTERM-ignoring ones included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from local_stack.plan import Part
from local_stack.supervisor import STACK, LocalStack, StartupError, StopRequested
from tests.e2e.harness import alive

# A part that serves 200 on every path, says so, and, with --child-ignoring-term, starts
# a child that ignores SIGTERM (as a stuck worker process would) and prints its pid.
SERVER = """
import http.server, signal, subprocess, sys
port = int(sys.argv[1])
if "--child-ignoring-term" in sys.argv:
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    print("child", child.pid, flush=True)
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        print("request", self.path, flush=True)
print("serving on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_part(name: str, *flags: str) -> Part:
    port = free_port()
    return Part(
        name=name,
        argv=(sys.executable, "-c", SERVER, str(port), *flags),
        env={},
        health_url=f"http://127.0.0.1:{port}/healthz",
        url=f"http://127.0.0.1:{port}",
    )


def command_part(name: str, code: str) -> Part:
    return Part(
        name=name,
        argv=(sys.executable, "-c", code),
        env={},
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
        url="-",
    )


class Lines:
    """Thread-safe record of (part, line)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, part: str, line: str) -> None:
        with self.lock:
            self.items.append((part, line))

    def of(self, part: str) -> list[str]:
        with self.lock:
            return [line for name, line in self.items if name == part]


def test_parts_start_together_stream_under_their_names_and_stop_completely() -> None:
    """start() returns once every part is ready, each part's output arrives under its own
    name with a status line per part, and stop() ends every process."""
    lines = Lines()
    first = server_part("first")
    second = server_part("second")
    stack = LocalStack({"second": second, "first": first}, lines, grace=5)
    try:
        stack.start()
        ready = [line for line in lines.of(STACK) if " ready in " in line]
        assert sorted(line.split()[0] for line in ready) == ["first", "second"]
        assert any(line.startswith("serving on") for line in lines.of("first"))
        assert any(line.startswith("serving on") for line in lines.of("second"))
        assert lines.of("first") != lines.of("second")
        pids = [process.pid for process in stack.processes.values()]
    finally:
        stack.stop()
    assert not any(alive(pid) for pid in pids)
    assert sum(" stopped (exit code " in line for line in lines.of(STACK)) == 2


def test_stop_kills_what_ignores_sigterm_after_the_grace_period_children_included() -> None:
    """No orphan: a part that ignores SIGTERM and a child it started (its own process,
    also ignoring SIGTERM) are both killed once the grace period has passed."""
    lines = Lines()
    part = server_part("stubborn", "--ignore-term", "--child-ignoring-term")
    stack = LocalStack({"stubborn": part}, lines, grace=1.0)
    stack.start()
    child = int(next(line.split()[1] for line in lines.of("stubborn") if line.startswith("child")))
    parent = stack.processes["stubborn"].pid
    assert alive(child)
    started = time.monotonic()
    stack.stop()
    took = time.monotonic() - started
    assert 1.0 <= took < 4.0, f"stop took {took:.2f} s with a 1 s grace period"
    deadline = time.monotonic() + 2
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(parent)
    assert not alive(child), "the part's child outlived the stop"
    assert any("still running: killing it" in line for line in lines.of(STACK))


def test_a_part_that_exits_is_named_and_wait_reports_failure() -> None:
    """If any part dies while running, the runner says which one and wait() returns
    non-zero, so the CLI stops the rest and exits non-zero."""
    lines = Lines()
    steady = server_part("steady")
    doomed = server_part("doomed")
    stack = LocalStack({"steady": steady, "doomed": doomed}, lines, grace=5)
    try:
        stack.start()
        os.kill(stack.processes["doomed"].pid, signal.SIGKILL)
        assert stack.wait() == 1
        assert stack.failed_part == "doomed"
        assert any(line.startswith("doomed exited with code -9") for line in lines.of(STACK))
    finally:
        stack.stop()
    assert stack.processes["steady"].returncode is not None


def test_a_part_that_dies_while_starting_is_named_in_the_error() -> None:
    """A part that exits before it is ready fails the start with its name and exit code."""
    part = command_part("broken", "import sys; print('bad setting X'); sys.exit(3)")
    lines = Lines()
    stack = LocalStack({"broken": part}, lines, grace=1)
    with pytest.raises(StartupError, match=r"broken exited with code 3 before it was ready"):
        stack.start()
    stack.stop()
    assert lines.of("broken") == ["bad setting X"]


def test_a_part_that_never_gets_ready_times_out_naming_what_was_polled() -> None:
    """A part that runs but never answers its health URL fails the start after the startup
    timeout, naming the part and the URL, instead of hanging."""
    part = command_part("silent", "import time; time.sleep(60)")
    stack = LocalStack({"silent": part}, Lines(), startup_timeout=0.5, grace=1)
    with pytest.raises(StartupError, match=r"silent was not ready after 0.5 s \(http://127"):
        stack.start()
    stack.stop()
    assert stack.processes["silent"].returncode is not None


def test_a_stop_requested_while_starting_interrupts_the_start() -> None:
    """Ctrl-C during start-up (the handler calls request_stop) ends the wait at once, and
    the started part is stopped."""
    part = command_part("slow", "import time; time.sleep(60)")
    stack = LocalStack({"slow": part}, Lines(), startup_timeout=30, grace=1)
    threading.Timer(0.3, stack.request_stop).start()
    started = time.monotonic()
    with pytest.raises(StopRequested):
        stack.start()
    assert time.monotonic() - started < 3
    stack.stop()
    assert stack.processes["slow"].returncode is not None


SUPERVISOR = """
import sys, time
from local_stack.plan import Part
from local_stack.supervisor import LocalStack
part = Part(name="part", argv=(sys.executable, "-c", sys.argv[1], sys.argv[2]), env={},
            health_url=f"http://127.0.0.1:{sys.argv[2]}/", url="-")
stack = LocalStack({"part": part}, lambda name, line: None)
stack.start()
print(stack.processes["part"].pid, flush=True)
time.sleep(60)
"""


def test_a_part_does_not_outlive_a_supervisor_killed_outright() -> None:
    """No orphan even when the runner gets no chance to clean up (SIGKILL): each part
    asked the kernel for SIGTERM when its parent dies."""
    port = free_port()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert supervisor.stdout is not None
        part_pid = int(supervisor.stdout.readline())
        assert alive(part_pid)
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 5
        while alive(part_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(part_pid), "the part outlived its killed supervisor"
    finally:
        supervisor.kill()
        supervisor.wait()
        if supervisor.stdout is not None:
            supervisor.stdout.close()
