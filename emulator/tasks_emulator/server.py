"""Starting and stopping the emulator: in-process (``Emulator``, an async context manager,
or ``EmulatorThread`` for synchronous code) and from the command line (``__main__``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import field_mask_pb2, json_format

from .calls import Api, request_too_large
from .clock import Clock, RealClock, VirtualClock
from .dispatch import HttpClient
from .engine import Engine
from .front import start_grpc_server
from .iam import OWNER, Iam, PolicyPb, check_policy
from .link import FAILED, OVERSIZED, READY, Link
from .loop import new_event_loop
from .metadata import metadata_app, project_of
from .oidc import TokenSigner, keys_app
from .rest import RestApi
from .servicer import generic_handler
from .store import OIDC_CERT, OIDC_KEY, MemoryStore, SqliteStore, StoreError
from .validation import QueuePb

T = TypeVar("T")


# The directory holding this package, for the front process when it is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
FRONT_START_SECONDS = 60.0


class Emulator:
    """The gRPC API on ``host:port`` and the OIDC keys on ``host:keys_port`` (port 0 picks
    a free port; the bound ports are in ``port``/``keys_port`` once started); with
    ``rest_port`` the REST API too, and with ``metadata`` ({service account email: port})
    a metadata server for each account. ``local_principal`` is who a call without an
    access token acts as once IAM policies exist (``"owner"``: every permission).

    With ``front_process`` the gRPC server runs in a child process (``front.py``) that
    passes every call to this one, which is how the command line runs it: gRPC's own
    per-call work then has a core of its own. Otherwise it runs here, on this loop.
    ``front_lost`` is set if that child ever exits while the emulator runs.

    With ``data_dir`` every queue, task, tombstone and the OIDC signing key live in an
    SQLite database there (``store.py``), restored at the next start; ``reset`` wipes it
    first. Without it, state lives in memory only. A directory that cannot be used raises
    StoreError (a one-line message naming the file and the way out).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8123,
        keys_port: int = 8124,
        *,
        clock: Clock | None = None,
        task_name_reuse_seconds: float = 3600.0,
        queue_name_reuse_seconds: float = 7 * 24 * 3600.0,
        front_process: bool = False,
        rest_port: int | None = None,
        metadata: Mapping[str, int] | None = None,
        local_principal: str = OWNER,
        data_dir: str | Path | None = None,
        reset: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.keys_port = keys_port
        self.rest_port = rest_port
        self.metadata_ports: dict[str, int] = dict(metadata or {})
        for email in self.metadata_ports:
            project_of(email)  # ValueError now, not when a service asks
        self.clock: Clock = clock or RealClock()
        self.store: MemoryStore = MemoryStore()
        if data_dir is not None:
            self.store = SqliteStore(data_dir, reset=reset)
        try:
            self._make_parts(task_name_reuse_seconds, queue_name_reuse_seconds, local_principal)
        except BaseException:
            if isinstance(self.store, SqliteStore):
                self.store.close_now()
            raise
        self.api = Api(self.engine, self.iam)
        self.front_process = front_process
        self.front_lost = asyncio.Event()
        self._grpc: grpc.aio.Server | None = None
        self._front: subprocess.Popen[bytes] | None = None
        self._link: Link | None = None
        self._sites: list[web.AppRunner] = []

    def _make_parts(
        self, task_name_reuse_seconds: float, queue_name_reuse_seconds: float, principal: str
    ) -> None:
        store = self.store
        snapshot = store.load() if isinstance(store, SqliteStore) else None
        if isinstance(store, SqliteStore) and snapshot is not None:
            self.signer = self._kept_signer(store, snapshot.meta)
        else:
            self.signer = TokenSigner()
        self.http = HttpClient()
        self.engine = Engine(
            self.clock,
            self.http,
            self.signer,
            task_name_reuse_seconds=task_name_reuse_seconds,
            queue_name_reuse_seconds=queue_name_reuse_seconds,
            store=store,
        )
        self.iam = Iam(self.engine, self.signer, self.clock, principal)
        if isinstance(store, SqliteStore) and snapshot is not None:
            try:
                self.engine.restore(snapshot)
            except Exception as error:  # a row that passed SQLite's checks but not ours
                raise StoreError(
                    f"{store.path} holds a queue or task this emulator cannot read "
                    f"({type(error).__name__}: {error}); nothing was changed: start with "
                    "--reset to wipe it, or with another --data-dir"
                ) from None
            store.start()

    @staticmethod
    def _kept_signer(store: SqliteStore, meta: dict[str, bytes]) -> TokenSigner:
        """The signing key kept in ``store``, or a new one, kept there now."""
        key, cert = meta.get(OIDC_KEY), meta.get(OIDC_CERT)
        try:
            signer = TokenSigner(key, cert)
        except ValueError as error:
            raise StoreError(
                f"{store.path} holds an OIDC signing key that cannot be read ({error}); "
                "nothing was changed: start with --reset to wipe it, or with another --data-dir"
            ) from None
        new_key, new_cert = signer.pem()
        if (new_key, new_cert) != (key, cert):
            store.put_meta({OIDC_KEY: new_key, OIDC_CERT: new_cert})
        return signer

    async def durable(self) -> None:
        """Waits until every change made so far is committed to the store; WriteFailed
        if it could not be."""
        waiter = self.store.committed()
        if waiter is not None:
            await waiter

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API, for an insecure channel."""
        return f"{self.host}:{self.port}"

    @property
    def keys_url(self) -> str:
        return f"http://{self.host}:{self.keys_port}"

    @property
    def rest_url(self) -> str:
        """The REST API's root, as ``api_endpoint`` of a REST client or gcloud's override."""
        return f"http://{self.host}:{self.rest_port}"

    def metadata_host(self, email: str) -> str:
        """``host:port`` of ``email``'s metadata server, for ``GCE_METADATA_HOST``."""
        return f"{self.host}:{self.metadata_ports[email]}"

    @property
    def certs_url(self) -> str:
        """PEM certificates by key id, as google-auth's ``verify_token`` reads them."""
        return f"{self.keys_url}/oauth2/v1/certs"

    async def start(self) -> None:
        await self.http.start()
        try:
            if self.front_process:
                await self._start_front()
            else:
                await self._start_grpc()
        except BaseException:
            await self.stop()
            raise
        try:
            self.keys_port = await self._serve(
                keys_app(self.signer, lambda: self.keys_url), self.keys_port
            )
            if self.rest_port is not None:
                self.rest_port = await self._serve(RestApi(self.api).app(), self.rest_port)
            for email, port in self.metadata_ports.items():
                app = metadata_app(self.iam, self.signer, self.clock, email)
                self.metadata_ports[email] = await self._serve(app, port)
        except BaseException:
            await self.stop()
            raise
        self.engine.resume_all()  # tasks restored from the store are dispatched again

    async def _serve(self, app: web.Application, port: int) -> int:
        """Serves ``app`` on ``host:port``; the port it listens on."""
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._sites.append(runner)
        bound: int = runner.addresses[0][1]
        return bound

    async def _start_grpc(self) -> None:
        self._grpc, self.port = await start_grpc_server(
            self.host, self.port, generic_handler(self.api)
        )

    async def _start_front(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            command = [sys.executable, "-m", "tasks_emulator.front", "--host", self.host]
            command += ["--port", str(self.port), "--link-fd", str(theirs.fileno())]
            self._front = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env)
        finally:
            theirs.close()
        ready: asyncio.Future[int] = loop.create_future()

        def on_frame(call_id: int, kind: int, payload: bytes) -> None:
            if kind == READY and not ready.done():
                ready.set_result(int(payload))
            elif kind == FAILED and not ready.done():
                ready.set_exception(OSError(payload.decode()))
            elif self._link is None:
                return
            elif kind == OVERSIZED:
                self._link.send(call_id, *request_too_large())
            else:
                link = self._link
                self.api.answer_later(
                    kind, payload, lambda code, body: link.send(call_id, code, body)
                )

        def on_close() -> None:
            if not ready.done():
                ready.set_exception(OSError("the gRPC front process exited before it was ready"))
            self.front_lost.set()

        _, link = await loop.create_connection(lambda: Link(on_frame, on_close), sock=ours)
        self._link = link
        self.port = await asyncio.wait_for(ready, FRONT_START_SECONDS)

    async def _stop_front(self) -> None:
        if self._link is not None:
            self._link.close()  # the front stops when its link closes
            self._link = None
        front, self._front = self._front, None
        if front is None:
            return
        deadline = time.monotonic() + 5
        while front.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if front.poll() is None:
            front.kill()
            front.wait()

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
            self._grpc = None
        await self._stop_front()
        sites, self._sites = self._sites, []
        for runner in sites:
            await runner.cleanup()
        await self.clock.cancel_all()
        await self.http.close()
        await self.store.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def ensure_queue(self, queue: dict[str, Any]) -> Any:
        """Creates ``queue`` (a Queue in the REST API's JSON shape, such as
        ``{"name": ..., "rateLimits": {...}, "retryConfig": {...}}``), or updates the
        existing queue of that name to its settings. ``"state": "PAUSED"`` pauses it."""
        fields = dict(queue)
        state = fields.pop("state", "RUNNING")
        policy = fields.pop("iamPolicy", None)
        pb = QueuePb()
        json_format.ParseDict(fields, pb)
        policy_pb = json_format.ParseDict(policy, PolicyPb()) if policy is not None else None
        if policy_pb is not None:
            check_policy(policy_pb)  # before the queue changes: a bad file changes nothing
        if pb.name in self.engine.queues:
            self.engine.update_queue(pb, field_mask_pb2.FieldMask())
        else:
            self.engine.create_queue(pb.name.rsplit("/queues/", 1)[0], pb)
        if policy_pb is not None:
            policy_pb.etag = b""
            self.iam.set_policy(pb.name, policy_pb)
        if state == "PAUSED":
            return self.engine.pause_queue(pb.name)
        return self.engine.resume_queue(pb.name)

    def set_project_policy(self, project: str, policy: dict[str, Any]) -> None:
        """Gives ``project`` (``projects/P``) an IAM policy in the API's JSON shape, which
        every queue of the project inherits."""
        self.iam.set_project_policy(project, json_format.ParseDict(policy, PolicyPb()))


class EmulatorThread:
    """Runs an ``Emulator`` on its own event loop in a background thread, for synchronous
    callers (the official synchronous client, a local runner)."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tasks-emulator", daemon=True
        )
        self._kwargs = kwargs
        self.emulator: Emulator | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Runs ``coro`` on the emulator's loop and returns its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def call(self, function: Any, *args: Any) -> Any:
        """Calls ``function(*args)`` on the emulator's loop (the engine is not thread-safe)."""

        async def call() -> Any:
            return function(*args)

        return self.run(call())

    def start(self) -> Emulator:
        self._thread.start()

        async def make() -> Emulator:
            emulator = Emulator(**self._kwargs)
            await emulator.start()
            return emulator

        self.emulator = self.run(make())
        return self.emulator

    def advance(self, seconds: float) -> None:
        """Moves a VirtualClock forward (see ``VirtualClock.advance``)."""
        assert self.emulator is not None
        clock = self.emulator.clock
        if not isinstance(clock, VirtualClock):
            raise TypeError("advance() needs an Emulator started with clock=VirtualClock()")
        self.run(clock.advance(seconds), timeout=None)

    def stop(self) -> None:
        if self.emulator is not None:
            self.run(self.emulator.stop())
            self.emulator = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
