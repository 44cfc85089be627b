"""Service figures, measured side by side in one run.

Cold start: process start to the first 200 from ``/healthz`` under gunicorn, for a bare
Flask app (the floor: nothing but Flask and gunicorn, with the services' own server
settings) and for each service, the three started in turn in every round so that the
machine's load falls on all alike; the ratio to the bare app is the figure that matters.
Then the time from SIGTERM to the exit of an idle process, the task-app's first call of
Cloud Tasks after start (the client library loads at first use), task-app's POST /tasks
latency against the tests' fake Cloud Tasks (task-app's own cost plus one local REST round
trip, not Google's), and how long /healthz takes to answer while idle or slow clients hold
connections, with stock gthread (as gunicorn ships it, and with a short keep-alive and
timeout) beside the services' own worker class.

Everything binds to 127.0.0.1 on free ports and stops by itself.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tasks_emulator import Emulator, EmulatorThread

from tests.app.fake_cloud_tasks import FakeCloudTasks
from tests.app.robustness.socket_attacks import attacking, healthz_seconds, running

REPO = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
COLD_START_ROUNDS = int(os.environ.get("BENCH_COLD_START_ROUNDS", "7"))
LATENCY_REQUESTS = 500
WARMUP_REQUESTS = 20
START_TIMEOUT_SECONDS = 60.0
# The targets: each service within 1.5x of the bare app; idle, stopped within 0.5 s.
TARGET_RATIO = 1.5
TARGET_STOP_SECONDS = 0.5

QUEUE = "projects/bench-project/locations/europe-west1/queues/jobs"
TASK_APP_ACCOUNT = "task-app@bench-project.iam.gserviceaccount.com"


# A developer's own credentials must not stand in for the metadata server's.
FOREIGN = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(service: Service, port: int) -> subprocess.Popen[bytes]:
    env = {
        **{key: value for key, value in os.environ.items() if key not in FOREIGN},
        "PYTHONPATH": os.pathsep.join([str(REPO / "app"), str(REPO)]),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **service.env,
    }
    return subprocess.Popen(
        service.argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _wait_ready(port: int, process: subprocess.Popen[bytes], started: float) -> float:
    """Seconds from ``started`` until GET /healthz answers 200, polling every 5 ms."""
    while time.monotonic() - started < START_TIMEOUT_SECONDS:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode} before answering")
        try:
            if _get(port, "/healthz") == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no 200 from /healthz within {START_TIMEOUT_SECONDS} s")


def _stop(process: subprocess.Popen[bytes]) -> float:
    """Seconds from SIGTERM to the process' exit."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.monotonic() - signalled


@dataclass
class Run:
    ready: list[float]
    stop: list[float]
    first_call: list[float]


