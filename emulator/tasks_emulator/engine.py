"""The emulator's engine: queues, tasks, the schedule, rate limits and attempts.

Everything here runs on one asyncio event loop and reads time only from its Clock. A
queue keeps its waiting tasks in a heap by due time; ``_pump`` starts every attempt that
is due, allowed by the token bucket and under the concurrency limit, and otherwise arms
one timer for the moment the next attempt can start. An attempt's end (response, refused
connection or dispatch deadline) records the outcome, then deletes the task or puts it
back in the heap at end-of-attempt + backoff, and pumps again. No attempt waits for
another: a hung worker only occupies its own concurrency slot until its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import email.utils
import heapq
import itertools
import logging
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from google.cloud.tasks_v2.types import task as task_types
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from . import validation as v
from .clock import Clock, TimerHandle
from .dispatch import HttpClient
from .errors import api_error, invalid
from .oidc import TokenSigner
from .retry import RetryPolicy
from .store import MemoryStore, Snapshot

log = logging.getLogger("tasks_emulator")

# Plain ints, not enum members: these are compared on every call and every attempt.
VIEW_BASIC = int(task_types.Task.View.BASIC)
VIEW_FULL = int(task_types.Task.View.FULL)
QueueState = v.QueuePb.State
RUNNING = int(QueueState.Value("RUNNING"))
PAUSED = int(QueueState.Value("PAUSED"))
METHOD_NAMES = {int(method): method.name for method in list(v.HttpMethod)}
RETRY_AFTER_STATUSES = {429, 503}
# Attempts without any HTTP response are reported to the next attempt as a gateway status:
# 504 after the dispatch deadline (recorded from the real service), 503 for a connection
# that could not be made (the HTTP form of the UNAVAILABLE status the service reports).
TIMEOUT_STATUS = 504
UNREACHABLE_STATUS = 503
_RESERVED_HEADER = re.compile(
    r"^(x-cloudtasks-.*|x-google-.*|x-appengine-.*|host|content-length|user-agent)$", re.I
)
# HTTP status -> google.rpc.Code, as in google/rpc/code.proto's HTTP mapping.
_RPC_CODE = {
    400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1,
    500: 13, 501: 12, 503: 14, 504: 4,
}  # fmt: skip


def rpc_code(status: int) -> int:
    if 200 <= status < 300:
        return 0
    if status in _RPC_CODE:
        return _RPC_CODE[status]
    if 400 <= status < 500:
        return 9  # FAILED_PRECONDITION
    if status >= 500:
        return 13  # INTERNAL
    return 2  # UNKNOWN (1xx, 3xx)


def _set_time(stamp: Timestamp, seconds: float) -> None:
    stamp.FromNanoseconds(round(seconds * 1e9))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class DeadlineExceeded(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"dispatch deadline of {seconds:g}s exceeded")


@dataclass
class Attempt:
    schedule_time: float
    dispatch_time: float
    response_time: float | None = None
    http_status: int | None = None
    rpc_code: int = 0
    message: str = ""


class TaskState:
    """One task waiting, running or between attempts."""

    __slots__ = (
        "create_time", "deadline", "dispatch_count", "done", "execution_count",
        "first_dispatch", "last_attempt", "name", "pb", "previous_response", "queue",
        "ready_seq", "response_count", "retry", "running", "schedule_time", "short_id",
        "stored",
    )  # fmt: skip

    def __init__(
        self, queue: QueueRecord, name: str, pb: Any, *, deadline: float, now: float, when: float
    ) -> None:
        self.queue = queue
        self.name = name
        self.short_id = name.rsplit("/", 1)[1]
        self.pb = pb
        self.deadline = deadline
        self.create_time = now
        self.schedule_time = when
        self.retry: RetryPolicy | None = None  # a task-level override of the queue's
        self.dispatch_count = 0
        self.response_count = 0
        self.execution_count = 0
        self.first_dispatch: float | None = None
        self.last_attempt: Attempt | None = None
        self.previous_response: int | None = None
        self.ready_seq: int | None = None
        self.running = 0
        self.done = False
        self.stored = False  # a row of it is in the store (or on its way there)


class QueueRecord:
    """One queue: its configuration, its tasks and its dispatch state."""

    def __init__(self, pb: Any, settings: v.QueueSettings, now: float) -> None:
        self.pb = pb
        self.name: str = pb.name
        self.short_id = self.name.rsplit("/", 1)[1]
        self.settings = settings
        self.tasks: dict[str, TaskState] = {}
        self.ready: list[tuple[float, int, TaskState]] = []
        self.tokens = float(settings.burst)
        self.tokens_time = now
        self.inflight = 0
        self.timer: TimerHandle | None = None
        self.timer_when = math.inf
        self.deleted = False
        self.paused = pb.state == PAUSED
        # The queue's IAM policy, a serialized google.iam.v1.Policy; None: never set.
        self.iam_policy: bytes | None = None

    def set_state(self, state: int) -> None:
        self.pb.state = state
        self.paused = state == PAUSED


def _encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last}".encode()).decode()


def _decode_token(token: str) -> str:
    try:
        text = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("after:"):
        raise invalid(f"Invalid page token {token!r}.")
    return text.removeprefix("after:")


def _page(names: list[str], page_size: int, token: str, limit: int) -> tuple[list[str], str]:
    if page_size < 0:
        raise invalid(f"page_size must not be negative (got {page_size}).")
    size = min(page_size or limit, limit)
    start = bisect.bisect_right(names, _decode_token(token)) if token else 0
    chosen = names[start : start + size]
    more = start + size < len(names)
    return chosen, (_encode_token(chosen[-1]) if more and chosen else "")


class Engine:
    """Every queue of one emulator, and the API's operations on them."""

    def __init__(
        self,
        clock: Clock,
        http: HttpClient,
        signer: TokenSigner,
        task_name_reuse_seconds: float = 3600.0,
        queue_name_reuse_seconds: float = 7 * 24 * 3600.0,
        *,
        store: MemoryStore | None = None,
    ) -> None:
        self.clock = clock
        # Told of every change, as it happens (see store.py).
        self.store = store or MemoryStore()
        self.http = http
        self.signer = signer
        self.task_name_reuse_seconds = task_name_reuse_seconds
        self.queue_name_reuse_seconds = queue_name_reuse_seconds
        self.queues: dict[str, QueueRecord] = {}
        self._task_tombstones: dict[str, float] = {}
        self._queue_tombstones: dict[str, float] = {}
        self._sequence = itertools.count()
        self._tombstone_writes = 0
        # Task ids look like the service's (19 digits). They need to be unique, not
        # unguessable, so they come from a seeded PRNG rather than os.urandom per task.
        self._ids = random.Random()  # noqa: S311

    # ---- queues --------------------------------------------------------------------

    def _queue(self, name: str, missing: str = "queue_not_found") -> QueueRecord:
        v.check_queue_name(name)
        record = self.queues.get(name)
        if record is None:
            raise api_error(missing)
        return record

    def create_queue(self, parent: str, queue: Any) -> Any:
        v.check_location(parent)
        pb = v.QueuePb()
        pb.CopyFrom(queue)
        v.check_queue_name(pb.name)
        if not pb.name.startswith(parent + "/queues/"):
            raise invalid(f"Queue name {pb.name!r} must be in the parent {parent!r}.")
        if pb.name in self.queues:
            raise api_error("queue_exists")
        now = self.clock.now()
        if self._queue_tombstones.get(pb.name, -math.inf) > now:
            raise api_error("queue_tombstoned")
        settings = v.normalize_queue(pb)
        pb.state = RUNNING
        pb.ClearField("purge_time")
        self.queues[pb.name] = QueueRecord(pb, settings, now)
        self.store.queue_changed(self.queues[pb.name])
        log.info("queue created: %s", pb.name)
        return self._queue_out(self.queues[pb.name])

    def get_queue(self, name: str) -> Any:
        return self._queue_out(self._queue(name))

    def list_queues(self, parent: str, filter_: str, page_size: int, token: str) -> Any:
        v.check_location(parent)
        state = None
        if filter_.strip():
            match = re.fullmatch(r"\s*state\s*[:=]\s*(RUNNING|PAUSED|DISABLED)\s*", filter_)
            if not match:
                raise invalid(
                    f"Unsupported filter {filter_!r}: only 'state: RUNNING|PAUSED|DISABLED'."
                )
            state = QueueState.Value(match.group(1))
        prefix = parent + "/queues/"
        names = sorted(
            name
            for name, record in self.queues.items()
            if name.startswith(prefix) and (state is None or record.pb.state == state)
        )
        chosen, next_token = _page(names, page_size, token, limit=9800)
        response = v.ListQueuesResponsePb()
        response.queues.extend(self._queue_out(self.queues[name]) for name in chosen)
        response.next_page_token = next_token
        return response

    def update_queue(self, queue: Any, mask: Any) -> Any:
        v.check_queue_name(queue.name)
        record = self.queues.get(queue.name)
        if record is None:
            # The API creates the queue when it does not exist.
            return self.create_queue(queue.name.rsplit("/queues/", 1)[0], queue)
        updated = v.QueuePb()
        paths = [p for p in mask.paths if p != "rate_limits.max_burst_size"]
        if mask.paths:
            for path in paths:
                if path.split(".")[0] in ("name", "state", "purge_time"):
                    raise invalid(f"update_mask path {path!r} is not a field that can be set.")
            clean = field_mask_pb2.FieldMask(paths=paths)
            if not clean.IsValidForDescriptor(v.QueuePb.DESCRIPTOR):
                raise invalid(f"update_mask {list(mask.paths)!r} names an unknown Queue field.")
            updated.CopyFrom(record.pb)
            clean.MergeMessage(queue, updated, replace_message_field=True)
        else:
            updated.CopyFrom(queue)
        updated.name = record.name
        updated.state = record.pb.state
        if record.pb.HasField("purge_time"):
            updated.purge_time.CopyFrom(record.pb.purge_time)
        settings = v.normalize_queue(updated)
        record.pb = updated
        record.settings = settings
        record.tokens = min(record.tokens, float(settings.burst))
        self.store.queue_changed(record)
        self._pump(record)
        return self._queue_out(record)

    def delete_queue(self, name: str) -> None:
        record = self._queue(name, missing="entity_not_found")
        del self.queues[name]
        record.deleted = True
        self._cancel_timer(record)
        for task in record.tasks.values():
            task.done = True
        record.tasks.clear()
        record.ready.clear()
        self._queue_tombstones[name] = self.clock.now() + self.queue_name_reuse_seconds
        self.store.queue_deleted(name, self._queue_tombstones[name])
        log.info("queue deleted: %s", name)

    def purge_queue(self, name: str) -> Any:
        record = self._queue(name)
        now = self.clock.now()
        for task in list(record.tasks.values()):
            self._forget(task, now)
        record.ready.clear()
        _set_time(record.pb.purge_time, now)
        self.store.queue_changed(record)
        return self._queue_out(record)

    def pause_queue(self, name: str) -> Any:
        record = self._queue(name)
        record.set_state(PAUSED)
        self.store.queue_changed(record)
        self._cancel_timer(record)
        return self._queue_out(record)

    def resume_queue(self, name: str) -> Any:
        record = self._queue(name)
        record.set_state(RUNNING)
        self.store.queue_changed(record)
        self._pump(record)
        return self._queue_out(record)

    def get_iam_policy(self, name: str) -> bytes | None:
        """The queue's IAM policy, serialized; None when none was ever set."""
        return self._queue(name).iam_policy

    def set_iam_policy(self, name: str, policy: bytes | None) -> None:
        record = self._queue(name)
        record.iam_policy = policy
        self.store.queue_changed(record)

    @staticmethod
    def _queue_out(record: QueueRecord) -> Any:
        out = v.QueuePb()
        out.CopyFrom(record.pb)
        return out

    # ---- tasks ---------------------------------------------------------------------

    def _task(self, name: str) -> TaskState:
        v.check_task_name(name)
        record = self.queues.get(name.rsplit("/tasks/", 1)[0])
        task = record.tasks.get(name) if record else None
        if task is None:
            recent = self._task_tombstones.get(name, -math.inf) > self.clock.now()
            raise api_error("task_gone" if recent else "task_not_found")
        return task

    def create_task(self, parent: str, task: Any, view: int) -> Any:
        record = self.queues.get(parent)
        if record is None:
            v.check_queue_name(parent)  # an existing queue's name is valid already
            raise api_error("queue_not_found")
        now = self.clock.now()
        pb = v.TaskPb()
        pb.CopyFrom(task)
        if pb.name:
            v.check_task_name(pb.name)
            if not pb.name.startswith(parent + "/tasks/"):
                raise api_error("task_other_queue", queue=parent, task=pb.name)
            if pb.name in record.tasks:
                raise api_error("task_exists")
            if self._task_tombstones.get(pb.name, -math.inf) > now:
                raise api_error("task_tombstoned")
        else:
            pb.name = self._new_task_name(record, now)
        deadline = v.normalize_task(pb, now)
        retry = None
        if pb.HasField("retry_config"):
            retry = v.normalize_retry_config(pb.retry_config, record.settings.retry)
        when = now
        if pb.HasField("schedule_time"):
            when = max(now, pb.schedule_time.ToNanoseconds() / 1e9)
        for field in ("schedule_time", "create_time", "first_attempt", "last_attempt"):
            pb.ClearField(field)
        pb.dispatch_count = pb.response_count = 0
        state = TaskState(record, pb.name, pb, deadline=deadline, now=now, when=when)
        state.retry = retry
        record.tasks[pb.name] = state
        self.store.task_changed(state)
        self._enqueue(record, state)
        created = self._task_out(state, view)  # as created, before any attempt starts
        self._pump(record)
        return created

    def _new_task_name(self, record: QueueRecord, now: float) -> str:
        while True:
            name = f"{record.name}/tasks/{self._ids.randrange(10**18, 10**19)}"
            if name not in record.tasks and self._task_tombstones.get(name, -math.inf) <= now:
                return name

    def get_task(self, name: str, view: int) -> Any:
        return self._task_out(self._task(name), view)

    def list_tasks(self, parent: str, view: int, page_size: int, token: str) -> Any:
        record = self._queue(parent)
        chosen, next_token = _page(sorted(record.tasks), page_size, token, limit=1000)
        response = v.ListTasksResponsePb()
        size = 0
        for index, name in enumerate(chosen):
            task = self._task_out(record.tasks[name], view)
            # Fewer tasks than asked for when they would not fit in one answer, as the
            # API allows: the rest follow from the page token.
            size += task.ByteSize() + 8
            if index and size > v.MAX_PAGE_BYTES:
                next_token = _encode_token(chosen[index - 1])
                break
            response.tasks.append(task)
        response.next_page_token = next_token
        return response

    def delete_task(self, name: str) -> None:
        task = self._task(name)
        self._forget(task, self.clock.now())

    def run_task(self, name: str, view: int) -> Any:
        task = self._task(name)
        task.ready_seq = None  # its place in the heap, if any, is void
        self._start_attempt(task.queue, task, forced=True)
        return self._task_out(task, view)

    def _task_out(self, task: TaskState, view: int) -> Any:
        out = v.TaskPb()
        out.CopyFrom(task.pb)
        if view != VIEW_FULL:
            out.http_request.ClearField("body")
        out.view = view if view == VIEW_FULL else VIEW_BASIC
        _set_time(out.schedule_time, task.schedule_time)
        _set_time(out.create_time, task.create_time)
        out.dispatch_count = task.dispatch_count
        out.response_count = task.response_count
        if task.first_dispatch is not None:
            _set_time(out.first_attempt.dispatch_time, task.first_dispatch)
        attempt = task.last_attempt
        if attempt is not None:
            last = out.last_attempt
            _set_time(last.schedule_time, attempt.schedule_time)
            _set_time(last.dispatch_time, attempt.dispatch_time)
            if attempt.response_time is not None:
                _set_time(last.response_time, attempt.response_time)
                last.response_status.code = attempt.rpc_code
                last.response_status.message = attempt.message
        return out

    def _forget(self, task: TaskState, now: float) -> None:
        """Removes a task (finished, stopped, deleted or purged); its name stays taken
        for the reuse window."""
        task.done = True
        task.ready_seq = None
        task.queue.tasks.pop(task.name, None)
        self._task_tombstones[task.name] = now + self.task_name_reuse_seconds
        self.store.task_gone(task, self._task_tombstones[task.name])
        self._tombstone_writes += 1
        if self._tombstone_writes % 10_000 == 0:
            self._task_tombstones = {
                name: until for name, until in self._task_tombstones.items() if until > now
            }
            self.store.expire_tombstones(now)

    # ---- scheduling ----------------------------------------------------------------

    def _enqueue(self, record: QueueRecord, task: TaskState) -> None:
        seq = next(self._sequence)
        task.ready_seq = seq
        heapq.heappush(record.ready, (task.schedule_time, seq, task))

    def _cancel_timer(self, record: QueueRecord) -> None:
        if record.timer is not None:
            record.timer.cancel()
        record.timer = None
        record.timer_when = math.inf

    def _arm(self, record: QueueRecord, when: float) -> None:
        if record.timer is not None and record.timer_when <= when:
            return  # an earlier wake-up is already set; it will re-arm
        self._cancel_timer(record)
        record.timer_when = when

        def wake() -> None:
            record.timer = None
            record.timer_when = math.inf
            self._pump(record)

        record.timer = self.clock.call_at(when, wake)

    def _pump(self, record: QueueRecord) -> None:
        """Starts every attempt the queue may start now."""
        if record.deleted or record.paused:
            self._cancel_timer(record)
            return
        settings = record.settings
        ready = record.ready
        now = self.clock.now()
        while ready:
            when, seq, task = ready[0]
            if task.ready_seq != seq:
                heapq.heappop(ready)
                continue
            if when > now:
                self._arm(record, when)
                return
            if record.inflight >= settings.max_concurrent:
                return  # the end of an attempt pumps again
            record.tokens = min(
                float(settings.burst),
                record.tokens + (now - record.tokens_time) * settings.rate,
            )
            record.tokens_time = now
            # Epoch-sized float times are only exact to ~0.25 us: a token within 0.001
            # counts as whole, and the wake-up always lies strictly in the future.
            if record.tokens < 1.0 - 1e-3:
                wake = now + (1.0 - record.tokens) / settings.rate
                self._arm(record, max(wake, math.nextafter(now, math.inf)))
                return
            record.tokens -= 1.0
            heapq.heappop(ready)
            task.ready_seq = None
            self._start_attempt(record, task, forced=False)

    def _start_attempt(self, record: QueueRecord, task: TaskState, forced: bool) -> None:
        now = self.clock.now()
        if not forced:
            record.inflight += 1
        request = task.pb.http_request
        headers = self._attempt_headers(record, task, now)
        task.dispatch_count += 1
        task.running += 1
        if task.first_dispatch is None:
            task.first_dispatch = now
        task.last_attempt = Attempt(schedule_time=task.schedule_time, dispatch_time=now)
        self.store.task_changed(task)
        method = METHOD_NAMES[request.http_method]
        response = self.http.request(method, request.url, headers, request.body)
        self._await_response(record, task, forced, response, now)

    def _attempt_headers(self, record: QueueRecord, task: TaskState, now: float) -> dict[str, str]:
        """The task's own headers (less the reserved ones), the X-CloudTasks-* headers of
        this attempt, and a token minted for it (so a retry never carries an expired one)."""
        request = task.pb.http_request
        headers = (
            {k: val for k, val in request.headers.items() if not _RESERVED_HEADER.match(k)}
            if request.headers
            else {}
        )
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = record.short_id
        headers["X-CloudTasks-TaskName"] = task.short_id
        headers["X-CloudTasks-TaskRetryCount"] = str(task.dispatch_count)
        headers["X-CloudTasks-TaskExecutionCount"] = str(task.execution_count)
        headers["X-CloudTasks-TaskETA"] = f"{task.schedule_time:.6f}"
        if task.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(task.previous_response)
            headers["X-CloudTasks-TaskRetryReason"] = ""
        if request.HasField("oidc_token"):
            for key in [k for k in headers if k.lower() == "authorization"]:
                del headers[key]
            token = self.signer.mint(
                request.oidc_token.service_account_email,
                request.oidc_token.audience or request.url,
                now,
            )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _await_response(
        self,
        record: QueueRecord,
        task: TaskState,
        forced: bool,
        response: asyncio.Future[Any],
        now: float,
    ) -> None:
        """Finishes the attempt when its answer comes, or when its dispatch deadline ends."""
        deadline = task.deadline

        def on_deadline() -> None:
            if not response.done():
                response.set_exception(DeadlineExceeded(deadline))

        timer = self.clock.call_at(now + deadline, on_deadline)

        def on_done(done: asyncio.Future[Any]) -> None:
            timer.cancel()
            if done.cancelled():
                return  # the emulator is stopping
            status: int | None = None
            retry_after = None
            error = done.exception()
            if error is None:
                status, retry_after_header = done.result()
                retry_after = parse_retry_after(retry_after_header, self.clock.now())
                message = f"HTTP status {status}"
            elif isinstance(error, DeadlineExceeded):
                message = str(error)
            else:
                message = f"connection failed: {type(error).__name__}: {error}"
            self._finish(
                record, task, forced, status=status, retry_after=retry_after, message=message
            )

        response.add_done_callback(on_done)
        self.clock.track(response)

    def _finish(
        self,
        record: QueueRecord,
        task: TaskState,
        forced: bool,
        *,
        status: int | None,
        retry_after: float | None,
        message: str,
    ) -> None:
        now = self.clock.now()
        if not forced:
            record.inflight -= 1
        task.running -= 1
        if log.isEnabledFor(logging.INFO):
            outcome = str(status) if status is not None else message
            log.info(
                "%s/%s attempt %d -> %s",
                record.short_id, task.short_id, task.dispatch_count, outcome,
            )  # fmt: skip
        if task.done:
            self._pump(record)
            return
        _record_outcome(task, status, message, now)
        if status is not None and 200 <= status < 300:
            self._forget(task, now)
        elif task.running == 0:
            self._retry_or_stop(record, task, status, retry_after, now)
        if not task.done:
            self.store.task_changed(task)
        self._pump(record)

    def _retry_or_stop(
        self,
        record: QueueRecord,
        task: TaskState,
        status: int | None,
        retry_after: float | None,
        now: float,
    ) -> None:
        policy = task.retry or record.settings.retry
        first = task.first_dispatch if task.first_dispatch is not None else now
        if policy.should_stop(task.dispatch_count, now - first):
            log.info(
                "%s/%s stopped after %d attempts", record.short_id, task.short_id,
                task.dispatch_count,
            )  # fmt: skip
            self._forget(task, now)
            return
        delay = policy.interval(task.dispatch_count - 1)
        if status in RETRY_AFTER_STATUSES and retry_after is not None:
            delay = max(delay, retry_after)
        task.schedule_time = now + delay
        self._enqueue(record, task)

    # ---- restoring a store's state --------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Takes in what a data directory held. Every task goes back into its queue's
        schedule at its schedule time; an attempt that was in flight when the state was
        last written is made again as soon as the queue allows (at least once), counted
        as the attempt it was. ``resume_all`` then starts dispatching."""
        now = self.clock.now()
        for name, blob, policy in snapshot.queues:
            pb = v.QueuePb.FromString(blob)
            record = QueueRecord(pb, v.normalize_queue(pb), now)
            record.iam_policy = policy
            self.queues[name] = record
        in_flight = 0
        for row in snapshot.tasks:
            (
                name, queue_name, blob, create_time, schedule_time, deadline, dispatch_count,
                response_count, execution_count, first_dispatch, previous_response,
                last_schedule, last_dispatch, last_response, last_status, last_code, message,
            ) = row  # fmt: skip
            owner = self.queues.get(queue_name)
            if owner is None:
                log.warning("task %s of the missing queue %s is left as it is", name, queue_name)
                continue
            pb = v.TaskPb.FromString(blob)
            task = TaskState(
                owner, name, pb, deadline=deadline, now=create_time, when=schedule_time
            )
            if pb.HasField("retry_config"):
                task.retry = v.normalize_retry_config(pb.retry_config, owner.settings.retry)
            task.dispatch_count = dispatch_count
            task.response_count = response_count
            task.execution_count = execution_count
            task.first_dispatch = first_dispatch
            task.previous_response = previous_response
            if last_dispatch is not None:
                task.last_attempt = Attempt(
                    schedule_time=last_schedule,
                    dispatch_time=last_dispatch,
                    response_time=last_response,
                    http_status=last_status,
                    rpc_code=last_code or 0,
                    message=message or "",
                )
                in_flight += last_response is None
            task.stored = True
            owner.tasks[name] = task
            self._enqueue(owner, task)
        for name, until in snapshot.tombstones:
            if until > now:
                tombstones = self._task_tombstones if "/tasks/" in name else self._queue_tombstones
                tombstones[name] = until
        if snapshot.queues or snapshot.tasks:
            log.info(
                "restored %d queue(s), %d task(s) (%d attempt(s) in flight at the last stop, "
                "made again)", len(snapshot.queues), len(snapshot.tasks), in_flight,
            )  # fmt: skip

    def resume_all(self) -> None:
        """Starts dispatching every queue's due tasks (after ``restore``), and lets the
        store drop the tombstones whose reuse window ended while it was stopped."""
        self.store.expire_tombstones(self.clock.now())
        for record in list(self.queues.values()):
            self._pump(record)


def _record_outcome(task: TaskState, status: int | None, message: str, now: float) -> None:
    """An attempt's answer (or its absence) in the task's counts and its last attempt:
    only an answer counts as a response, and only one below 500 as an execution."""
    attempt = task.last_attempt
    if attempt is not None:
        attempt.response_time = now
        attempt.message = message
    if status is None:
        timed_out = message.startswith("dispatch deadline")  # see DeadlineExceeded
        task.previous_response = TIMEOUT_STATUS if timed_out else UNREACHABLE_STATUS
        if attempt is not None:
            attempt.rpc_code = 4 if timed_out else 14
        return
    task.response_count += 1
    if status < 500:
        task.execution_count += 1
    task.previous_response = status
    if attempt is not None:
        attempt.http_status = status
        attempt.rpc_code = rpc_code(status)
