"""Every API method through the official client, with the real status codes and
messages, and every validation rule of the reference: each test runs three times, over
gRPC with the server in the engine's process, over gRPC with it in a front process of
its own (as the command line runs it), and over REST with the client's REST transport,
so every way of serving a call gives the same answers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from tasks_emulator.errors import error_texts

from .conftest import PARENT, START, Harness, Target, raises, virtual_harness

Q = f"{PARENT}/queues/jobs"
TRANSPORTS = [(False, "grpc"), (True, "grpc"), (False, "rest")]


@pytest.fixture(params=TRANSPORTS, ids=["in-process", "front-process", "rest"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    front_process, transport = request.param
    yield from virtual_harness(front_process=front_process, transport=transport)


def text(key: str) -> str:
    """The real service's text ``key``, from the emulator's table of them."""
    return error_texts()[key]["text"]


def test_queue_defaults_and_output_only_burst(harness: Harness) -> None:
    """A queue created with nothing set gets the API's defaults; max_burst_size is chosen
    from the rate (100 at 500/s) and a client's value is ignored, not rejected."""
    created = harness.client.create_queue(
        parent=PARENT, queue=tasks_v2.Queue(name=Q, rate_limits={"max_burst_size": 7})
    )
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert created.rate_limits.max_dispatches_per_second == 500
    assert created.rate_limits.max_concurrent_dispatches == 1000
    assert created.rate_limits.max_burst_size == 100
    retry = created.retry_config
    assert retry.max_attempts == 100
    assert retry.min_backoff.total_seconds() == pytest.approx(0.1)
    assert retry.max_backoff.total_seconds() == 3600
    assert retry.max_doublings == 16
    assert retry.max_retry_duration.total_seconds() == 0
    assert harness.client.get_queue(name=Q) == created


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 1), (5, 1), (100, 20), (333.3, 67)])
def test_burst_follows_rate(harness: Harness, rate: float, burst: int) -> None:
    """Fractional rates are allowed; the burst is one fifth of a second's dispatches."""
    queue = harness.client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(name=Q, rate_limits={"max_dispatches_per_second": rate}),
    )
    assert queue.rate_limits.max_dispatches_per_second == pytest.approx(rate)
    assert queue.rate_limits.max_burst_size == burst


def test_create_existing_queue_already_exists(harness: Harness) -> None:
    """Creating a queue twice answers ALREADY_EXISTS with the real service's text."""
    harness.queue("jobs")
    with raises("ALREADY_EXISTS", exact=text("queue_exists")):
        harness.queue("jobs")


def test_missing_queue_not_found(harness: Harness) -> None:
    """Every method on a queue that does not exist answers NOT_FOUND with the text the
    real service gives for that method."""
    client = harness.client
    calls: list[tuple[str, Callable[[], object]]] = [
        ("queue_not_found", lambda: client.get_queue(name=Q)),
        ("entity_not_found", lambda: client.delete_queue(name=Q)),
        ("queue_not_found", lambda: client.purge_queue(name=Q)),
        ("queue_not_found", lambda: client.pause_queue(name=Q)),
        ("queue_not_found", lambda: client.resume_queue(name=Q)),
        ("queue_not_found", lambda: list(client.list_tasks(parent=Q))),
        ("queue_not_found", lambda: client.create_task(
            parent=Q, task=tasks_v2.Task(http_request={"url": "http://x"}))),
        ("task_not_found", lambda: client.get_task(name=f"{Q}/tasks/t")),
        ("task_not_found", lambda: client.delete_task(name=f"{Q}/tasks/t")),
        ("task_not_found", lambda: client.run_task(name=f"{Q}/tasks/t")),
    ]  # fmt: skip
    for key, call in calls:
        with raises("NOT_FOUND", exact=text(key)):
            call()


def test_deleted_queue_name_cannot_be_reused_at_once(harness: Harness) -> None:
    """A deleted queue's name stays taken (about 7 days): FAILED_PRECONDITION."""
    harness.queue("jobs")
    harness.client.delete_queue(name=Q)
    with raises("NOT_FOUND", exact=text("queue_not_found")):
        harness.client.get_queue(name=Q)
    with raises("FAILED_PRECONDITION", exact=text("queue_tombstoned")):
        harness.queue("jobs")
    harness.advance(7 * 24 * 3600)
    harness.queue("jobs")