def _one_start(service: Service, first_call: str | None) -> tuple[float, float, float | None]:
    port = _free_port()
    started = time.monotonic()
    process = _start(service, port)
    try:
        ready = _wait_ready(port, process, started)
        call = None
        if first_call is not None:
            before = time.monotonic()
            status = _get(port, first_call)
            call = time.monotonic() - before
            if status != 200:
                raise RuntimeError(f"{service.name} GET {first_call} answered {status}")
        time.sleep(0.2)  # idle: nothing in flight when SIGTERM arrives
    finally:
        stop = _stop(process)
    return ready, stop, call


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def _post_latencies(port: int) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"message": "bench"})
    headers = {"Content-Type": "application/json"}
    latencies = []
    failures = 0
    for index in range(WARMUP_REQUESTS + LATENCY_REQUESTS):
        started = time.perf_counter()
        connection.request("POST", "/tasks", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if response.status != 201:
            failures += 1
        if index >= WARMUP_REQUESTS:
            latencies.append(elapsed)
    connection.close()
    return latencies, failures


IMPORT_RUNS = 3
IMPORTS = ("flask", "google.cloud.tasks_v2", "worker", "task_app")


def _import_seconds(module: str) -> float:
    """Wall time of a fresh interpreter importing ``module`` (interpreter start included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
    return time.monotonic() - started


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _services(fake_url: str, emulator: Emulator) -> list[Service]:
    metadata_host = emulator.metadata_host(TASK_APP_ACCOUNT)

    def gunicorn(config: str, app: str) -> list[str]:
        return [GUNICORN, "-c", config, app]

    bare_settings = "python:bench.bare_flask_conf"
    return [
        Service("bare Flask", gunicorn(bare_settings, "bench.bare_flask:app"), {}),
        Service(
            "worker",
            gunicorn("python:worker.gunicorn_conf", "worker:create_app()"),
            # Verifying tokens, as on Cloud Run (the keys are fetched at the first task).
            {
                "OIDC_SERVICE_ACCOUNT": TASK_APP_ACCOUNT,
                "OIDC_AUDIENCE": "https://worker.bench.example",
                "OIDC_CERTS_URL": emulator.certs_url,
                "DISPATCH_DEADLINE_SECONDS": "600",
            },
        ),
        Service(
            "task-app",
            gunicorn("python:task_app.gunicorn_conf", "task_app:create_app()"),
            {
                "QUEUE": QUEUE,
                "WORKER_URL": "http://127.0.0.1:1",
                "OIDC_SERVICE_ACCOUNT": TASK_APP_ACCOUNT,
                "SECRET_KEY": "bench-only",
                "CLOUD_TASKS_API_ENDPOINT": fake_url,
                # Its account's token from a metadata server, as on Cloud Run.
                "GCE_METADATA_HOST": metadata_host,
                "GCE_METADATA_IP": metadata_host,
            },
        ),
    ]


# (label, GUNICORN_CMD_ARGS): what each column runs; the services' own config is the last.
SERVERS = (
    ("stock gthread", "-k gthread"),
    ("gthread keepalive 1 timeout 5", "-k gthread --keep-alive 1 --timeout 5"),
    ("bounded gthread (ours)", ""),
)
# (label, kind of client, connections held)
HOSTILE = (
    ("8 idle", "idle", 8),
    ("200 idle", "idle", 200),
    ("8 slow-loris (head)", "slow-head", 8),
    ("8 slow body", "slow-body", 8),
)
PROBE_TIMEOUT_SECONDS = 10.0


def _hostile_figures(package: str, env: dict[str, str]) -> dict[tuple[str, str], float]:
    """Seconds /healthz took on a new connection right after each kind of client connected
    (8 request threads; PROBE_TIMEOUT_SECONDS means no answer in that time)."""
    figures = {}
    for server, arguments in SERVERS:
        with running(package, {**env, "GUNICORN_THREADS": "8"}, arguments) as service:
            for label, kind, count in HOSTILE:
                with attacking(service.port, kind, count):
                    figures[(server, label)] = healthz_seconds(
                        service.port, timeout=PROBE_TIMEOUT_SECONDS
                    )
                # Let the server drop what the attack left before the next one.
                time.sleep(1.0)
    return figures


def _print_hostile(name: str, figures: dict[tuple[str, str], float]) -> None:
    width = max(len(server) for server, _ in SERVERS) + 2
    print(f"  {name:24s}" + "".join(f"{server:>{width}s}" for server, _ in SERVERS))
    for label, _, _ in HOSTILE:
        cells = []
        for server, _ in SERVERS:
            seconds = figures[(server, label)]
            text = f"> {seconds:.0f} s" if seconds >= PROBE_TIMEOUT_SECONDS else _ms(seconds)
            cells.append(f"{text:>{width}s}")
        print(f"    {label:22s}" + "".join(cells))


def main() -> None:
    fake = FakeCloudTasks()
    fake_url = fake.start()
    # Only the emulator's metadata server is used: the fake stands in for Cloud Tasks.
    identities = EmulatorThread(
        host="127.0.0.1", port=0, keys_port=0, metadata={TASK_APP_ACCOUNT: 0}
    )
    emulator = identities.start()
    services = _services(fake_url, emulator)
    first_calls: dict[str, str | None] = {"task-app": "/api/tasks"}
    runs = {service.name: Run([], [], []) for service in services}
    try:
        for _ in range(COLD_START_ROUNDS):
            for service in services:
                ready, stop, call = _one_start(service, first_calls.get(service.name))
                run = runs[service.name]
                run.ready.append(ready)
                run.stop.append(stop)
                if call is not None:
                    run.first_call.append(call)
        floor = statistics.median(runs["bare Flask"].ready)
        print(
            f"cold start, process start to first 200 from /healthz, {COLD_START_ROUNDS} rounds "
            f"of the three in turn (2 shared cores: noisy); target <= {TARGET_RATIO}x the bare "
            f"app, stop <= {_ms(TARGET_STOP_SECONDS)}:"
        )
        for name, run in runs.items():
            ready = statistics.median(run.ready)
            print(
                f"  {name:10s} ready median {_ms(ready)} (min {_ms(min(run.ready))}, max "
                f"{_ms(max(run.ready))}), {ready / floor:.2f}x the bare app; idle stop after "
                f"SIGTERM median {_ms(statistics.median(run.stop))}, max {_ms(max(run.stop))}"
            )
        calls = runs["task-app"].first_call
        print(
            f"  task-app's first GET /api/tasks after start (loads the Cloud Tasks client): "
            f"median {_ms(statistics.median(calls))}, max {_ms(max(calls))}"
        )

        print(f"where a cold start goes: a fresh interpreter importing ({IMPORT_RUNS} runs):")
        baseline = statistics.median(_import_seconds("os") for _ in range(IMPORT_RUNS))
        print(f"  {'(interpreter alone)':24s} median {_ms(baseline)}")
        for module in IMPORTS:
            times = [_import_seconds(module) for _ in range(IMPORT_RUNS)]
            print(f"  {module:24s} median {_ms(statistics.median(times))}")

        _latency(services[2], fake)

        print(
            "time to a 200 from /healthz while hostile clients hold connections "
            "(8 request threads; one probe each, noisy on a shared machine):"
        )
        for service, package in ((services[1], "worker"), (services[2], "task_app")):
            _print_hostile(service.name, _hostile_figures(package, service.env))
    finally:
        fake.stop()
        identities.stop()


def _latency(task_app: Service, fake: FakeCloudTasks) -> None:
    port = _free_port()
    process = _start(task_app, port)
    try:
        _wait_ready(port, process, time.monotonic())
        latencies, failures = _post_latencies(port)
    finally:
        _stop(process)
    print(
        f"task-app POST /tasks against the local fake queue ({LATENCY_REQUESTS} sequential "
        f"requests after {WARMUP_REQUESTS} warm-up, keep-alive):"
    )
    print(
        f"  p50 {_ms(_percentile(latencies, 0.50))}, p99 {_ms(_percentile(latencies, 0.99))}, "
        f"max {_ms(max(latencies))}, non-201 answers: {failures}, "
        f"tasks created: {len(fake.tasks)}"
    )


if __name__ == "__main__":
    main()
