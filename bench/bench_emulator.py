"""Emulator figures: this emulator with its state on disk (``--data-dir``, the default)
and in memory (``--in-memory``) side by side in one run, beside PyPI's
gcloud-tasks-emulator 0.6.2.

First the API's own cost, on this emulator alone: CreateTask and GetQueue over gRPC and
over REST (p50/p99 one call at a time, CreateTask calls/s with 100 in flight), and
CreateTask with authorization on (a queue policy, a token from the metadata server) beside
it off. ``python -m bench.bench_emulator --api-only`` prints just that table.

Three workloads, run on each emulator over the same wire (the CloudTasks gRPC API, driven
with the protobuf classes of google-cloud-tasks), delivering to one minimal asyncio HTTP
target in its own process. The client side and the target run on the same event loop as
the emulator (uvloop where installed), so as little of the two cores as possible goes to
the load itself:

1. sustained dispatch rate: one queue allowing 500/s with a backlog, deliveries counted
   over 30 s (achieved rate, deviation from 500/s, spread of the per-second counts);
2. create->delivery latency on an idle queue (p50/p99, one task at a time);
3. throughput on 8 queues of 500/s: tasks created as fast as one client process with 100
   calls in flight allows, created + delivered per second end to end; then delivery
   alone, from a backlog. Five rounds each; the table gives the median, the rounds follow
   it (a shared 2-core machine varies by a quarter from one round to the next).

gcloud-tasks-emulator pins protobuf<5, so it is installed with pip into its own temporary
virtualenv and run from there as a subprocess; when that is impossible (no package index)
its column says why (``--ours-only`` leaves it out). Everything binds to 127.0.0.1 on free
ports and stops by itself; the durable run's data directory is a temporary one.

The issue's targets are printed beside the durable figures: idle create->delivery p50 at
most 3 ms, at least 2,000 tasks/s created and delivered across the 8 queues, and the 500/s
queue dispatching 485-515/s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.cloud.tasks_v2.types import cloudtasks, queue, task
from google.protobuf import empty_pb2
from tasks_emulator.loop import run as run_loop

REPO = Path(__file__).resolve().parents[1]
PARENT = "projects/bench/locations/us-central1"
SERVICE = "/google.cloud.tasks.v2.CloudTasks/"
SUSTAIN_SECONDS = 30
SUSTAIN_RATE = 500.0
LATENCY_TASKS = 200
THROUGHPUT_QUEUES = 8
THROUGHPUT_TASKS = 10_000
THROUGHPUT_ROUNDS = 5
THROUGHPUT_TIME_LIMIT = 60.0
CONCURRENT_CALLS = 100
GENERATOR_PROCESSES = 1
OTHER = "gcloud-tasks-emulator==0.6.2"

TARGET_SOURCE = r"""
import asyncio, json, sys, time

arrivals = []