def test_list_queues_paged_and_filtered(harness: Harness) -> None:
    """ListQueues pages through every queue of a location, and filters by state."""
    for i in range(5):
        harness.queue(f"q{i}")
    harness.client.create_queue(
        parent="projects/other/locations/us-central1",
        queue=tasks_v2.Queue(name="projects/other/locations/us-central1/queues/elsewhere"),
    )
    harness.client.pause_queue(name=f"{PARENT}/queues/q3")
    first = harness.client.list_queues(request={"parent": PARENT, "page_size": 2})
    assert len(first._response.queues) == 2
    assert first.next_page_token
    names = [q.name.rsplit("/", 1)[1] for q in first]
    assert names == ["q0", "q1", "q2", "q3", "q4"]
    paused = harness.client.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})
    assert [q.name.rsplit("/", 1)[1] for q in paused] == ["q3"]


def test_update_queue_with_mask(harness: Harness) -> None:
    """UpdateQueue changes only the fields named in update_mask; burst follows the new
    rate; an output-only path is rejected; a missing queue is created."""
    harness.queue("jobs", retry_config={"max_attempts": 5})
    updated = harness.client.update_queue(
        queue=tasks_v2.Queue(
            name=Q, rate_limits={"max_dispatches_per_second": 50}, retry_config={"max_attempts": 9}
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    assert updated.rate_limits.max_dispatches_per_second == 50
    assert updated.rate_limits.max_burst_size == 10
    assert updated.rate_limits.max_concurrent_dispatches == 1000
    assert updated.retry_config.max_attempts == 5
    with raises("INVALID_ARGUMENT", match="state"):
        harness.client.update_queue(
            queue=tasks_v2.Queue(name=Q), update_mask=field_mask_pb2.FieldMask(paths=["state"])
        )
    with raises("INVALID_ARGUMENT", match=r"RateLimits\.maxDispatchesPerSecond"):
        harness.client.update_queue(
            queue=tasks_v2.Queue(name=Q, rate_limits={"max_dispatches_per_second": 600}),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"]),
        )
    assert harness.client.get_queue(name=Q).rate_limits.max_dispatches_per_second == 50
    other = f"{PARENT}/queues/made-by-update"
    made = harness.client.update_queue(queue=tasks_v2.Queue(name=other))
    assert made.state == tasks_v2.Queue.State.RUNNING


def test_purge_queue(harness: Harness, target: Target) -> None:
    """PurgeQueue deletes every task and records purge_time."""
    harness.queue("jobs")
    harness.client.pause_queue(name=Q)
    for _ in range(3):
        harness.task(Q, target.url)
    purged = harness.client.purge_queue(name=Q)
    assert purged.purge_time.timestamp() == pytest.approx(START)
    assert list(harness.client.list_tasks(parent=Q)) == []
    harness.client.resume_queue(name=Q)
    harness.advance(1)
    assert target.received == []


def test_list_tasks_paged_and_views(harness: Harness, target: Target) -> None:
    """ListTasks pages; the BASIC view (default) omits the body, FULL includes it."""
    harness.queue("jobs")
    harness.client.pause_queue(name=Q)
    for i in range(5):
        harness.task(Q, target.url, name=f"{Q}/tasks/t{i}", http={"body": b"payload"})
    pager = harness.client.list_tasks(request={"parent": Q, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.tasks) for p in pages] == [2, 2, 1]
    tasks = [t for p in pages for t in p.tasks]
    assert [t.name.rsplit("/", 1)[1] for t in tasks] == [f"t{i}" for i in range(5)]
    assert all(t.http_request.body == b"" and t.view == tasks_v2.Task.View.BASIC for t in tasks)
    full = harness.client.list_tasks(
        request={"parent": Q, "response_view": tasks_v2.Task.View.FULL}
    )
    assert all(t.http_request.body == b"payload" for t in full)
    got = harness.client.get_task(
        request={"name": f"{Q}/tasks/t0", "response_view": tasks_v2.Task.View.FULL}
    )
    assert got.http_request.body == b"payload"
    with raises("INVALID_ARGUMENT", match="page token"):
        list(harness.client.list_tasks(request={"parent": Q, "page_token": "%%%"}))


def test_delete_task(harness: Harness, target: Target) -> None:
    """DeleteTask removes a task: it never runs, GetTask answers NOT_FOUND."""
    harness.queue("jobs")
    later = timestamp_pb2.Timestamp(seconds=int(START) + 60)
    task = harness.task(Q, target.url, schedule_time=later)
    harness.client.delete_task(name=task.name)
    with raises("NOT_FOUND", exact=text("task_gone")):
        harness.client.get_task(name=task.name)
    with raises("NOT_FOUND", exact=text("task_gone")):
        harness.client.delete_task(name=task.name)
    with raises("NOT_FOUND", exact=text("task_gone")):
        harness.client.run_task(name=task.name)
    harness.advance(120)
    assert target.received == []


def test_task_names_deduplicate_for_an_hour(harness: Harness, target: Target) -> None:
    """A name in use, or used by a task that finished within the hour, answers
    ALREADY_EXISTS (each with its own text); a finished task is gone; after the hour the
    name is free."""
    harness.queue("jobs")
    name = f"{Q}/tasks/order-42"
    harness.task(Q, target.url, name=name, schedule_time={"seconds": int(START) + 10})
    with raises("ALREADY_EXISTS", exact=text("task_exists")):
        harness.task(Q, target.url, name=name)
    harness.advance(10)
    assert len(target.received) == 1
    with raises("NOT_FOUND", exact=text("task_gone")):
        harness.client.get_task(name=name)
    with raises("ALREADY_EXISTS", exact=text("task_tombstoned")):
        harness.task(Q, target.url, name=name)
    harness.advance(3600)
    assert harness.task(Q, target.url, name=name).name == name


def test_generated_task_name(harness: Harness) -> None:
    """A task created without a name gets one in its queue."""
    harness.queue("jobs")
    task = harness.task(Q, "http://127.0.0.1:9/")
    assert task.name.startswith(f"{Q}/tasks/")
    assert task.name.rsplit("/", 1)[1].isdigit()


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


@pytest.mark.parametrize(
    ("queue_fields", "message"),
    [
        ({"rate_limits": {"max_dispatches_per_second": 500.5}},
         "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."),
        ({"rate_limits": {"max_dispatches_per_second": -1}},
         "RateLimits.maxDispatchesPerSecond must be greater than 0."),
        ({"rate_limits": {"max_concurrent_dispatches": 5001}},
         "RateLimits.maxConcurrentDispatches must be less than or equal to 5000."),
        ({"retry_config": {"max_attempts": -2}},
         "RetryConfig.maxAttempts must be greater or equal to -1."),
        ({"retry_config": {"max_doublings": -1}}, "RetryConfig.maxDoublings cannot be negative."),
        ({"retry_config": {"min_backoff": _duration(-1)}},
         "RetryConfig.minBackoff cannot be negative."),
        ({"retry_config": {"max_backoff": _duration(-1)}},
         "RetryConfig.maxBackoff cannot be negative."),
        ({"retry_config": {"min_backoff": _duration(10), "max_backoff": _duration(5)}},
         "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."),
    ],
)  # fmt: skip
def test_queue_validation(harness: Harness, queue_fields: dict[str, Any], message: str) -> None:
    """Queue settings outside the service's limits answer INVALID_ARGUMENT with the real
    service's message."""
    with raises("INVALID_ARGUMENT", exact=message):
        harness.client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=Q, **queue_fields))


