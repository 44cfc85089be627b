"""The emulator's state in a data directory: what a stop and a start on the same directory
keep (every queue, task, count, policy, tombstone and the signing key), what a write that
fails answers, and how a directory it cannot use is refused."""

from __future__ import annotations

import datetime
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from google.cloud import tasks_v2
from google.iam.v1 import policy_pb2
from google.protobuf import duration_pb2, timestamp_pb2
from tasks_emulator import EmulatorThread, VirtualClock
from tasks_emulator.__main__ import parse_args
from tasks_emulator.oidc import TokenSigner
from tasks_emulator.store import DATABASE, SqliteStore, default_data_dir

from .conftest import (
    PARENT,
    START,
    Harness,
    Target,
    client_for,
    raises,
    rest_client_for,
    start_cli,
)

VIEW_FULL = tasks_v2.Task.View.FULL


def _harness(data_dir: Path, now: float, transport: str = "grpc") -> Harness:
    """An emulator on ``data_dir``; the client speaks ``transport``: "grpc" (in-process),
    "front" (gRPC through the front process, as the command line runs it) or "rest"."""
    clock = VirtualClock(start=now)
    runner = EmulatorThread(
        host="127.0.0.1",
        port=0,
        keys_port=0,
        rest_port=0,
        clock=clock,
        data_dir=data_dir,
        front_process=transport == "front",
    )
    emulator = runner.start()
    if transport == "rest":
        return Harness(runner, rest_client_for(emulator.rest_url), clock, transport)
    return Harness(runner, client_for(emulator.address), clock, transport)


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Starts emulators on one data directory (one at a time); stops what is left."""
    started: list[Harness] = []

    def start(now: float = START, transport: str = "grpc") -> Harness:
        made = _harness(tmp_path / "state", now, transport)
        started.append(made)
        return made

    yield start
    for made in started:
        made.client.transport.close()
        made.runner.stop()


def _stop(harness: Harness) -> float:
    now = harness.clock.now()
    harness.client.transport.close()
    harness.runner.stop()
    return now


def _task(harness: Harness, name: str) -> Any:
    return harness.client.get_task(request={"name": name, "response_view": VIEW_FULL})


def test_every_queue_task_count_policy_tombstone_and_the_key_outlive_a_stop(
    durable: Callable[[float], Harness], make_target: Callable[[], Target]
) -> None:
    target = make_target()
    target.replies = [500, 200]
    first = durable(START)
    target.clock_now = first.clock.now
    retry = tasks_v2.RetryConfig(max_attempts=5, min_backoff=duration_pb2.Duration(seconds=10))
    jobs = first.queue("jobs", retry_config=retry)
    held = first.queue("held")
    first.client.pause_queue(name=held)
    policy = first.client.set_iam_policy(
        request={
            "resource": jobs,
            "policy": policy_pb2.Policy(
                bindings=[
                    policy_pb2.Binding(
                        role="roles/cloudtasks.enqueuer", members=["user:dev@example.com"]
                    )
                ]
            ),
        }
    )
    retrying = first.task(jobs, target.url, name=f"{jobs}/tasks/retrying", http={"body": b"x"})
    later = timestamp_pb2.Timestamp(seconds=int(START) + 3600)
    delayed = first.task(jobs, target.url, name=f"{jobs}/tasks/delayed", schedule_time=later)
    parked = first.task(held, target.url, name=f"{held}/tasks/parked")
    gone = first.task(jobs, target.url, name=f"{jobs}/tasks/gone", schedule_time=later)
    first.client.delete_task(name=gone.name)
    first.advance(1)
    assert target.statuses() == [0]  # one attempt of "retrying", answered 500
    before = {t.name: _task(first, t.name) for t in (retrying, delayed, parked)}
    assert before[retrying.name].dispatch_count == 1
    assert before[retrying.name].response_count == 1
    queues = {name: first.client.get_queue(name=name) for name in (jobs, held)}
    key_id = first.emulator.signer.key_id
    token = first.emulator.signer.mint("a@p.iam.gserviceaccount.com", "https://w", START)

    second = durable(_stop(first))
    target.clock_now = second.clock.now
    assert {name: second.client.get_queue(name=name) for name in (jobs, held)} == queues
    assert second.client.get_iam_policy(resource=jobs) == policy
    assert {name: _task(second, name) for name in before} == before
    with raises("ALREADY_EXISTS", match="existed too recently"):
        second.task(jobs, target.url, name=gone.name)
    assert second.emulator.signer.key_id == key_id
    assert second.emulator.signer.verify(token, "https://w")["email"].startswith("a@")

    # Dispatch resumes on the kept schedule: the retry 10 s after the failed attempt,
    # the delayed task at its hour and not a moment before, the paused queue not at all.
    second.advance(START + 9.9 - second.clock.now())
    assert len(target.received) == 1
    second.advance(0.2)
    assert len(target.received) == 2
    assert target.received[1].at == START + 10
    assert target.received[1].headers["X-CloudTasks-TaskRetryCount"] == "1"
    second.advance(START + 3599.9 - second.clock.now())
    assert len(target.received) == 2
    second.advance(0.2)
    assert len(target.received) == 3
    assert target.received[2].at >= START + 3600
    assert [t.name for t in second.client.list_tasks(parent=jobs)] == []
    assert [t.name for t in second.client.list_tasks(parent=held)] == [parked.name]


def test_a_deleted_queue_and_its_tasks_stay_deleted(
    durable: Callable[[float], Harness], make_target: Callable[[], Target]
) -> None:
    target = make_target()
    first = durable(START)
    name = first.queue("short-lived")
    first.client.pause_queue(name=name)
    for _ in range(3):
        first.task(name, target.url)
    first.client.delete_queue(name=name)
    second = durable(_stop(first))
    with raises("NOT_FOUND"):
        second.client.get_queue(name=name)
    with raises("FAILED_PRECONDITION", match="existed too recently"):
        second.queue("short-lived")
    rows = sqlite3.connect(second.emulator.store.path).execute("SELECT count(*) FROM tasks")
    assert rows.fetchone() == (0,)


@pytest.mark.parametrize("transport", ["grpc", "front", "rest"])
def test_a_change_that_cannot_be_written_is_refused_then_written_with_the_next(
    durable: Callable[..., Harness],
    make_target: Callable[[], Target],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    target = make_target()
    first = durable(START, transport)
    name = first.queue("q")
    first.client.pause_queue(name=name)
    apply = SqliteStore._apply
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky(self: SqliteStore, connection: Any, batches: Any) -> None:
        if failures:
            raise failures.pop()
        apply(self, connection, batches)

    monkeypatch.setattr(SqliteStore, "_apply", flaky)
    with raises("UNAVAILABLE", match=f"{DATABASE}: disk I/O error"):
        first.client.create_task(
            parent=name, task=tasks_v2.Task(http_request={"url": target.url}), retry=None
        )
    kept = first.task(name, target.url)
    second = durable(_stop(first))
    assert len(list(second.client.list_tasks(parent=name))) == 2
    assert _task(second, kept.name).name == kept.name


# ---- directories that cannot be used -----------------------------------------------------


def _digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.name != "lock"
    }


def _kept_state(directory: Path) -> None:
    """A data directory holding one queue and one task, written by a stopped emulator."""
    harness = _harness(directory, START)
    try:
        name = harness.queue("kept")
        harness.client.pause_queue(name=name)
        harness.task(name, "http://127.0.0.1:9/")
    finally:
        _stop(harness)


def _other_version(database: Path) -> None:
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA user_version = 99")
        connection.commit()


def _garbage(database: Path) -> None:
    database.write_bytes(b"this is not a database, whatever it says " * 200)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def _damaged_page(database: Path) -> None:
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(database.read_bytes())
    size = len(data) // pages
    for page in range(1, pages):  # every page but the header's
        data[page * size : page * size + 64] = b"\xa5" * 64
    database.write_bytes(bytes(data))


def _foreign(database: Path) -> None:
    database.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.commit()


@pytest.mark.process
@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (_other_version, "schema version 99; this emulator reads version 1"),
        (_garbage, "is not a readable emulator database"),
        (_damaged_page, "cannot be read"),
        (_foreign, "of another program"),
    ],
    ids=["other-version", "not-a-database", "damaged-page", "another-program"],
)
def test_an_unusable_database_stops_the_start_naming_it_and_keeps_it(
    tmp_path: Path, spoil: Callable[[Path], None], says: str
) -> None:
    directory = tmp_path / "state"
    _kept_state(directory)
    database = directory / DATABASE
    spoil(database)
    before = _digest(directory)
    process, ready = start_cli("--data-dir", str(directory))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, (ready, stderr)
    assert ready == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # one line, no traceback
    assert str(database) in lines[0]
    assert "--reset" in lines[0]
    assert "--data-dir" in lines[0]
    assert says in lines[0]
    assert _digest(directory) == before  # nothing discarded, nothing rewritten

    process, ready = start_cli("--data-dir", str(directory), "--reset")
    try:
        assert ready.startswith("tasks_emulator ready"), process.stderr
        assert f"state {database}" in ready
    finally:
        process.terminate()
        process.communicate(timeout=30)
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


@pytest.mark.process
def test_a_directory_another_emulator_holds_is_refused_with_its_pid(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    holder, ready = start_cli("--data-dir", str(directory))
    try:
        assert ready.startswith("tasks_emulator ready"), ready
        second, second_ready = start_cli("--data-dir", str(directory))
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == 2
        assert second_ready == ""
        assert stderr.strip().splitlines() == [
            f"tasks_emulator: the data directory {directory} is in use by another emulator "
            f"(pid {holder.pid}, lock {directory / 'lock'}): stop it, or start this one "
            "with another --data-dir or --in-memory"
        ]
    finally:
        holder.terminate()
        holder.communicate(timeout=30)
    assert holder.returncode == 0
    # Released at the stop: the next emulator starts on the directory.
    again, ready = start_cli("--data-dir", str(directory))
    again.terminate()
    again.communicate(timeout=30)
    assert ready.startswith("tasks_emulator ready"), ready


def test_the_state_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "tasks-emulator"
    assert parse_args([]).data_dir == str(tmp_path / "tasks-emulator")
    assert parse_args(["--data-dir", "here"]).data_dir == "here"
    assert parse_args(["--in-memory"]).in_memory
    for argv in (["--in-memory", "--reset"], ["--in-memory", "--data-dir", "here"]):
        with pytest.raises(SystemExit) as stopped:
            parse_args(argv)
        assert stopped.value.code == 2


@pytest.mark.process
def test_an_in_memory_emulator_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    process, ready = start_cli("--in-memory")
    process.terminate()
    process.communicate(timeout=30)
    assert "state memory" in ready
    assert list(tmp_path.iterdir()) == []


def test_a_kept_certificate_past_its_end_is_made_anew_for_the_same_key() -> None:
    signer = TokenSigner()
    key, cert = signer.pem()
    assert TokenSigner(key, cert).key_id == signer.key_id
    private = serialization.load_pem_private_key(key, password=None)
    old = x509.load_pem_x509_certificate(cert)
    now = datetime.datetime.now(datetime.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())  # type: ignore[arg-type]
    ).public_bytes(serialization.Encoding.PEM)
    renewed = TokenSigner(key, expired)
    assert renewed.key_id != signer.key_id
    token = renewed.mint("a@p.iam.gserviceaccount.com", "https://w", now.timestamp())
    assert signer.verify(token, "https://w")["email"] == "a@p.iam.gserviceaccount.com"


@pytest.mark.process
def test_the_command_line_keeps_state_between_runs(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    name = f"{PARENT}/queues/cli"
    process, ready = start_cli("--data-dir", str(directory), "--queue", name)
    try:
        address = ready.split("gRPC ", 1)[1].split(",", 1)[0]
        client = client_for(address)
        client.pause_queue(name=name)
        created = client.create_task(
            parent=name, task=tasks_v2.Task(http_request={"url": "http://127.0.0.1:9/"})
        )
        client.transport.close()
    finally:
        process.kill()  # no clean stop: what CreateTask acknowledged is on disk already
        process.communicate(timeout=30)
    process, ready = start_cli("--data-dir", str(directory))
    try:
        assert ready.startswith("tasks_emulator ready"), ready
        client = client_for(ready.split("gRPC ", 1)[1].split(",", 1)[0])
        assert client.get_task(name=created.name).name == created.name
        assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
        client.transport.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_tombstones_past_their_window_are_dropped_at_the_next_start(
    durable: Callable[..., Harness], make_target: Callable[[], Target]
) -> None:
    target = make_target()
    first = durable(START)
    name = first.queue("q")
    first.client.pause_queue(name=name)
    done = first.task(name, target.url)
    first.client.delete_task(name=done.name)
    path = first.emulator.store.path
    second = durable(_stop(first) + 3601)  # the task name's hour has passed
    second.task(name, target.url, name=done.name)  # the name is free again
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT name FROM tombstones").fetchall()
    assert rows == []