class Target(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length, close = 0, False
            lines = head.split(b"\r\n")
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if lines[0].startswith(b"GET /__arrivals"):
                payload = json.dumps(arrivals).encode()
                arrivals.clear()
                reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            else:
                arrivals.append((time.time(), body.decode() or "0"))
                reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            if close:
                reply = reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            self.transport.write(reply)
            if close:
                self.transport.close()
                return

async def main():
    server = await asyncio.get_running_loop().create_server(Target, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)

try:
    import uvloop
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TargetServer:
    """The worker stand-in: records (arrival time, body) of every request."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", TARGET_SOURCE], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def arrivals(self) -> list[tuple[float, float]]:
        """Every request since the last call: (arrival time, send time in its body)."""
        with urllib.request.urlopen(self.url + "/__arrivals", timeout=30) as response:
            return [(at, float(body)) for at, body in json.load(response)]

    def stop(self) -> None:
        _stop(self.process)


class Api:
    """The CloudTasks methods the workloads use, over one grpc.aio channel."""

    def __init__(
        self, address: str, pool: concurrent.futures.ProcessPoolExecutor | None = None
    ) -> None:
        self.address = address
        self.pool = pool
        self.channel = grpc.aio.insecure_channel(address)

        def method(name: str, request: Any, response: Any) -> Callable[..., Any]:
            stub: Callable[..., Any] = self.channel.unary_unary(
                SERVICE + name,
                request_serializer=request.pb().SerializeToString
                if hasattr(request, "pb")
                else request.SerializeToString,
                response_deserializer=response.pb().FromString
                if hasattr(response, "pb")
                else response.FromString,
            )
            return stub

        self.create_queue = method("CreateQueue", cloudtasks.CreateQueueRequest, queue.Queue)
        self.pause = method("PauseQueue", cloudtasks.PauseQueueRequest, queue.Queue)
        self.resume = method("ResumeQueue", cloudtasks.ResumeQueueRequest, queue.Queue)
        self.purge = method("PurgeQueue", cloudtasks.PurgeQueueRequest, queue.Queue)
        self.delete_queue = method("DeleteQueue", cloudtasks.DeleteQueueRequest, empty_pb2.Empty)
        self.create_task = method("CreateTask", cloudtasks.CreateTaskRequest, task.Task)
        self.request_pb = cloudtasks.CreateTaskRequest.pb()
        self.queue_request_pb = cloudtasks.CreateQueueRequest.pb()

    async def make_queue(self, queue_id: str, rate: float) -> str:
        name = f"{PARENT}/queues/{queue_id}"
        request = self.queue_request_pb(parent=PARENT)
        request.queue.name = name
        request.queue.rate_limits.max_dispatches_per_second = rate
        request.queue.rate_limits.max_concurrent_dispatches = 1000
        await self.create_queue(request, timeout=30)
        return name

    async def task(self, queue_name: str, url: str) -> None:
        request = self.request_pb(parent=queue_name)
        request.task.http_request.url = url
        request.task.http_request.body = f"{time.time():.6f}".encode()
        await self.create_task(request, timeout=60)

    async def close(self) -> None:
        await self.channel.close()


async def _create_many(api: Api, queues: list[str], url: str, count: int) -> float:
    """Creates ``count`` tasks round-robin over ``queues`` from the generator process(es),
    each with CONCURRENT_CALLS calls in flight, away from this process (which collects
    the arrivals); returns the seconds it took."""
    loop = asyncio.get_running_loop()
    share = [count // GENERATOR_PROCESSES] * GENERATOR_PROCESSES
    share[0] += count - sum(share)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            loop.run_in_executor(api.pool, _generate, api.address, queues, url, part)
            for part in share
        )
    )
    return time.perf_counter() - started


def _warm_up() -> None:
    """Imports the client's modules in a generator process before anything is timed."""
    Api("127.0.0.1:1")


def _generate(address: str, queues: list[str], url: str, count: int) -> None:
    async def run() -> None:
        api = Api(address)
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                await api.task(queues[index % len(queues)], url)

        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENT_CALLS)))
        finally:
            await api.close()

    run_loop(run())


@dataclass
class Figures:
    name: str
    sustained_rate: float | None = None
    sustained_spread: str = ""
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    # One figure per throughput round; the table shows their median.
    create_rates: list[float] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)
    delivery_rates: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def create_rate(self) -> float | None:
        return statistics.median(self.create_rates) if self.create_rates else None

    @property
    def throughput(self) -> float | None:
        return statistics.median(self.throughputs) if self.throughputs else None

    @property
    def delivery_rate(self) -> float | None:
        return statistics.median(self.delivery_rates) if self.delivery_rates else None