def test_queue_limits_accepted(harness: Harness) -> None:
    """The limits themselves are allowed: 500/s, 5000 concurrent, -1 attempts, min = max."""
    queue = harness.client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=Q,
            rate_limits={"max_dispatches_per_second": 500, "max_concurrent_dispatches": 5000},
            retry_config={
                "max_attempts": -1,
                "min_backoff": _duration(5),
                "max_backoff": _duration(5),
                "max_doublings": 0,
            },
        ),
    )
    assert queue.retry_config.max_attempts == -1
    assert queue.retry_config.max_doublings == 0


@pytest.mark.parametrize(
    ("name", "parent"),
    [
        (f"{PARENT}/queues/bad_underscore", PARENT),
        (f"{PARENT}/queues/" + "x" * 101, PARENT),
        (f"{PARENT}/queues/", PARENT),
        (f"{PARENT}/queues/ok", "projects/p"),
        ("projects/other/locations/l/queues/ok", PARENT),
    ],
)
def test_queue_name_validation(harness: Harness, name: str, parent: str) -> None:
    """Queue ids are 1-100 letters, digits or hyphens, inside the given parent. (A parent
    that is no location cannot even be sent over REST: it is part of the URL, and the
    client refuses it.)"""
    if harness.transport == "rest" and parent.count("/") != 3:
        with pytest.raises(ValueError, match="Invalid request"):
            harness.client.create_queue(parent=parent, queue=tasks_v2.Queue(name=name))
        return
    with raises("INVALID_ARGUMENT"):
        harness.client.create_queue(parent=parent, queue=tasks_v2.Queue(name=name))


