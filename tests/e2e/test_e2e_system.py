"""The three parts together, as `make dev` runs them: a task scheduled through the
task-app's JSON API reaches the worker through the emulator with Cloud Tasks' headers, the
payload and a token the worker verified; retries follow the dev stack's backoff; a worker
that was down gets every task when it is back; the dev queue's rate limit holds."""

from __future__ import annotations

import datetime
import re
import time
from itertools import pairwise
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.rpc import code_pb2

from local_stack.plan import EMULATOR, TASK_APP, WORKER, Ports, build_plan, task_app_service_account
from stack_settings import load_stack_file
from tests.e2e.harness import (
    STACK_FILE,
    Entry,
    StackLog,
    System,
    stack_queues,
    start_system,
    unique_id,
)

pytestmark = pytest.mark.e2e

# The arrival time of a worker's log line stands for the time of the attempt; the lines
# travel through a pipe and a thread, which adds milliseconds on an idle machine and more
# on a loaded one (the exact intervals are checked on the queue's bookkeeping).
GAP_TOLERANCE_SECONDS = 0.5


def attempts_of(system: System, task_id: str, count: int, timeout: float) -> list[Entry]:
    """Waits until the worker has logged ``count`` attempts of the task, returns them."""
    return system.log.wait_for(
        lambda entries: (
            found if len(found := system.worker_records(task_id, entries)) >= count else None
        ),
        timeout,
        f"{count} worker attempt(s) of task {task_id}",
    )


def assert_finished(system: System, task_id: str) -> None:
    """The emulator no longer has the task: it was acknowledged (or gave up)."""
    client = system.client()
    name = f"{system.settings.queue_id}/tasks/{task_id}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            client.get_task(name=name, timeout=5)
        except api_exceptions.NotFound:
            return
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} is still in the queue")


def test_a_scheduled_task_reaches_the_worker_with_headers_payload_and_verified_token(
    system: System,
) -> None:
    """The whole wire: JSON API -> CreateTask on the stack's queue -> HTTP POST to the
    worker with the X-CloudTasks-* headers, the JSON payload, and an OIDC token minted for
    the task-app's service account that the worker verified before answering 2xx."""
    task_id = unique_id("wire")
    message = f"hello from {task_id}"
    assert system.schedule(message=message, task_id=task_id) == [task_id]

    (attempt,) = attempts_of(system, task_id, count=1, timeout=10)
    record = attempt.record
    assert record is not None
    assert record["severity"] == "INFO"
    headers = record["cloud_tasks"]
    assert headers["queue"] == system.settings.queue_name == "jobs"
    assert headers["task"] == task_id
    assert (headers["retry_count"], headers["execution_count"]) == ("0", "0")
    assert headers["previous_response"] is None
    assert float(headers["eta"]) == pytest.approx(time.time(), abs=30)
    assert record["task_message"] == message
    assert (record["fail_attempts"], record["work_seconds"]) == (0, 0)
    assert record["httpRequest"]["userAgent"] == "Google-Cloud-Tasks"
    assert record["httpRequest"]["requestUrl"] == f"{system.worker_url}/tasks"
    # The worker puts the verified token's email here; verification is on, so a task
    # without that caller would have been refused instead.
    assert record["caller"] == task_app_service_account(system.settings)
    assert_finished(system, task_id)