async def _sustained(api: Api, target: TargetServer, figures: Figures) -> None:
    name = await api.make_queue("sustained", SUSTAIN_RATE)
    await api.pause(cloudtasks.PauseQueueRequest.pb()(name=name))
    backlog = int(SUSTAIN_RATE * SUSTAIN_SECONDS * 1.1) + 200
    await _create_many(api, [name], target.url, backlog)
    target.arrivals()
    # The window opens when ResumeQueue is sent: deliveries start before it is answered
    # (with the state on disk, the answer waits for its commit).
    started = time.time()
    await api.resume(cloudtasks.ResumeQueueRequest.pb()(name=name))
    await asyncio.sleep(SUSTAIN_SECONDS + 1)
    await api.purge(cloudtasks.PurgeQueueRequest.pb()(name=name))
    await asyncio.sleep(1)
    times = [at for at, _ in target.arrivals() if started <= at < started + SUSTAIN_SECONDS]
    figures.sustained_rate = len(times) / SUSTAIN_SECONDS
    per_second = [0] * SUSTAIN_SECONDS
    for at in times:
        per_second[int(at - started)] += 1
    # The first second holds the bucket's initial burst; the spread is of the rest.
    steady = per_second[1:]
    figures.sustained_spread = (
        f"per-second counts after the first: min {min(steady)}, max {max(steady)}, "
        f"stdev {statistics.pstdev(steady):.1f}; first second {per_second[0]}"
    )


async def _latency(api: Api, target: TargetServer, figures: Figures) -> None:
    name = await api.make_queue("idle", SUSTAIN_RATE)
    target.arrivals()
    latencies: list[float] = []
    for _ in range(LATENCY_TASKS):
        await api.task(name, target.url)
        deadline = time.monotonic() + 5
        got: list[tuple[float, float]] = []
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
            got = target.arrivals()
        latencies.extend((at - sent) * 1000 for at, sent in got)
    if len(latencies) < LATENCY_TASKS:
        figures.notes.append(f"latency: only {len(latencies)}/{LATENCY_TASKS} delivered in 5 s")
    if latencies:
        latencies.sort()
        figures.latency_p50_ms = latencies[len(latencies) // 2]
        figures.latency_p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


async def _throughput(api: Api, target: TargetServer, figures: Figures, count: int) -> None:
    names = [await api.make_queue(f"bulk-{i}", SUSTAIN_RATE) for i in range(THROUGHPUT_QUEUES)]
    for _ in range(THROUGHPUT_ROUNDS):
        # End to end: creating and delivering at the same time.
        target.arrivals()
        started = time.time()
        created_in = await _create_many(api, names, target.url, count)
        figures.create_rates.append(count / created_in)
        delivered = await _collect(target, count, started, figures, "throughput")
        if delivered:
            figures.throughputs.append(len(delivered) / (max(delivered) - started))
        # Delivery alone: a backlog in paused queues, then every queue resumed at once.
        for name in names:
            await api.pause(cloudtasks.PauseQueueRequest.pb()(name=name))
        await _create_many(api, names, target.url, count)
        target.arrivals()
        started = time.time()
        for name in names:
            await api.resume(cloudtasks.ResumeQueueRequest.pb()(name=name))
        delivered = await _collect(target, count, started, figures, "backlog delivery")
        if delivered:
            figures.delivery_rates.append(len(delivered) / (max(delivered) - started))
        for name in names:
            await api.purge(cloudtasks.PurgeQueueRequest.pb()(name=name))


async def _collect(
    target: TargetServer, count: int, started: float, figures: Figures, what: str
) -> list[float]:
    delivered: list[float] = []
    deadline = started + THROUGHPUT_TIME_LIMIT
    while len(delivered) < count and time.time() < deadline:
        await asyncio.sleep(0.2)
        delivered.extend(at for at, _ in target.arrivals())
    if len(delivered) < count:
        figures.notes.append(
            f"{what}: {len(delivered)}/{count} delivered within {THROUGHPUT_TIME_LIMIT:.0f} s"
        )
    return delivered


async def _measure(address: str, target: TargetServer, figures: Figures, bulk: int) -> None:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(GENERATOR_PROCESSES, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(pool, _warm_up) for _ in range(GENERATOR_PROCESSES))
        )
        api = Api(address, pool)
        try:
            await _sustained(api, target, figures)
            await _latency(api, target, figures)
            await _throughput(api, target, figures, bulk)
        finally:
            await api.close()