@pytest.mark.parametrize(
    ("task_fields", "message"),
    [
        ({"dispatch_deadline": _duration(14.9)},
         "Task.dispatchDeadline must be between [15s, 30m]."),
        ({"dispatch_deadline": _duration(1800.1)},
         "Task.dispatchDeadline must be between [15s, 30m]."),
        ({"schedule_time": {"seconds": int(START) + 30 * 86400 + 1}},
         "Task.scheduleTime must be no more than 720h in the future."),
        ({"http_request": {"url": "http://x", "body": b"x" * (1024 * 1024)}},
         "Task size too large"),
        ({"http_request": {"url": "ftp://x"}}, "HttpRequest.url must start with"),
        ({"http_request": {"url": "http://x/" + "a" * 2100}}, "at most 2083 characters"),
        ({"http_request": {"url": "http://x", "http_method": tasks_v2.HttpMethod.GET,
                           "body": b"x"}}, "body can only be set"),
        ({"http_request": {"url": "http://x", "headers": {"X-Big": "v" * 81 * 1024}}},
         "smaller than 80KB"),
        ({"http_request": {"url": ""}}, text("url_required")),
        ({"http_request": {"url": "http://example.com/",
                           "oidc_token": {"service_account_email": "a@b.c"}}},
         text("url_https_with_token")),
        ({"http_request": None, "app_engine_http_request": {"relative_uri": "/x"}},
         "App Engine tasks are not supported"),
        ({"name": f"{Q}/tasks/bad.dot"}, text("task_name_format")),
        ({"name": f"{Q}/tasks/" + "a" * 501}, text("task_name_format")),
        ({"name": f"{PARENT}/queues/other/tasks/x"},
         text("task_other_queue").format(queue=Q, task=f"{PARENT}/queues/other/tasks/x")),
    ],
)  # fmt: skip
def test_task_validation(harness: Harness, task_fields: dict[str, Any], message: str) -> None:
    """Tasks outside the service's limits answer INVALID_ARGUMENT naming the rule."""
    harness.queue("jobs")
    fields = {"http_request": {"url": "http://127.0.0.1:9/"}, **task_fields}
    if fields["http_request"] is None:
        del fields["http_request"]
    with raises("INVALID_ARGUMENT", match=re.escape(message)):
        harness.client.create_task(parent=Q, task=tasks_v2.Task(**fields))


def test_task_limits_accepted(harness: Harness) -> None:
    """The limits themselves are allowed: 15 s and 30 min deadlines, 30 days ahead, a
    500-character id of every allowed character class."""
    harness.queue("jobs")
    for deadline in (15, 1800):
        harness.client.create_task(
            parent=Q,
            task=tasks_v2.Task(
                http_request={"url": "http://127.0.0.1:9/"},
                dispatch_deadline=_duration(deadline),
                schedule_time={"seconds": int(START) + 30 * 86400},
            ),
        )
    name = f"{Q}/tasks/" + ("aZ0_-" * 100)
    created = harness.client.create_task(
        parent=Q, task=tasks_v2.Task(name=name, http_request={"url": "http://127.0.0.1:9/"})
    )
    assert created.name == name
    assert created.dispatch_deadline.total_seconds() == 600  # the default


def test_a_bug_answers_internal_and_serving_goes_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in the engine is the call's INTERNAL status, not a crash."""
    assert harness.runner.emulator is not None

    def broken(name: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(harness.runner.emulator.engine, "get_queue", broken)
    with raises("INTERNAL", exact="GetQueue failed inside the emulator"):
        harness.client.get_queue(name=Q)
    assert list(harness.client.list_queues(parent=PARENT)) == []


def test_task_stores_the_services_user_agent(harness: Harness) -> None:
    """The service stores User-Agent: Google-Cloud-Tasks among an HTTP task's headers,
    replacing the creator's, and GetTask shows it; other headers stay as given."""
    harness.queue("jobs")
    created = harness.task(
        Q, "http://127.0.0.1:9/", http={"headers": {"user-agent": "mine/1.0", "X-Trace": "7"}}
    )
    got = harness.client.get_task(name=created.name)
    assert dict(got.http_request.headers) == {"User-Agent": "Google-Cloud-Tasks", "X-Trace": "7"}
    assert dict(created.http_request.headers) == dict(got.http_request.headers)
