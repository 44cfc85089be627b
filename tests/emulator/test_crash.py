"""A crash loses nothing: the emulator is killed (SIGKILL, no chance to write anything
more) in the middle of a burst of due, delayed and retrying tasks, restarted on the same
data directory, and every task whose CreateTask had returned is delivered, none before
its time, with the counts it had."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from .conftest import PARENT, client_for, start_cli

pytestmark = pytest.mark.process

CREATORS = 4
BURST_SECONDS = 1.5
DELAY_SECONDS = 2.0  # delayed tasks are due after the restart
FAILURES = 2  # a retrying task fails its first attempts
MIN_BACKOFF = 0.3
# Arrival is stamped by the target after the request crossed a socket; the ETA header
# is the emulator's own clock: the same machine, so only rounding separates them.
CLOCK_SLACK = 0.005
DELIVERY_TIMEOUT = 60.0


@dataclass
class Arrival:
    at: float
    eta: float
    retry_count: int
    status: int


@dataclass
class Recorder:
    """The worker: ``due-*`` tasks answer 200 after 50 ms (so attempts are in flight at
    the kill), ``retry-*`` answer 500 to their first attempts, the rest 200 at once."""

    arrivals: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, at: float, task: str, eta: float, retry_count: int) -> int:
        with self.lock:
            seen = self.arrivals[task]
            status = 500 if task.startswith("retry-") and len(seen) < FAILURES else 200
            seen.append(Arrival(at, eta, retry_count, status))
        return status


def _serve(recorder: Recorder) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            at = time.time()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            task = self.headers["X-CloudTasks-TaskName"]
            if task.startswith("due-"):
                time.sleep(0.05)
            status = recorder.reply(
                at,
                task,
                float(self.headers["X-CloudTasks-TaskETA"]),
                int(self.headers["X-CloudTasks-TaskRetryCount"]),
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the restart opens up to 100 connections at once

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def _address(ready: str) -> str:
    assert ready.startswith("tasks_emulator ready"), ready
    return ready.split("gRPC ", 1)[1].split(",", 1)[0]


def _crash_queue(client: tasks_v2.CloudTasksClient, queue: str) -> None:
    """A fast queue that retries every failure, without end, within a second."""
    client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=queue,
            rate_limits={"max_dispatches_per_second": 500, "max_concurrent_dispatches": 100},
            retry_config={
                "max_attempts": -1,
                "min_backoff": duration_pb2.Duration(nanos=int(MIN_BACKOFF * 1e9)),
                "max_backoff": duration_pb2.Duration(seconds=1),
            },
        ),
    )


class _Burst:
    """Creator threads making due, delayed and failing-then-retried tasks until stopped,
    keeping each acknowledged task's id with the schedule time it asked for."""

    def __init__(self, client: tasks_v2.CloudTasksClient, queue: str, url: str) -> None:
        self.client, self.queue, self.url = client, queue, url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, float | None] = {}
        self.threads = [threading.Thread(target=self._create, args=(i,)) for i in range(CREATORS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _create(self, creator: int) -> None:
        for index in range(1_000_000):
            if self.stop.is_set():
                return
            kind = ("due", "delayed", "retry")[index % 3]
            task_id = f"{kind}-{creator}-{index}"
            when = time.time() + DELAY_SECONDS if kind == "delayed" else None
            task = tasks_v2.Task(
                name=f"{self.queue}/tasks/{task_id}", http_request={"url": self.url}
            )
            if when is not None:
                task.schedule_time = timestamp_pb2.Timestamp(
                    seconds=int(when), nanos=int(when % 1 * 1e9)
                )
            try:
                self.client.create_task(parent=self.queue, task=task, timeout=10, retry=None)
            except exceptions.GoogleAPICallError:
                return  # the emulator is gone
            with self.lock:
                self.acked[task_id] = when


def _wait_done(recorder: Recorder, wanted: set[str]) -> set[str]:
    """The tasks that got a 200, once every wanted one has or the delivery timeout ends."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        with recorder.lock:
            done = {t for t, seen in recorder.arrivals.items() if seen[-1].status == 200}
        if wanted <= done or time.monotonic() >= deadline:
            return done
        time.sleep(0.2)


def _assert_none_early(
    arrivals: dict[str, list[Any]], acked: dict[str, float | None], restart_at: float
) -> None:
    """No attempt before its schedule time or the time the task asked for; a schedule time
    seen twice only across the crash (an outcome that never reached the disk); otherwise
    each retry at least the minimum backoff after the attempt before."""
    for task, seen in arrivals.items():
        asked = acked.get(task)
        for number, arrival in enumerate(seen):
            assert arrival.at >= arrival.eta - CLOCK_SLACK, (task, number, arrival)
            if asked is not None:
                assert arrival.at >= asked - CLOCK_SLACK, (task, "before its schedule time")
        for earlier, later in pairwise(seen):
            if later.eta == earlier.eta:
                assert earlier.at < restart_at < later.at, (task, earlier, later)
            else:
                assert later.eta >= earlier.at + MIN_BACKOFF - CLOCK_SLACK, (task, seen)


def test_a_killed_emulator_restarted_on_its_directory_loses_nothing_and_sends_nothing_early(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    server = _serve(recorder)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    directory = str(tmp_path / "state")
    queue = f"{PARENT}/queues/crash"
    process, ready = start_cli("--data-dir", directory, "--log-level", "warning")
    restarted = None
    try:
        client = client_for(_address(ready))
        _crash_queue(client, queue)
        burst = _Burst(client, queue, url)
        burst.start()
        time.sleep(BURST_SECONDS)
        os.kill(process.pid, signal.SIGKILL)
        burst.join()
        process.communicate(timeout=30)
        client.transport.close()
        acked = dict(burst.acked)
        with recorder.lock:
            before = {task: len(seen) for task, seen in recorder.arrivals.items()}
        assert len(acked) > 300, f"only {len(acked)} tasks created before the kill"
        assert any(task.startswith("retry-") and n >= 2 for task, n in before.items())

        # Requests the killed emulator had written may still be read after the kill; none
        # can arrive after this.
        restart_at = time.time()
        restarted, ready = start_cli("--data-dir", directory, "--log-level", "warning")
        client = client_for(_address(ready))
        done = _wait_done(recorder, set(acked))
        client.transport.close()
    finally:
        for running in (process, restarted):
            if running is not None and running.poll() is None:
                running.terminate()
                running.communicate(timeout=30)
        server.shutdown()
        server.server_close()

    lost = sorted(set(acked) - done)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged tasks never done: {lost[:10]}"
    with recorder.lock:
        arrivals = dict(recorder.arrivals)
    _assert_none_early(arrivals, acked, restart_at)
