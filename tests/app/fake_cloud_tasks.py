"""A Cloud Tasks API on a local port: the real client talks REST to it, nothing is mocked.

It serves the two methods task-app calls (CreateTask, ListTasks) at the URLs of the API's
HTTP bindings, with protobuf's JSON mapping doing the (de)serialisation and Google's JSON
error body (HTTP status, message, status name) for a failure. It records every request and
can be told to fail a given call with a status code, or to answer late.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.api_core import exceptions as core_exceptions
from google.cloud import tasks_v2
from google.protobuf import json_format

# CreateTask is POST, ListTasks GET, on the queue's tasks collection (the API's
# google.api.http bindings: https://cloud.google.com/tasks/docs/reference/rest).
TASKS_PATH = re.compile(r"^/v2/(projects/[^/]+/locations/[^/]+/queues/[^/]+)/tasks$")
# Google's API front end reads these itself; they are not fields of the request.
SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "prettyPrint"})


@dataclass
class _Failure:
    code: grpc.StatusCode
    details: str


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class _State:
    tasks: dict[str, tasks_v2.Task] = field(default_factory=dict)
    create_requests: list[tasks_v2.CreateTaskRequest] = field(default_factory=list)
    list_requests: list[tasks_v2.ListTasksRequest] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # method -> {call number: failure}; call number 0 means every call.
    failures: dict[str, dict[int, _Failure]] = field(default_factory=lambda: defaultdict(dict))
    delays: dict[str, float] = field(default_factory=dict)
    next_id: int = 1


class FakeCloudTasks:
    """An in-process HTTP server speaking the Cloud Tasks v2 REST API's task methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- control -----------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; without this, Nagle's algorithm holds
            # the body until the client's delayed ACK, 40 ms per call.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                fake._serve(self, "CreateTask")

            def do_GET(self) -> None:
                fake._serve(self, "ListTasks")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
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
    def authorizations(self) -> list[str | None]:
        """The Authorization header of every call, in order."""
        with self._lock:
            return list(self._state.authorizations)

    @property
    def tasks(self) -> dict[str, tasks_v2.Task]:
        with self._lock:
            return dict(self._state.tasks)

    # --- service -----------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        match = TASKS_PATH.match(url.path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if match is None:
            self._reply(handler, *_error(grpc.StatusCode.NOT_FOUND, f"no {url.path}"))
            return
        query = {
            key: value
            for key, value in urllib.parse.parse_qsl(url.query)
            if key not in SYSTEM_PARAMETERS
        }
        try:
            with self._lock:
                self._state.authorizations.append(handler.headers.get("Authorization"))
            if method == "CreateTask":
                create = tasks_v2.CreateTaskRequest.pb()()
                json_format.Parse(body or b"{}", create)
                create.parent = match[1]
                answer = tasks_v2.Task.pb(self._create_task(tasks_v2.CreateTaskRequest(create)))
            else:
                listing = tasks_v2.ListTasksRequest.pb()()
                json_format.ParseDict(query, listing)
                listing.parent = match[1]
                answer = tasks_v2.ListTasksResponse.pb(
                    self._list_tasks(tasks_v2.ListTasksRequest(listing))
                )
        except _Abort as abort:
            self._reply(handler, *_error(abort.code, abort.details))
            return
        # The client asks for enums as numbers ($alt=json;enum-encoding=int).
        self._reply(handler, 200, json_format.MessageToDict(answer, use_integers_for_enums=True))

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, document: object) -> None:
        payload = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _enter(self, method: str) -> None:
        with self._lock:
            self._state.calls[method] += 1
            number = self._state.calls[method]
            rules = self._state.failures.get(method, {})
            failure = rules.get(number) or rules.get(0)
            delay = self._state.delays.get(method, 0.0)
        if delay:
            time.sleep(delay)
        if failure is not None:
            raise _Abort(failure.code, failure.details)

    def _create_task(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:
        with self._lock:
            self._state.create_requests.append(request)
        self._enter("CreateTask")
        now = datetime.datetime.now(datetime.UTC)
        task = tasks_v2.Task(request.task)
        with self._lock:
            if task.name:
                if task.name in self._state.tasks:
                    raise _Abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
            else:
                task.name = f"{request.parent}/tasks/{self._state.next_id:020d}"
                self._state.next_id += 1
            task.create_time = now
            if "schedule_time" not in task:
                task.schedule_time = now
            self._state.tasks[task.name] = task
        return task

    def _list_tasks(self, request: tasks_v2.ListTasksRequest) -> tasks_v2.ListTasksResponse:
        with self._lock:
            self._state.list_requests.append(request)
        self._enter("ListTasks")
        with self._lock:
            tasks = [
                task
                for name, task in sorted(self._state.tasks.items())
                if name.startswith(request.parent + "/tasks/")
            ]
        limit = request.page_size or 1000
        return tasks_v2.ListTasksResponse(tasks=tasks[:limit])


def _error(code: grpc.StatusCode, message: str) -> tuple[int, dict[str, object]]:
    """Google's JSON error body, with the HTTP status Google pairs with ``code``."""
    status = core_exceptions.exception_class_for_grpc_status(code).code or 500
    return int(status), {"error": {"code": int(status), "message": message, "status": code.name}}
