"""Where the emulator's state lives: in memory only (``MemoryStore``), or in one SQLite
database in a data directory (``SqliteStore``), so that a restart, a crash or a reboot
loses nothing the API acknowledged.

What is kept: every queue (its configuration, state, purge time, IAM policy and etag),
every task (its request, schedule and every bookkeeping field GetTask shows: dispatch
and response counts, first and last attempt), the name tombstones of finished, deleted
and purged tasks and of deleted queues, and the OIDC signing key (tokens minted before a
restart keep verifying after it).

Writes are grouped. The engine tells the store what changed (``queue_changed``,
``task_changed``, ...) as it changes, on its one event loop; at the end of that loop
pass the store turns every change of the pass into rows and hands them, as one batch, to
its writer thread, which commits them in one transaction (batches that queue up while a
commit is running are committed together). A call that changed something is answered
only once its batch is committed (``committed()``); a batch that cannot be written
answers every call waiting on it with an error (``WriteFailed``), is kept, and is
written again with the next batch. The engine never waits for the disk itself: an
attempt starts as soon as it is due, and a crash before its bookkeeping reached the disk
only means the attempt is made again (at least once, as Cloud Tasks promises).

Durability: WAL journal with ``synchronous=FULL``, so the WAL is fsynced at every
commit and a returned call survives a power loss or an OS crash, not only the
emulator's own crash (``NORMAL`` in WAL mode may lose the last commits on power loss).
The file carries ``application_id`` and ``user_version`` (the schema version); a file of
another version or application, a corrupt file or a directory another emulator holds
(an exclusive lock on ``lock`` in the directory) stops the start with a StoreError that
names the file and the way out. Nothing on disk is ever discarded except by ``reset``
(and tombstones whose reuse window has ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import QueueRecord, TaskState

log = logging.getLogger("tasks_emulator")

DATABASE = "tasks-emulator.sqlite3"
LOCK_FILE = "lock"
# "TSKE": marks the file as this emulator's, so another program's SQLite file is refused.
APPLICATION_ID = 0x54534B45
SCHEMA_VERSION = 1
# Meta keys.
OIDC_KEY = "oidc_private_key"
OIDC_CERT = "oidc_certificate"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    pb BLOB NOT NULL,          -- google.cloud.tasks.v2.Queue: configuration, state, purge time
    iam_policy BLOB            -- google.iam.v1.Policy with its etag; NULL: never set
) WITHOUT ROWID;
CREATE TABLE tasks (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    pb BLOB NOT NULL,          -- google.cloud.tasks.v2.Task as created (its request)
    create_time REAL NOT NULL,
    schedule_time REAL NOT NULL,
    deadline REAL NOT NULL,
    dispatch_count INTEGER NOT NULL,
    response_count INTEGER NOT NULL,
    execution_count INTEGER NOT NULL,
    first_dispatch REAL,
    previous_response INTEGER,
    last_schedule REAL,        -- the last attempt; NULL: none yet
    last_dispatch REAL,
    last_response REAL,        -- NULL with last_dispatch set: in flight when last written
    last_http_status INTEGER,
    last_rpc_code INTEGER,
    last_message TEXT
);
CREATE INDEX tasks_by_queue ON tasks (queue);
CREATE TABLE tombstones (name TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
"""

_SELECT_TASKS = (
    "SELECT name, queue, pb, create_time, schedule_time, deadline, dispatch_count, "
    "response_count, execution_count, first_dispatch, previous_response, last_schedule, "
    "last_dispatch, last_response, last_http_status, last_rpc_code, last_message "
    "FROM tasks ORDER BY schedule_time"
)
_INSERT_TASK = (
    "INSERT OR REPLACE INTO tasks (name, queue, pb, create_time, schedule_time, deadline, "
    "dispatch_count, response_count, execution_count, first_dispatch, previous_response, "
    "last_schedule, last_dispatch, last_response, last_http_status, last_rpc_code, "
    "last_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_TASK = (
    "UPDATE tasks SET schedule_time = ?, dispatch_count = ?, response_count = ?, "
    "execution_count = ?, first_dispatch = ?, previous_response = ?, last_schedule = ?, "
    "last_dispatch = ?, last_response = ?, last_http_status = ?, last_rpc_code = ?, "
    "last_message = ? WHERE name = ?"
)


