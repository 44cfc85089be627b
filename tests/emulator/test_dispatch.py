"""Delivery of HTTP tasks through the running emulator, driven by the official client on a
virtual clock: headers, counters, the retry schedule, stop rules, deadlines, Retry-After."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from email.utils import formatdate

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2
from tasks_emulator.retry import RetryPolicy

from .conftest import START, Harness, Target


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def retry(
    min_s: float, max_s: float, doublings: int, attempts: int = 100, duration: float = 0
) -> dict[str, object]:
    """A RetryConfig in the client's dict form."""
    return {
        "max_attempts": attempts,
        "min_backoff": _duration(min_s),
        "max_backoff": _duration(max_s),
        "max_doublings": doublings,
        "max_retry_duration": _duration(duration),
    }


def gaps(target: Target) -> list[float]:
    times = [r.at for r in target.received]
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_recorded_status_table_is_reproduced(harness: Harness, target: Target) -> None:
    """The sequence recorded against the real service: 503, 404, 429, 500, 302, 200 gives
    RetryCount 0..5, ExecutionCount 0,0,1,2,2,3 (5xx not counted), PreviousResponse absent
    then the previous status; a 302 is not followed."""
    target.replies = [503, 404, 429, (500, {}), (302, {"Location": "/elsewhere"}), 200]
    queue = harness.queue("jobs", retry_config=retry(1, 10, 3))
    harness.task(queue, target.url + "/tasks", name=f"{queue}/tasks/t1")
    harness.advance(100)
    table = [
        (
            r.headers["X-CloudTasks-TaskRetryCount"],
            r.headers["X-CloudTasks-TaskExecutionCount"],
            r.headers.get("X-CloudTasks-TaskPreviousResponse"),
        )
        for r in target.received
    ]
    assert table == [
        ("0", "0", None),
        ("1", "0", "503"),
        ("2", "1", "404"),
        ("3", "2", "429"),
        ("4", "2", "500"),
        ("5", "3", "302"),
    ]
    assert all(r.path == "/tasks" for r in target.received)
    assert [r.headers.get("X-CloudTasks-TaskRetryReason") for r in target.received] == [
        None, "", "", "", "", "",
    ]  # fmt: skip


def test_headers_of_an_attempt(harness: Harness, target: Target) -> None:
    """Short queue and task ids, ETA in epoch seconds, User-Agent Google-Cloud-Tasks; the
    task's own headers, method and body pass unchanged; Content-Type is not defaulted;
    X-CloudTasks-* headers from the client cannot spoof the service's."""
    queue = harness.queue("jobs")
    harness.task(
        queue,
        target.url + "/put/here?x=1",
        name=f"{queue}/tasks/abc_1",
        http={
            "http_method": tasks_v2.HttpMethod.PUT,
            "headers": {"X-Custom": "yes", "X-CloudTasks-TaskRetryCount": "99"},
            "body": b"\x00binary",
        },
    )
    harness.advance(0)
    (got,) = target.received
    assert got.method == "PUT"
    assert got.path == "/put/here?x=1"
    assert got.body == b"\x00binary"
    assert got.headers["X-Custom"] == "yes"
    assert "Content-Type" not in got.headers
    assert got.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert got.headers["X-CloudTasks-QueueName"] == "jobs"
    assert got.headers["X-CloudTasks-TaskName"] == "abc_1"
    assert got.headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert got.headers["X-CloudTasks-TaskExecutionCount"] == "0"
    assert float(got.headers["X-CloudTasks-TaskETA"]) == pytest.approx(START)
    assert "Authorization" not in got.headers


@pytest.mark.parametrize(
    ("min_s", "max_s", "doublings", "expected"),
    [
        (10, 300, 3, [10, 20, 40, 80, 160, 240, 300, 300]),
        (1, 15, 3, [1, 2, 4, 8, 15, 15, 15]),
        (2, 20, 0, [2, 4, 6, 8, 10, 12]),
        (0.5, 0.5, 5, [0.5, 0.5, 0.5]),
    ],
)
def test_retry_intervals_follow_the_formula(
    harness: Harness,
    target: Target,
    min_s: float,
    max_s: float,
    doublings: int,
    expected: list[float],
) -> None:
    """Attempts of a failing task are spaced exactly by the documented formula (doubling,
    then linear, then capped), counted from the end of the failed attempt."""
    target.replies = [500]
    queue = harness.queue("jobs", retry_config=retry(min_s, max_s, doublings, len(expected) + 1))
    harness.task(queue, target.url)
    harness.advance(sum(expected) + 1)
    assert gaps(target) == pytest.approx(expected)
    etas = [float(r.headers["X-CloudTasks-TaskETA"]) for r in target.received]
    assert etas == pytest.approx([r.at for r in target.received])


