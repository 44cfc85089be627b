"""A Cloud Tasks API on a local port: the real client talks gRPC to it, nothing is mocked.

The google-cloud-tasks package ships no gRPC servicer base, so this serves the two methods
task-app calls (CreateTask, ListTasks) through grpc's generic handlers, with the package's
own proto-plus types doing the (de)serialisation. It records every request and can be told
to fail a given call with a status code, or to answer late.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections import defaultdict
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.cloud import tasks_v2

SERVICE = "google.cloud.tasks.v2.CloudTasks"


@dataclass
class _Failure:
    code: grpc.StatusCode
    details: str


@dataclass
class _State:
    tasks: dict[str, tasks_v2.Task] = field(default_factory=dict)
    create_requests: list[tasks_v2.CreateTaskRequest] = field(default_factory=list)
    list_requests: list[tasks_v2.ListTasksRequest] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # method -> {call number: failure}; call number 0 means every call.
    failures: dict[str, dict[int, _Failure]] = field(default_factory=lambda: defaultdict(dict))
    delays: dict[str, float] = field(default_factory=dict)
    # The Authorization each call carried ("" for none), in call order.
    authorizations: list[str] = field(default_factory=list)
    next_id: int = 1


class FakeCloudTasks:
    """An in-process gRPC server speaking google.cloud.tasks.v2.CloudTasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State()
        self._server: grpc.Server | None = None
        self.address = ""

    # --- control -----------------------------------------------------------------------
    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                self._create_task,
                request_deserializer=tasks_v2.CreateTaskRequest.deserialize,
                response_serializer=tasks_v2.Task.serialize,
            ),
            "ListTasks": grpc.unary_unary_rpc_method_handler(
                self._list_tasks,
                request_deserializer=tasks_v2.ListTasksRequest.deserialize,
                response_serializer=tasks_v2.ListTasksResponse.serialize,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def fail(
        self, method: str, code: grpc.StatusCode, call: int = 0, details: str = "injected"
    ) -> None:
        """Make call number ``call`` (1-based, counted from the last reset) of ``method``
        fail with ``code``; ``call=0`` makes every call fail."""
        with self._lock:
            self._state.failures[method][call] = _Failure(code, details)

    def delay(self, method: str, seconds: float) -> None:
        """Answer every call of ``method`` only after ``seconds``."""
        with self._lock:
            self._state.delays[method] = seconds

    def add_task(self, task: tasks_v2.Task) -> None:
        """Put a task in the queue as if it had been created (and maybe attempted)."""
        with self._lock:
            self._state.tasks[task.name] = task

    @property
    def create_requests(self) -> list[tasks_v2.CreateTaskRequest]:
        with self._lock:
            return list(self._state.create_requests)

    @property
    def list_requests(self) -> list[tasks_v2.ListTasksRequest]:
        with self._lock:
            return list(self._state.list_requests)

    @property
    def authorizations(self) -> list[str]:
        with self._lock:
            return list(self._state.authorizations)

    @property
    def tasks(self) -> dict[str, tasks_v2.Task]:
        with self._lock:
            return dict(self._state.tasks)

    # --- service -----------------------------------------------------------------------
    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        with self._lock:
            self._state.authorizations.append(str(metadata.get("authorization", "")))
            self._state.calls[method] += 1
            number = self._state.calls[method]
            rules = self._state.failures.get(method, {})
            failure = rules.get(number) or rules.get(0)
            delay = self._state.delays.get(method, 0.0)
        if delay:
            time.sleep(delay)
        if failure is not None:
            context.abort(failure.code, failure.details)

    def _create_task(
        self, request: tasks_v2.CreateTaskRequest, context: grpc.ServicerContext
    ) -> tasks_v2.Task:
        with self._lock:
            self._state.create_requests.append(request)
        self._enter("CreateTask", context)
        now = datetime.datetime.now(datetime.UTC)
        task = tasks_v2.Task(request.task)
        with self._lock:
            if task.name:
                if task.name in self._state.tasks:
                    context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            else:
                task.name = f"{request.parent}/tasks/{self._state.next_id:020d}"
                self._state.next_id += 1
            task.create_time = now
            if "schedule_time" not in task:
                task.schedule_time = now
            self._state.tasks[task.name] = task
        return task

    def _list_tasks(
        self, request: tasks_v2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_v2.ListTasksResponse:
        with self._lock:
            self._state.list_requests.append(request)
        self._enter("ListTasks", context)
        with self._lock:
            tasks = [
                task
                for name, task in sorted(self._state.tasks.items())
                if name.startswith(request.parent + "/tasks/")
            ]
        limit = request.page_size or 1000
        return tasks_v2.ListTasksResponse(tasks=tasks[:limit])
