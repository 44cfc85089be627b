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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import field_mask_pb2, json_format

from .clock import Clock, RealClock, VirtualClock
from .dispatch import HttpClient
from .engine import Engine
from .front import start_grpc_server
from .link import FAILED, READY, Link
from .loop import new_event_loop
from .oidc import TokenSigner, keys_app
from .servicer import answer, generic_handler, method_table
from .validation import QueuePb

T = TypeVar("T")


# The directory holding this package, for the front process when it is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
FRONT_START_SECONDS = 60.0


class Emulator:
    """The gRPC API on ``host:port`` and the OIDC keys on ``host:keys_port`` (port 0 picks
    a free port; the bound ports are in ``port``/``keys_port`` once started).

    With ``front_process`` the gRPC server runs in a child process (``front.py``) that
    passes every call to this one, which is how the command line runs it: gRPC's own
    per-call work then has a core of its own. Otherwise it runs here, on this loop.
    ``front_lost`` is set if that child ever exits while the emulator runs.
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
    ) -> None:
        self.host = host
        self.port = port
        self.keys_port = keys_port
        self.clock: Clock = clock or RealClock()
        self.signer = TokenSigner()
        self.http = HttpClient()
        self.engine = Engine(
            self.clock,
            self.http,
            self.signer,
            task_name_reuse_seconds=task_name_reuse_seconds,
            queue_name_reuse_seconds=queue_name_reuse_seconds,
        )
        self.front_process = front_process
        self.front_lost = asyncio.Event()
        self._grpc: grpc.aio.Server | None = None
        self._front: subprocess.Popen[bytes] | None = None
        self._link: Link | None = None
        self._keys: web.AppRunner | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API, for an insecure channel."""
        return f"{self.host}:{self.port}"

    @property
    def keys_url(self) -> str:
        return f"http://{self.host}:{self.keys_port}"

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
        runner = web.AppRunner(keys_app(self.signer), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.keys_port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            await self.stop()
            raise
        self._keys = runner
        self.keys_port = runner.addresses[0][1]

    async def _start_grpc(self) -> None:
        self._grpc, self.port = await start_grpc_server(
            self.host, self.port, generic_handler(self.engine)
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
        table = method_table(self.engine)
        ready: asyncio.Future[int] = loop.create_future()

        def on_frame(call_id: int, kind: int, payload: bytes) -> None:
            if kind == READY and not ready.done():
                ready.set_result(int(payload))
            elif kind == FAILED and not ready.done():
                ready.set_exception(OSError(payload.decode()))
            elif self._link is not None:
                code, body = answer(table, kind, payload)
                self._link.send(call_id, code, body)

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
        if self._keys is not None:
            await self._keys.cleanup()
            self._keys = None
        await self.clock.cancel_all()
        await self.http.close()

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
        pb = QueuePb()
        json_format.ParseDict(fields, pb)
        if pb.name in self.engine.queues:
            self.engine.update_queue(pb, field_mask_pb2.FieldMask())
        else:
            self.engine.create_queue(pb.name.rsplit("/queues/", 1)[0], pb)
        if state == "PAUSED":
            return self.engine.pause_queue(pb.name)
        return self.engine.resume_queue(pb.name)


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
