"""Helpers that run the real local system (emulator, worker, task-app) on free ports and
record what its parts print.

The system is started through the local runner's own classes (``local_stack``), exactly as
``make dev`` starts it, with one difference: every line the parts print is recorded here
with the moment it arrived, so tests can assert on what the worker logged and when.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import requests
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from local_stack.plan import EMULATOR, TASK_APP, WORKER, Part, Ports
from local_stack.queue import describe_queues
from local_stack.rendering import render_queues
from local_stack.supervisor import LocalStack, StartupError
from stack_settings import StackSettings

STACK_FILE = Path("Pulumi.dev.yaml")
T = TypeVar("T")


@functools.cache
def stack_queues(stack_file: Path = STACK_FILE) -> list[dict[str, Any]]:
    """The stack's queues with their IAM policies, as the runner hands them to the emulator
    (rendered once per test session)."""
    return [queue.to_api() for queue in render_queues(stack_file)]


def emulator_client(address: str) -> tasks_v2.CloudTasksClient:
    """The unmodified official client on an insecure gRPC channel to a local emulator."""
    channel = grpc.insecure_channel(address)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


@dataclass(frozen=True)
class Entry:
    """One line a part printed, with the monotonic time it arrived."""

    at: float
    part: str
    line: str
    record: dict[str, Any] | None


class StackLog:
    """Every line of every part, in arrival order; tests wait on it for what they expect."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._changed = threading.Condition()

    def __call__(self, part: str, line: str) -> None:
        record = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
        with self._changed:
            self.entries.append(Entry(time.monotonic(), part, line, record))
            self._changed.notify_all()

    def snapshot(self) -> list[Entry]:
        with self._changed:
            return list(self.entries)

    def wait_for(self, check: Callable[[list[Entry]], T | None], timeout: float, what: str) -> T:
        """Waits until check(entries) returns something other than None, and returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = check(list(self.entries))
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self._changed.wait(min(remaining, 0.2))

    def tail(self, count: int = 40) -> str:
        return "\n".join(f"{e.part} | {e.line}" for e in self.snapshot()[-count:])


@dataclass
class System:
    """A running local system and the ways a test reaches it."""

    settings: StackSettings
    ports: Ports
    plan: dict[str, Part]
    log: StackLog
    stack: LocalStack
    _client: tasks_v2.CloudTasksClient | None = field(default=None, init=False, repr=False)

    @property
    def task_app_url(self) -> str:
        return self.plan[TASK_APP].url

    @property
    def worker_url(self) -> str:
        return self.plan[WORKER].url

    def schedule(self, **body: Any) -> list[str]:
        """Schedules through the task-app's JSON API; returns the created task ids."""
        response = requests.post(f"{self.task_app_url}/tasks", json=body, timeout=30)
        assert response.status_code == 201, response.text
        ids: list[str] = response.json()["tasks"]
        return ids

    def client(self) -> tasks_v2.CloudTasksClient:
        """The official Cloud Tasks client, talking to the emulator (one per system)."""
        if self._client is None:
            self._client = emulator_client(f"127.0.0.1:{self.ports.emulator}")
        return self._client

    def worker_records(self, task_id: str, entries: list[Entry] | None = None) -> list[Entry]:
        """The worker's structured log lines about one task (one per attempt)."""
        entries = self.log.snapshot() if entries is None else entries
        return [e for e in entries if e.part == WORKER and is_task_line(e, task_id)]


def story(log: StackLog, task_id: str) -> str:
    """Every line of every part that mentions a task: what to read when a test fails."""
    return "\n".join(
        f"{entry.at:.3f} {entry.part} | {entry.line[:300]}"
        for entry in log.snapshot()
        if task_id in entry.line
    )


def is_task_line(entry: Entry, task_id: str) -> bool:
    """A worker line that records one attempt of the task ``task_id``: the worker logs one
    such line per delivery, with the X-CloudTasks-* headers under ``cloud_tasks``."""
    record = entry.record
    return record is not None and "task_message" in record and task_name(record) == task_id


def task_name(record: dict[str, Any]) -> str | None:
    """The task id a worker log record is about, when it is about one."""
    headers = record.get("cloud_tasks")
    if isinstance(headers, dict) and headers.get("task") is not None:
        return str(headers["task"])
    return None


def unique_id(label: str) -> str:
    """A caller-given task id no other test (or earlier run) uses."""
    return f"e2e-{label}-{uuid.uuid4().hex[:12]}"


def start_system(parts: dict[str, Part], log: StackLog, ports: Ports) -> LocalStack:
    """Starts the given parts (all three, or a subset) and waits until they are ready."""
    probes = {}
    if EMULATOR in parts:
        rest_url = f"http://127.0.0.1:{ports.rest}"
        names = [str(queue["name"]) for queue in stack_queues()]
        probes[EMULATOR] = lambda: describe_queues(rest_url, names)
    stack = LocalStack(parts, log, probes=probes, startup_timeout=60, grace=10)
    try:
        stack.start()
    except StartupError as error:
        stack.stop()
        raise AssertionError(f"{error}\n--- last lines ---\n{log.tail()}") from error
    return stack


def alive(pid: int) -> bool:
    """True while pid is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def group_alive(pgid: int) -> bool:
    """True while any live process is left in process group pgid."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            return True
    return False