class StoreError(Exception):
    """The data directory cannot be used; the message (one line) names the file and the
    way out."""


class WriteFailed(Exception):
    """A batch of changes could not be committed; the message says where and why."""


def default_data_dir() -> Path:
    """Where the command line keeps its state unless told otherwise: the user's state
    directory (``$XDG_STATE_HOME``, else ``~/.local/state``; ``%LOCALAPPDATA%`` on
    Windows), in ``tasks-emulator``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tasks-emulator"


@dataclass
class Snapshot:
    """Everything a data directory held when it was opened."""

    queues: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    tasks: list[tuple[Any, ...]] = field(default_factory=list)  # rows in _SELECT_TASKS's order
    tombstones: list[tuple[str, float]] = field(default_factory=list)
    meta: dict[str, bytes] = field(default_factory=dict)


class MemoryStore:
    """State in memory only: nothing is written and no call waits."""

    durable = False
    changes = 0
    location = "memory"

    def queue_changed(self, record: QueueRecord) -> None:
        pass

    def queue_deleted(self, name: str, until: float) -> None:
        pass

    def task_changed(self, task: TaskState) -> None:
        pass

    def task_gone(self, task: TaskState, until: float) -> None:
        pass

    def expire_tombstones(self, now: float) -> None:
        pass

    def committed(self) -> asyncio.Future[None] | None:
        """The commit of every change made so far, to wait for; None: nothing to wait for."""
        return None

    async def close(self) -> None:
        pass


@dataclass
class _Batch:
    """The rows of one loop pass's changes, applied in this order."""

    deleted_queues: list[tuple[str]] = field(default_factory=list)
    queues: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    task_deletes: list[tuple[str]] = field(default_factory=list)
    task_inserts: list[tuple[Any, ...]] = field(default_factory=list)
    task_updates: list[tuple[Any, ...]] = field(default_factory=list)
    tombstones: list[tuple[str, float]] = field(default_factory=list)
    expire_before: float | None = None
    waiter: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


_STOP = object()


def _bookkeeping(task: TaskState) -> tuple[Any, ...]:
    attempt = task.last_attempt
    if attempt is None:
        last: tuple[Any, ...] = (None, None, None, None, None, None)
    else:
        last = (
            attempt.schedule_time, attempt.dispatch_time, attempt.response_time,
            attempt.http_status, attempt.rpc_code, attempt.message,
        )  # fmt: skip
    return (
        task.schedule_time, task.dispatch_count, task.response_count, task.execution_count,
        task.first_dispatch, task.previous_response, *last,
    )  # fmt: skip