def _state_args(durable: bool, directory: str) -> list[str]:
    return ["--data-dir", directory] if durable else ["--in-memory"]


def _run_ours(target: TargetServer, durable: bool) -> Figures:
    figures = Figures("tasks_emulator " + ("durable" if durable else "in-memory"))
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="tasks-emulator-bench-") as directory:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tasks_emulator", "--port", str(port), "--keys-port", "0",
                "--rest-port", "0", "--log-level", "warning", *_state_args(durable, directory),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, process)
            asyncio.run(_measure(f"127.0.0.1:{port}", target, figures, THROUGHPUT_TASKS))
        finally:
            _stop(process)
    return figures


def _run_other(target: TargetServer) -> Figures:
    figures = Figures(OTHER)
    workdir = Path(tempfile.mkdtemp(prefix="gcloud-tasks-emulator-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(workdir / "venv")], check=True, capture_output=True
        )
        pip = subprocess.run(
            [str(workdir / "venv/bin/pip"), "install", "--quiet", OTHER],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if pip.returncode != 0:
            figures.notes.append(f"not measured: pip install failed: {pip.stderr.strip()[-300:]}")
            return figures
        port = _free_port()
        process = subprocess.Popen(
            [str(workdir / "venv/bin/gcloud-tasks-emulator"), "start", "-p", str(port), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, process)
            # Fewer bulk tasks: it dispatches one at a time per queue.
            asyncio.run(_measure(f"127.0.0.1:{port}", target, figures, THROUGHPUT_TASKS // 4))
        finally:
            _stop(process)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        figures.notes.append(f"not measured: {error}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(ours: float | None, other: float | None, lower_is_better: bool | None) -> str:
    if not ours or not other or lower_is_better is None:
        return "-"
    return f"{(other / ours if lower_is_better else ours / other):.1f}x"


# ---- the API over gRPC and REST, and the cost of authorization -------------------------

API_CALLS = 1000
API_BULK = 5000
BENCH_ACCOUNT = "bench-app@bench-project.iam.gserviceaccount.com"


@dataclass
class CallFigures:
    """Per-call latency (ms) and calls/s of one transport."""

    create_p50: float = 0.0
    create_p99: float = 0.0
    get_p50: float = 0.0
    get_p99: float = 0.0
    create_rate: float = 0.0
    authorized_create_p50: float = 0.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def _timed(call: Callable[[], Any], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _rate(call: Callable[[], Any], count: int) -> float:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENT_CALLS)))
    return count / (time.perf_counter() - started)


class _Grpc:
    def __init__(self, address: str, queue_name: str, token: str = "") -> None:
        self.api = Api(address)
        self.queue_name = queue_name
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.get = self.api.channel.unary_unary(
            SERVICE + "GetQueue",
            request_serializer=cloudtasks.GetQueueRequest.pb().SerializeToString,
            response_deserializer=queue.Queue.pb().FromString,
        )
        self.get_request = cloudtasks.GetQueueRequest.pb()(name=queue_name)
        self.create_request = self.api.request_pb(parent=queue_name)
        self.create_request.task.http_request.url = "http://127.0.0.1:9/"

    async def create(self) -> None:
        await self.api.create_task(self.create_request, timeout=30, metadata=self.metadata)

    async def get_queue(self) -> None:
        await self.get(self.get_request, timeout=30)


class _Rest:
    def __init__(self, session: Any, url: str, queue_name: str, token: str = "") -> None:
        self.session = session
        self.create_url = f"{url}/v2/{queue_name}/tasks"
        self.get_url = f"{url}/v2/{queue_name}"
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.body = json.dumps({"task": {"httpRequest": {"url": "http://127.0.0.1:9/"}}})

    async def create(self) -> None:
        async with self.session.post(self.create_url, data=self.body, headers=self.headers) as r:
            await r.read()
            assert r.status == 200, r.status

    async def get_queue(self) -> None:
        async with self.session.get(self.get_url) as r:
            await r.read()
            assert r.status == 200, r.status


async def _measure_transport(client: Any, figures: CallFigures) -> None:
    await _timed(client.create, 100)  # warm up connections and code paths
    figures.create_p50, figures.create_p99 = _percentiles(await _timed(client.create, API_CALLS))
    figures.get_p50, figures.get_p99 = _percentiles(await _timed(client.get_queue, API_CALLS))
    figures.create_rate = await _rate(client.create, API_BULK)


async def _api_figures(ready: str) -> tuple[CallFigures, CallFigures]:
    import aiohttp  # noqa: PLC0415 - only this section speaks HTTP to the emulator

    address = ready.split("gRPC ", 1)[1].split(",", 1)[0]
    rest = ready.split("REST ", 1)[1].split(",", 1)[0]
    metadata = ready.split(f"metadata {BENCH_ACCOUNT} ", 1)[1].split(",", 1)[0].strip()
    grpc_figures, rest_figures = CallFigures(), CallFigures()
    connector = aiohttp.TCPConnector(limit=CONCURRENT_CALLS)
    async with aiohttp.ClientSession(connector=connector) as session:
        api = Api(address)
        name = await api.make_queue("api", SUSTAIN_RATE)
        await api.pause(cloudtasks.PauseQueueRequest.pb()(name=name))  # no deliveries
        await _measure_transport(_Grpc(address, name), grpc_figures)
        await _measure_transport(_Rest(session, rest, name), rest_figures)
        # Authorization on: a policy on the queue, a token from the metadata server.
        flavor = {"Metadata-Flavor": "Google"}
        token_url = f"http://{metadata}/computeMetadata/v1/instance/service-accounts/default/token"
        async with session.get(token_url, headers=flavor) as response:
            token = (await response.json())["access_token"]
        policy = {"policy": {"bindings": [
            {"role": "roles/cloudtasks.enqueuer", "members": [f"serviceAccount:{BENCH_ACCOUNT}"]}
        ]}}  # fmt: skip
        async with session.post(f"{rest}/v2/{name}:setIamPolicy", json=policy) as response:
            assert response.status == 200, await response.text()
        for client, figures in (
            (_Grpc(address, name, token), grpc_figures),
            (_Rest(session, rest, name, token), rest_figures),
        ):
            await _timed(client.create, 100)
            figures.authorized_create_p50 = _percentiles(await _timed(client.create, API_CALLS))[0]
        await api.purge(cloudtasks.PurgeQueueRequest.pb()(name=name))
        await api.close()
    return grpc_figures, rest_figures


def api_main() -> None:
    """CreateTask and GetQueue over gRPC and REST, one call at a time (p50/p99) and with
    100 in flight (calls/s); then CreateTask with authorization on (a queue policy and a
    token from the metadata server) beside it off. The state is on disk (the default), so a
    CreateTask's time includes its commit."""
    with tempfile.TemporaryDirectory(prefix="tasks-emulator-bench-") as directory:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tasks_emulator", "--port", "0", "--keys-port", "0",
                "--rest-port", "0", "--metadata", f"{BENCH_ACCOUNT}=0", "--log-level",
                "warning", "--data-dir", directory,
            ],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            ready = process.stdout.readline()
            if not ready.startswith("tasks_emulator ready"):
                raise RuntimeError(f"the emulator did not start: {ready!r}")
            grpc_figures, rest_figures = run_loop(_api_figures(ready))
        finally:
            _stop(process)
    rows = [
        ("CreateTask p50, one call at a time (ms)", "create_p50", ".2f"),
        ("CreateTask p99 (ms)", "create_p99", ".2f"),
        ("GetQueue p50 (ms)", "get_p50", ".2f"),
        ("GetQueue p99 (ms)", "get_p99", ".2f"),
        ("CreateTask calls/s (100 in flight)", "create_rate", ".0f"),
        ("CreateTask p50, authorization on (ms)", "authorized_create_p50", ".2f"),
    ]
    print(
        f"{'API call (paused queue, 1 client, durable)':44} {'gRPC':>10} {'REST':>10} "
        f"{'REST/gRPC':>10}"
    )
    for label, attribute, spec in rows:
        mine, rest = getattr(grpc_figures, attribute), getattr(rest_figures, attribute)
        print(f"{label:44} {mine:>10{spec}} {rest:>10{spec}} {rest / mine:>9.2f}x")
    for name, figures in (("gRPC", grpc_figures), ("REST", rest_figures)):
        cost = figures.authorized_create_p50 - figures.create_p50
        print(f"{name}: authorization on adds {cost:+.3f} ms to CreateTask p50")


# (label, Figures attribute, format, lower is better (None: neither), the target)
ROWS = [
    ("sustained rate, queue at 500/s, 30 s (tasks/s)", "sustained_rate", ".1f", None, "485-515"),
    ("create->delivery latency p50, idle queue (ms)", "latency_p50_ms", ".1f", True, "<= 3"),
    ("create->delivery latency p99, idle queue (ms)", "latency_p99_ms", ".1f", True, ""),
    ("CreateTask calls/s (1 client, 100 in flight)", "create_rate", ".0f", False, ""),
    ("created + delivered, 8 queues x 500/s (tasks/s)", "throughput", ".0f", False, ">= 2000"),
    ("delivered from a backlog, 8 queues x 500/s (tasks/s)", "delivery_rate", ".0f", False, ""),
]


def main(argv: list[str] | None = None) -> None:
    """Every figure; ``--api-only``: only the gRPC/REST call figures; ``--ours-only``:
    without gcloud-tasks-emulator."""
    argv = argv or []
    api_main()
    if "--api-only" in argv:
        return
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f} (a shared machine)")
    target = TargetServer()
    try:
        durable = _run_ours(target, durable=True)
        memory = _run_ours(target, durable=False)
        other = Figures(OTHER, notes=["not measured: --ours-only"])
        if "--ours-only" not in argv:
            other = _run_other(target)
    finally:
        target.stop()
    print(
        f"{'figure':53} {'target':>8} {'durable':>9} {'in-memory':>10} {'dur/mem':>8} "
        f"{'gcloud-t-e 0.6.2':>17} {'ratio':>6}"
    )
    for label, attribute, spec, lower, goal in ROWS:
        mine, memory_figure, theirs = (
            getattr(figures, attribute) for figures in (durable, memory, other)
        )
        print(
            f"{label:53} {goal:>8} {_fmt(mine, spec):>9} {_fmt(memory_figure, spec):>10} "
            f"{_plain_ratio(mine, memory_figure):>8} {_fmt(theirs, spec):>17} "
            f"{_ratio(mine, theirs, lower):>6}"
        )
    for figures in (durable, memory, other):
        if figures.sustained_rate is not None:
            deviation = (figures.sustained_rate - SUSTAIN_RATE) / SUSTAIN_RATE * 100
            print(f"{figures.name}: sustained rate {deviation:+.2f}% from the queue's 500/s")
        if figures.sustained_spread:
            print(f"{figures.name}: {figures.sustained_spread}")
        for label, rates in (
            ("CreateTask calls/s", figures.create_rates),
            ("created + delivered/s", figures.throughputs),
            ("delivered from a backlog/s", figures.delivery_rates),
        ):
            if rates:
                print(f"{figures.name}: {label} by round: " + ", ".join(f"{r:.0f}" for r in rates))
        for note in figures.notes:
            print(f"{figures.name}: {note}")
    print(
        "dur/mem: the durable figure over the in-memory one. ratio: how many times better "
        "the durable tasks_emulator is than gcloud-tasks-emulator (lower latency, higher "
        "rates); the sustained rate is judged by its deviation from 500/s instead"
    )


def _plain_ratio(first: float | None, second: float | None) -> str:
    return "-" if not first or not second else f"{first / second:.2f}"


if __name__ == "__main__":
    main(sys.argv[1:])