def test_hundred_attempts_take_well_under_a_second(harness: Harness, target: Target) -> None:
    """The whole 84.8-hour schedule of a 100-attempt task (API defaults) runs on the
    virtual clock in well under a second of test time, then the task is gone."""
    target.replies = [503]
    queue = harness.queue("jobs")
    task = harness.task(queue, target.url)
    started = time.perf_counter()
    harness.advance(90 * 3600)
    elapsed = time.perf_counter() - started
    assert len(target.received) == 100
    assert gaps(target) == pytest.approx(RetryPolicy().schedule(100), abs=1e-5)
    assert elapsed < 1.0, f"100 attempts took {elapsed:.2f}s of test time"
    with pytest.raises(exceptions.NotFound, match="Task does not exist"):  # hours ago
        harness.client.get_task(name=task.name)


@pytest.mark.parametrize(
    ("attempts", "duration", "expected_attempts"),
    [
        (3, 0, 3),  # duration 0: the attempts decide
        (2, 60, 7),  # both: attempts reached at 2, time at t=60 (7th attempt)
        (-1, 30, 4),  # -1: time decides: failures at 0, 10, 20, 30
        (1, 0, 1),  # no retry at all
    ],
)
def test_stop_rule_end_to_end(
    harness: Harness, target: Target, attempts: int, duration: float, expected_attempts: int
) -> None:
    """A failing task stops (and is deleted) when BOTH max_attempts and
    max_retry_duration are reached, -1 and 0 meaning unlimited."""
    target.replies = [500]
    queue = harness.queue("jobs", retry_config=retry(10, 10, 0, attempts, duration))
    task = harness.task(queue, target.url)
    harness.advance(1000)
    assert len(target.received) == expected_attempts
    with pytest.raises(exceptions.NotFound, match="no longer exists"):
        harness.client.get_task(name=task.name)


def test_unlimited_attempts_and_duration_keep_retrying(harness: Harness, target: Target) -> None:
    """max_attempts -1 with max_retry_duration 0 never stops retrying."""
    target.replies = [500]
    queue = harness.queue("jobs", retry_config=retry(10, 10, 0, -1, 0))
    task = harness.task(queue, target.url)
    harness.advance(1000)
    assert len(target.received) == 101
    assert harness.client.get_task(name=task.name).dispatch_count == 101


def test_bookkeeping_through_get_task(harness: Harness, target: Target) -> None:
    """dispatch_count, response_count, first_attempt, last_attempt (with its status) and
    the next schedule_time are reported while a task is between attempts."""
    target.replies = [503, 404, 200]
    queue = harness.queue("jobs", retry_config=retry(10, 100, 3))
    created = harness.task(queue, target.url)
    assert created.dispatch_count == 0
    assert created.create_time.timestamp() == pytest.approx(START)
    harness.advance(15)
    task = harness.client.get_task(name=created.name)
    assert task.dispatch_count == 2
    assert task.response_count == 2
    assert task.first_attempt.dispatch_time.timestamp() == pytest.approx(START)
    assert task.last_attempt.dispatch_time.timestamp() == pytest.approx(START + 10)
    assert task.last_attempt.response_status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "404" in task.last_attempt.response_status.message
    assert task.schedule_time.timestamp() == pytest.approx(START + 30)
    harness.advance(15)
    assert len(target.received) == 3
    with pytest.raises(exceptions.NotFound, match="no longer exists"):
        harness.client.get_task(name=created.name)


def test_dispatch_deadline_timeout(
    harness: Harness, target: Target, make_target: Callable[[], Target]
) -> None:
    """A worker that does not answer within dispatch_deadline fails the attempt: the next
    attempt says PreviousResponse 504 and ExecutionCount does not count it, and a hung
    worker never holds up another queue."""
    target.hang = threading.Event()
    target.replies = [200]
    harness.clock.io_grace = 0.2  # how long a hung request holds up virtual time
    other = make_target()
    other.clock_now = harness.clock.now
    slow = harness.queue("slow", retry_config=retry(1, 1, 0))
    fast = harness.queue("fast")
    task = harness.task(slow, target.url, dispatch_deadline=duration_pb2.Duration(seconds=15))
    harness.advance(1)
    harness.task(fast, other.url)
    harness.advance(1)
    assert len(other.received) == 1
    harness.advance(14.5)  # t = 16.5: the deadline passed at 15, retry due at 16
    assert len(target.received) == 2
    second = target.received[1]
    assert second.headers["X-CloudTasks-TaskPreviousResponse"] == "504"
    assert second.headers["X-CloudTasks-TaskExecutionCount"] == "0"
    assert second.at == pytest.approx(START + 16)
    info = harness.client.get_task(name=task.name)
    assert info.response_count == 0
    assert info.dispatch_count == 2