class SqliteStore(MemoryStore):
    """State in ``directory``/tasks-emulator.sqlite3, held with an exclusive lock."""

    durable = True

    def __init__(self, directory: str | Path, *, reset: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DATABASE
        self.location = str(self.path)
        self.changes = 0
        self._lock_fd: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._queues: dict[str, QueueRecord] = {}
        self._deleted_queues: list[str] = []
        self._tasks: dict[str, TaskState] = {}
        self._tombstones: list[tuple[str, float]] = []
        self._expire_before: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closed = False
        try:
            self._lock()
            if reset:
                self._reset()
            self._connection = self._open()
        except BaseException:
            self._release()
            raise

    # ---- opening -------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreError(
                f"cannot use the data directory {self.directory}: {error.strerror or error}; "
                "choose another with --data-dir, or run with --in-memory"
            ) from None
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"the data directory {self.directory} is in use by another emulator "
                f"(pid {holder}, lock {self.directory / LOCK_FILE}): stop it, or start this "
                "one with another --data-dir or --in-memory"
            )
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())

    def _reset(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()
                if not suffix:
                    log.warning("--reset: removed %s", self.path)

    def _refuse(self, problem: str) -> StoreError:
        return StoreError(
            f"{self.path} {problem}; nothing was changed: start with --reset to wipe it, "
            "or with another --data-dir"
        )

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot open {self.path}: {error}; choose another --data-dir, or run with "
                "--in-memory"
            ) from None
        try:
            self._check(connection)
            # The WAL is fsynced at every commit: a call that returned survives a power
            # loss, not only a crash of the emulator (see the module's docstring).
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
        except StoreError:
            connection.close()
            raise
        except sqlite3.Error as error:
            connection.close()
            raise self._refuse(f"cannot be read ({error})") from None
        return connection

    def _check(self, connection: sqlite3.Connection) -> None:
        try:
            application = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise self._refuse(f"is not a readable emulator database ({error})") from None
        if application == 0 and version == 0 and tables == 0:
            connection.executescript(
                f"BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
                f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
            return
        if application != APPLICATION_ID:
            raise self._refuse(
                f"is an SQLite database of another program (application_id {application:#x})"
            )
        if version != SCHEMA_VERSION:
            raise self._refuse(
                f"holds schema version {version}; this emulator reads version {SCHEMA_VERSION}"
            )
        check = connection.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise self._refuse(f"is corrupt ({check[0][0]})")

    def load(self) -> Snapshot:
        """Everything the directory holds."""
        assert self._connection is not None
        try:
            connection = self._connection
            return Snapshot(
                queues=connection.execute("SELECT name, pb, iam_policy FROM queues").fetchall(),
                tasks=connection.execute(_SELECT_TASKS).fetchall(),
                tombstones=connection.execute("SELECT name, until FROM tombstones").fetchall(),
                meta=dict(connection.execute("SELECT key, value FROM meta").fetchall()),
            )
        except sqlite3.Error as error:
            raise self._refuse(f"cannot be read ({error})") from None

    def put_meta(self, values: dict[str, bytes]) -> None:
        """Writes ``values`` at once (before the emulator serves: at start only)."""
        assert self._connection is not None
        assert self._writer is None
        try:
            with self._transaction(self._connection) as connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items()
                )
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot write {self.path}: {error}; choose another --data-dir, or run with "
                "--in-memory"
            ) from None

    def start(self) -> None:
        """Starts the writer thread; changes are accepted from then on."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="tasks-emulator-store", daemon=True
            )
            self._writer.start()

    # ---- changes, on the engine's loop ---------------------------------------------

    def _touch(self) -> None:
        self.changes += 1
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._flush)

    def queue_changed(self, record: QueueRecord) -> None:
        self._queues[record.name] = record
        self._touch()

    def queue_deleted(self, name: str, until: float) -> None:
        self._deleted_queues.append(name)
        self._tombstones.append((name, until))
        self._touch()

    def task_changed(self, task: TaskState) -> None:
        self._tasks[task.name] = task
        self._touch()

    def task_gone(self, task: TaskState, until: float) -> None:
        self._tasks[task.name] = task
        self._tombstones.append((task.name, until))
        self._touch()

    def expire_tombstones(self, now: float) -> None:
        self._expire_before = now
        self._touch()

    def committed(self) -> asyncio.Future[None] | None:
        if not self._scheduled:
            return None  # every change is in a batch the writer has (or had)
        if self._waiter is None:
            assert self._loop is not None
            self._waiter = self._loop.create_future()
        return self._waiter

    def _flush(self) -> None:
        """Turns the pass's changes into one batch for the writer."""
        self._scheduled = False
        batch = _Batch(waiter=self._waiter, loop=self._loop)
        self._waiter = None
        batch.deleted_queues = [(name,) for name in self._deleted_queues]
        batch.queues = [
            (name, record.pb.SerializeToString(), record.iam_policy)
            for name, record in self._queues.items()
            if not record.deleted
        ]
        for task in self._tasks.values():
            if task.done or task.queue.deleted:
                if task.stored:
                    batch.task_deletes.append((task.name,))
                    task.stored = False
            elif task.stored:
                batch.task_updates.append((*_bookkeeping(task), task.name))
            else:
                schedule, *counts = _bookkeeping(task)
                row = (task.name, task.queue.name, task.pb.SerializeToString())
                batch.task_inserts.append(
                    (*row, task.create_time, schedule, task.deadline, *counts)
                )
                task.stored = True
        batch.tombstones = self._tombstones
        batch.expire_before = self._expire_before
        self._queues = {}
        self._deleted_queues = []
        self._tasks = {}
        self._tombstones = []
        self._expire_before = None
        if self._closed or self._writer is None:
            if batch.waiter is not None and not batch.waiter.done():
                batch.waiter.set_exception(WriteFailed(f"{self.path} is closed"))
            return
        self._inbox.put(batch)

    # ---- the writer thread ---------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _apply(self, connection: sqlite3.Connection, batches: list[_Batch]) -> None:
        with self._transaction(connection):
            for batch in batches:
                gone = batch.deleted_queues
                if gone:
                    connection.executemany("DELETE FROM tasks WHERE queue = ?", gone)
                    connection.executemany("DELETE FROM queues WHERE name = ?", gone)
                if batch.queues:
                    connection.executemany(
                        "INSERT OR REPLACE INTO queues (name, pb, iam_policy) VALUES (?, ?, ?)",
                        batch.queues,
                    )
                if batch.task_deletes:
                    connection.executemany("DELETE FROM tasks WHERE name = ?", batch.task_deletes)
                if batch.task_inserts:
                    connection.executemany(_INSERT_TASK, batch.task_inserts)
                if batch.task_updates:
                    connection.executemany(_UPDATE_TASK, batch.task_updates)
                if batch.tombstones:
                    connection.executemany(
                        "INSERT OR REPLACE INTO tombstones (name, until) VALUES (?, ?)",
                        batch.tombstones,
                    )
                if batch.expire_before is not None:
                    connection.execute(
                        "DELETE FROM tombstones WHERE until <= ?", (batch.expire_before,)
                    )

    def _write_loop(self) -> None:
        connection = self._connection
        assert connection is not None
        unwritten: list[_Batch] = []
        stopping = False
        while not stopping:
            items = [self._inbox.get()]
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in items)
            fresh = [item for item in items if item is not _STOP]
            unwritten.extend(fresh)
            if not unwritten:
                continue
            error: WriteFailed | None = None
            try:
                self._apply(connection, unwritten)
            except Exception as failure:  # the writer must outlive any failure, or calls hang
                error = WriteFailed(
                    f"the emulator could not write its state to {self.path}: {failure}"
                )
                log.error("%s; the changes are kept and written again with the next ones", error)
            for batch in fresh if error is not None else unwritten:
                _answer(batch, error)
            if error is None:
                unwritten = []
        if unwritten:
            log.error(
                "%d batch(es) of changes could not be written to %s", len(unwritten), self.path
            )

    # ---- closing -------------------------------------------------------------------

    async def close(self) -> None:
        """Writes what is pending, stops the writer and releases the directory."""
        if self._closed:
            return
        if self._scheduled:
            self._flush()
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            self._inbox.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, writer.join)
        self._release()

    def close_now(self) -> None:
        """Releases the directory of a store whose writer never started."""
        assert self._writer is None
        self._closed = True
        self._release()

    def _release(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _answer(batch: _Batch, error: WriteFailed | None) -> None:
    """Completes the calls waiting on ``batch`` (on their loop)."""
    waiter, loop = batch.waiter, batch.loop
    if waiter is None or loop is None:
        return

    def complete() -> None:
        if waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(complete)


def _try_lock(fd: int) -> bool:
    """Takes the exclusive lock on ``fd`` without waiting; False when another holds it."""
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415 - Windows only

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
