"""Service figures: cold start of each service under gunicorn (process start to the first
200 from /healthz), task-app's POST /tasks latency against the in-process fake Cloud
Tasks endpoint used by the tests (so the figure is task-app's own cost plus one local gRPC
round trip, not Google's), and how long /healthz takes to answer while idle or slow
clients hold connections, with stock gthread (as gunicorn ships it, and with a short
keep-alive and timeout) beside the services' own worker class.

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
from pathlib import Path

from tests.app.fake_cloud_tasks import FakeCloudTasks
from tests.app.robustness.socket_attacks import attacking, healthz_seconds, running

REPO = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
COLD_START_RUNS = 5
LATENCY_REQUESTS = 500
WARMUP_REQUESTS = 20
START_TIMEOUT_SECONDS = 60.0

QUEUE = "projects/bench-project/locations/europe-west1/queues/jobs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _service_env(port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "app"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **extra,
    }
    return env


def _start(package: str, port: int, extra: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [GUNICORN, "-c", f"python:{package}.gunicorn_conf", f"{package}:create_app()"],
        env=_service_env(port, extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> float:
    """Seconds until GET /healthz answers 200, polling every 10 ms."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_SECONDS:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode} before answering")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"no 200 from /healthz within {START_TIMEOUT_SECONDS} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _cold_starts(package: str, extra: dict[str, str]) -> list[float]:
    results = []
    for _ in range(COLD_START_RUNS):
        port = _free_port()
        process = _start(package, port, extra)
        try:
            results.append(_wait_ready(port, process))
        finally:
            _stop(process)
    return results


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
IMPORTS = (
    "flask",
    "google.cloud.logging_v2.handlers",
    "google.cloud.tasks_v2",
    "task_app",
    "worker",
)


def _import_seconds(module: str) -> float:
    """Wall time of a fresh interpreter importing ``module`` (interpreter start included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
    return time.monotonic() - started


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


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
    address = fake.start()
    task_app_env = {
        "QUEUE": QUEUE,
        "WORKER_URL": "http://127.0.0.1:1",
        "OIDC_SERVICE_ACCOUNT": "task-app@bench-project.iam.gserviceaccount.com",
        "SECRET_KEY": "bench-only",
        "CLOUD_TASKS_EMULATOR_HOST": address,
    }
    worker_env = {"OIDC_SERVICE_ACCOUNT": "", "DISPATCH_DEADLINE_SECONDS": "600"}
    try:
        print(f"cold start, process start to first 200 from /healthz ({COLD_START_RUNS} runs):")
        for name, package, extra in (
            ("task-app", "task_app", task_app_env),
            ("worker", "worker", worker_env),
        ):
            runs = _cold_starts(package, extra)
            print(
                f"  {name:8s} median {_ms(statistics.median(runs))}, max {_ms(max(runs))}, "
                f"min {_ms(min(runs))}"
            )

        print(f"where a cold start goes: a fresh interpreter importing ({IMPORT_RUNS} runs):")
        baseline = statistics.median(_import_seconds("os") for _ in range(IMPORT_RUNS))
        print(f"  {'(interpreter alone)':34s} median {_ms(baseline)}")
        for module in IMPORTS:
            runs = [_import_seconds(module) for _ in range(IMPORT_RUNS)]
            print(f"  {module:34s} median {_ms(statistics.median(runs))}")

        port = _free_port()
        process = _start("task_app", port, task_app_env)
        try:
            _wait_ready(port, process)
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

        print(
            "time to a 200 from /healthz while hostile clients hold connections "
            "(8 request threads; one probe each, noisy on a shared machine):"
        )
        for name, package, extra in (
            ("worker", "worker", worker_env),
            ("task-app", "task_app", task_app_env),
        ):
            _print_hostile(name, _hostile_figures(package, extra))
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