def forged_token(audience: str, email: str) -> str:
    """A token with exactly the claims the worker wants, signed by a key that is not the
    emulator's (anyone can make one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "email": email,
        "email_verified": True,
        "sub": "1",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-the-emulators"})


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "forged"])
def test_the_worker_refuses_a_delivery_without_a_valid_token(
    system: System, authorization: str | None
) -> None:
    """Locally too the worker's token check is on: a POST that looks like Cloud Tasks but
    carries no token, garbage, or a well-formed token signed by another key, is refused
    with 401 and does no work."""
    task_id = unique_id("forged")
    headers = {"X-CloudTasks-TaskName": task_id, "X-CloudTasks-QueueName": "jobs"}
    if authorization == "forged":
        caller = task_app_service_account(system.settings)
        headers["Authorization"] = f"Bearer {forged_token(system.worker_url, caller)}"
    elif authorization:
        headers["Authorization"] = authorization
    response = requests.post(
        f"{system.worker_url}/tasks", json={"message": "x"}, headers=headers, timeout=10
    )
    assert response.status_code == 401, response.text
    time.sleep(0.2)
    assert system.worker_records(task_id) == []


@pytest.mark.parametrize(
    ("email", "audience", "refused_with"),
    [
        ("intruder@cloud-run-tasks-dev.iam.gserviceaccount.com", None, code_pb2.PERMISSION_DENIED),
        (None, "https://another-service.example", code_pb2.UNAUTHENTICATED),
    ],
    ids=["another service account", "another audience"],
)
def test_only_the_task_apps_account_for_the_worker_gets_through(
    system: System, email: str | None, audience: str | None, refused_with: int
) -> None:
    """A task on the same queue whose token Cloud Tasks mints for another service account
    (403), or for another audience (401), is refused by the worker: the local wiring, like
    Cloud Run's IAM, admits only the task-app's account calling the worker."""
    client = system.client()
    task_id = unique_id("intruder")
    name = f"{system.settings.queue_id}/tasks/{task_id}"
    oidc = {
        "service_account_email": email or task_app_service_account(system.settings),
        "audience": audience or system.worker_url,
    }
    intruding = tasks_v2.Task(
        name=name,
        http_request=tasks_v2.HttpRequest(
            url=f"{system.worker_url}/tasks",
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=b'{"message": "let me in"}',
            oidc_token=tasks_v2.OidcToken(**oidc),
        ),
    )
    client.create_task(parent=system.settings.queue_id, task=intruding, timeout=5)
    try:
        deadline = time.monotonic() + 10
        task = client.get_task(name=name, timeout=5)
        while time.monotonic() < deadline and task.response_count == 0:
            time.sleep(0.05)
            task = client.get_task(name=name, timeout=5)
        assert task.response_count >= 1, "the worker never answered"
        assert task.last_attempt.response_status.code == refused_with
        assert system.worker_records(task_id) == [], "the worker did the task"
    finally:
        client.delete_task(name=name, timeout=5)


def test_a_failing_task_is_retried_at_the_dev_backoff_then_succeeds(system: System) -> None:
    """Pulumi.dev.yaml's retry config (min backoff 1 s, doubling) reaches the local queue:
    a task whose first two attempts fail is retried 1 s after the first failure, then 2 s
    after the second, and the third attempt succeeds, with the headers Cloud Tasks sends.

    The intervals are read exactly from the queue's own bookkeeping (GetTask: the next
    schedule time minus the last response time), and checked as they happen at the worker
    (the arrival times of its log lines, with a tolerance for the machine's load)."""
    task_id = unique_id("retry")
    client = system.client()
    name = f"{system.settings.queue_id}/tasks/{task_id}"
    system.schedule(message="fails twice", fail_attempts=2, task_id=task_id)

    planned: dict[int, float] = {}  # dispatch count -> next schedule time - last response
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            task = client.get_task(name=name, timeout=5)
        except api_exceptions.NotFound:
            break  # acknowledged: done
        if task.dispatch_count and "response_time" in task.last_attempt:
            waited = task.schedule_time - task.last_attempt.response_time
            planned[task.dispatch_count] = waited.total_seconds()
        time.sleep(0.05)
    else:
        raise AssertionError(f"task {task_id} still in the queue after 15 s")

    minimum = float(system.settings.min_backoff)
    assert planned == {
        1: pytest.approx(minimum, abs=0.002),
        2: pytest.approx(2 * minimum, abs=0.002),
    }
    attempts = attempts_of(system, task_id, count=3, timeout=5)
    gaps = [later.at - earlier.at for earlier, later in pairwise(attempts)]
    assert gaps[0] == pytest.approx(minimum, abs=GAP_TOLERANCE_SECONDS), gaps
    assert gaps[1] == pytest.approx(2 * minimum, abs=GAP_TOLERANCE_SECONDS), gaps
    headers = [entry.record["cloud_tasks"] for entry in attempts if entry.record]
    assert [h["retry_count"] for h in headers] == ["0", "1", "2"]
    # 5xx answers do not count as executions.
    assert [h["execution_count"] for h in headers] == ["0", "0", "0"]
    assert [h["previous_response"] for h in headers][1:] == ["500", "500"]
    assert len(attempts) == 3
    print(
        f"retry intervals planned {planned[1]:.3f} s, {planned[2]:.3f} s; "
        f"seen at the worker {gaps[0]:.3f} s, {gaps[1]:.3f} s"
    )


def test_the_dev_rate_limit_holds_under_a_burst(system: System) -> None:
    """300 tasks due at the same moment are dispatched at the queue's rate (100/s in
    Pulumi.dev.yaml): no one-second window holds more than rate + burst deliveries, and
    the whole burst takes at least (300 - burst) / rate seconds."""
    client = system.client()
    queue = client.get_queue(name=system.settings.queue_id, timeout=5)
    rate = queue.rate_limits.max_dispatches_per_second
    burst = queue.rate_limits.max_burst_size
    assert rate == system.settings.max_dispatches_per_second == 100

    prefix = unique_id("burst")
    total, per_request = 300, 100
    # All due together, a little later than the time it takes to create them.
    due = time.time() + 3.0
    for part in range(total // per_request):
        ids = system.schedule(
            message="burst",
            count=per_request,
            task_id=f"{prefix}-{part}",
            delay_seconds=max(0.0, due - time.time()),
        )
        assert len(ids) == per_request
    assert time.time() < due, "creating the tasks took longer than the delay; raise it"

    def all_delivered(entries: list[Entry]) -> list[Entry] | None:
        seen = [
            e
            for e in entries
            if e.part == WORKER
            and e.record is not None
            and "task_message" in e.record
            and str(e.record["cloud_tasks"]["task"]).startswith(prefix)
        ]
        return seen if len(seen) >= total else None

    delivered = system.log.wait_for(all_delivered, timeout=30, what=f"{total} deliveries")
    ids = [str(e.record["cloud_tasks"]["task"]) for e in delivered if e.record]
    assert len(set(ids)) == total, "a task was delivered twice"

    # When each attempt happened, by the emulator's own clock: its log line per attempt.
    # (The moments the worker's lines reach this test also depend on how busy the machine
    # is; the emulator's timestamps do not.)
    def attempt_times(entries: list[Entry]) -> list[float] | None:
        found = sorted(
            attempt_time
            for e in entries
            if e.part == EMULATOR and (attempt_time := emulator_attempt_time(e.line, prefix))
        )
        return found if len(found) >= total else None

    times = system.log.wait_for(attempt_times, timeout=10, what="the emulator's attempt lines")
    took = times[-1] - times[0]
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    # The steady rate, between the 25th and the 90th percentile of attempts: the burst at
    # the start and the stragglers are left out. Without a limit it would be several
    # hundred per second.
    low, high = round(total * 0.25), round(total * 0.9)
    steady = (high - low) / (times[high] - times[low])
    print(
        f"burst: {busiest} attempts in the busiest second, steady {steady:.0f}/s, "
        f"{total} in {took:.2f} s"
    )
    assert steady <= rate * 1.05, f"{steady:.0f} attempts/s against a limit of {rate:g}/s"
    # A token bucket starts at most rate + burst attempts in any second; an attempt's line
    # is written when it ends, and the first burst's ends bunch up a little.
    assert busiest <= (rate + burst) * 1.1, f"{busiest} attempts in one second"
    assert took >= (total - burst) / rate * 0.9, f"{total} attempts in {took:.2f} s"


EMULATOR_ATTEMPT = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: "
    r"\S+/(?P<task>\S+) attempt \d+ -> "
)


def emulator_attempt_time(line: str, task_prefix: str) -> float | None:
    """The time of the emulator's log line for one attempt of a task whose id starts with
    task_prefix, in seconds (local clock, millisecond precision)."""
    match = EMULATOR_ATTEMPT.match(line)
    if match is None or not match["task"].startswith(task_prefix):
        return None
    stamp = datetime.datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def test_tasks_wait_for_a_worker_that_is_down_and_none_is_lost(tmp_path: Path) -> None:
    """The worker is down when tasks are scheduled (the emulator's attempts are refused);
    once it is back, every task arrives by the queue's retries, each exactly once."""
    settings = load_stack_file(STACK_FILE)
    ports = Ports.free()
    plan = build_plan(settings, Path(STACK_FILE), stack_queues(), ports=ports, state_dir=tmp_path)
    log = StackLog()
    without_worker = {name: plan[name] for name in (EMULATOR, TASK_APP)}
    stack = start_system(without_worker, log, ports)
    worker = None
    try:
        response = requests.post(
            f"{plan[TASK_APP].url}/tasks", json={"message": "while down", "count": 20}, timeout=30
        )
        assert response.status_code == 201, response.text
        ids = response.json()["tasks"]
        system = System(settings, ports, plan, log, stack)
        client = system.client()

        # Wait until every task has had a refused attempt: the outage is real.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            tasks = list(client.list_tasks(parent=settings.queue_id, timeout=5))
            mine = [t for t in tasks if t.name.rsplit("/", 1)[1] in ids]
            if len(mine) == len(ids) and all(t.dispatch_count >= 1 for t in mine):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the tasks were not attempted while the worker was down")
        assert all(t.response_count == 0 for t in mine), "an attempt got an answer"

        worker = start_system({WORKER: plan[WORKER]}, log, ports)
        delivered = log.wait_for(
            lambda entries: (
                found
                if len(found := [e for i in ids for e in system.worker_records(i, entries)])
                >= len(ids)
                else None
            ),
            timeout=30,
            what="every task at the restarted worker",
        )
        by_task = {task_id: len(system.worker_records(task_id)) for task_id in ids}
        assert by_task == dict.fromkeys(ids, 1), by_task
        retry_counts = {int(e.record["cloud_tasks"]["retry_count"]) for e in delivered if e.record}
        assert min(retry_counts) >= 1, "the tasks arrived without having been retried"
        print(f"worker down: delivered at retry counts {sorted(retry_counts)}")
        for task_id in ids:
            assert_finished(system, task_id)
    finally:
        if worker is not None:
            worker.stop()
        stack.stop()


def test_the_emulator_restarted_under_a_running_stack_keeps_its_tasks_and_its_key(
    tmp_path: Path,
) -> None:
    """The emulator stops and starts again while the worker and the task-app run on: a task
    scheduled before the restart for after it is delivered, and a task created just after
    the restart is done on its first attempt (its token verifies against the keys the
    worker fetched before the restart: the signing key was kept)."""
    settings = load_stack_file(STACK_FILE)
    ports = Ports.free()
    plan = build_plan(settings, Path(STACK_FILE), stack_queues(), ports=ports, state_dir=tmp_path)
    log = StackLog()
    services = start_system({name: plan[name] for name in (WORKER, TASK_APP)}, log, ports)
    emulator = start_system({EMULATOR: plan[EMULATOR]}, log, ports)
    try:
        system = System(settings, ports, plan, log, services)
        before = unique_id("before")
        system.schedule(message="before the restart", task_id=before)
        attempts_of(system, before, count=1, timeout=15)  # the worker has the keys now
        delayed = unique_id("delayed")
        system.schedule(message="due after the restart", task_id=delayed, delay_seconds=4)
        emulator.stop()
        emulator = start_system({EMULATOR: plan[EMULATOR]}, log, ports)

        after = unique_id("after")
        system.schedule(message="just after the restart", task_id=after)
        (attempt,) = attempts_of(system, after, count=1, timeout=15)
        assert attempt.record is not None
        assert attempt.record["cloud_tasks"]["retry_count"] in (0, "0"), attempt.record
        assert_finished(system, after)
        attempts_of(system, delayed, count=1, timeout=15)
        assert_finished(system, delayed)
        assert len(system.worker_records(after)) == 1
    finally:
        emulator.stop()
        services.stop()