def test_refused_connection_is_a_failed_attempt(harness: Harness) -> None:
    """A refused connection is retried like any failure, counted in dispatch_count but
    not in response_count, with an UNAVAILABLE attempt status."""
    queue = harness.queue("jobs", retry_config=retry(1, 1, 0))
    task = harness.task(queue, "http://127.0.0.1:9/nothing-listens")
    harness.advance(2.5)
    info = harness.client.get_task(name=task.name)
    assert info.dispatch_count == 3
    assert info.response_count == 0
    assert info.last_attempt.response_status.code == grpc.StatusCode.UNAVAILABLE.value[0]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_respected(harness: Harness, target: Target, status: int) -> None:
    """429 and 503 with Retry-After are never retried sooner than it says."""
    target.replies = [(status, {"Retry-After": "120"}), 200]
    queue = harness.queue("jobs", retry_config=retry(1, 10, 3))
    harness.task(queue, target.url)
    harness.advance(119)
    assert len(target.received) == 1
    harness.advance(1)
    assert gaps(target) == [120]


def test_retry_after_http_date(harness: Harness, target: Target) -> None:
    """Retry-After may be an HTTP date."""
    target.replies = [(503, {"Retry-After": formatdate(START + 300, usegmt=True)}), 200]
    queue = harness.queue("jobs", retry_config=retry(1, 10, 3))
    harness.task(queue, target.url)
    harness.advance(400)
    assert gaps(target) == pytest.approx([300])


def test_retry_after_ignored_for_other_statuses(harness: Harness, target: Target) -> None:
    """Only 429 and 503 make Retry-After count; a 500 follows the backoff."""
    target.replies = [(500, {"Retry-After": "120"}), 200]
    queue = harness.queue("jobs", retry_config=retry(1, 10, 3))
    harness.task(queue, target.url)
    harness.advance(10)
    assert gaps(target) == [1]


def test_schedule_time_in_future(harness: Harness, target: Target) -> None:
    """A task runs at its schedule_time, not before; the ETA header says when."""
    queue = harness.queue("jobs")
    when = timestamp_pb2.Timestamp(seconds=int(START) + 3600)
    harness.task(queue, target.url, schedule_time=when)
    harness.advance(3599)
    assert target.received == []
    harness.advance(1)
    assert len(target.received) == 1
    assert float(target.received[0].headers["X-CloudTasks-TaskETA"]) == START + 3600


def test_pause_and_resume(harness: Harness, target: Target) -> None:
    """A paused queue accepts tasks but dispatches nothing until resumed."""
    queue = harness.queue("jobs")
    paused = harness.client.pause_queue(name=queue)
    assert paused.state == tasks_v2.Queue.State.PAUSED
    harness.task(queue, target.url)
    harness.advance(60)
    assert target.received == []
    assert harness.client.resume_queue(name=queue).state == tasks_v2.Queue.State.RUNNING
    harness.advance(0)
    assert len(target.received) == 1


def test_run_task_ignores_pause_and_schedule(harness: Harness, target: Target) -> None:
    """RunTask dispatches at once even on a paused queue and before schedule_time."""
    queue = harness.queue("jobs")
    harness.client.pause_queue(name=queue)
    later = timestamp_pb2.Timestamp(seconds=int(START) + 86400)
    task = harness.task(queue, target.url, schedule_time=later)
    ran = harness.client.run_task(name=task.name)
    assert ran.dispatch_count == 1
    harness.advance(0)
    assert len(target.received) == 1
    with pytest.raises(exceptions.NotFound, match="no longer exists"):
        harness.client.get_task(name=task.name)


def test_run_task_ignores_rate_limits(harness: Harness, target: Target) -> None:
    """RunTask bypasses an exhausted token bucket (0.5/s, burst 1)."""
    queue = harness.queue("jobs", rate_limits={"max_dispatches_per_second": 0.5})
    harness.task(queue, target.url)
    second = harness.task(queue, target.url)
    harness.advance(0.1)
    assert len(target.received) == 1
    harness.client.run_task(name=second.name)
    harness.advance(0.1)
    assert len(target.received) == 2


def test_many_queues_at_once(harness: Harness, target: Target) -> None:
    """Many queues dispatch side by side."""
    for i in range(20):
        queue = harness.queue(f"q{i}")
        harness.task(queue, target.url)
    harness.advance(0)
    assert sorted(r.headers["X-CloudTasks-QueueName"] for r in target.received) == sorted(
        f"q{i}" for i in range(20)
    )
