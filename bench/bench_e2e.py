"""End-to-end figures of the local system (task-app -> emulator -> worker), as `make dev`
runs it: start-up time, click-to-worker latency, and tasks per second through all three.

- latency: one task per POST /tasks on an idle queue, from just before the POST to the
  moment the worker's log line for that task reaches the runner (p50/p99);
- throughput: tasks created through the JSON API by a few concurrent clients (100 per
  request) until N exist, and delivered to the worker, at the dev queue's own rate limit,
  then with the queue raised to Cloud Tasks' maximum (500/s) through UpdateQueue.

Everything binds to 127.0.0.1 on free ports, runs a bounded number of tasks, and stops.
Figures are printed, not asserted.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import requests
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import field_mask_pb2

from local_stack.plan import EMULATOR, TASK_APP, WORKER, Ports, build_plan
from local_stack.queue import describe_queues
from local_stack.rendering import declared_queues
from local_stack.supervisor import LocalStack
from stack_settings import load_stack_file

STACK_FILE = Path("Pulumi.dev.yaml")
LATENCY_TASKS = 200
DEV_RATE_TASKS = 500
MAX_RATE_TASKS = 2000
CLIENTS = 4
PER_REQUEST = 100
DELIVERY_TIMEOUT_SECONDS = 120.0


class Deliveries:
    """When the worker's first log line for each task arrived (one line per attempt)."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}
        self._changed = threading.Condition()

    def __call__(self, part: str, line: str) -> None:
        if part != WORKER or '"task_message"' not in line:
            return
        now = time.monotonic()
        try:
            task = json.loads(line)["cloud_tasks"]["task"]
        except (ValueError, KeyError, TypeError):
            return
        with self._changed:
            self.first_seen.setdefault(task, now)
            self._changed.notify_all()

    def wait(self, ids: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(task in self.first_seen for task in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(task not in self.first_seen for task in ids)
                    raise TimeoutError(f"{missing} of {len(ids)} tasks not delivered in time")
                self._changed.wait(min(left, 0.5))
            return {task: self.first_seen[task] for task in ids}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _latency(session: requests.Session, url: str, deliveries: Deliveries) -> None:
    samples = []
    for _ in range(LATENCY_TASKS):
        started = time.monotonic()
        response = session.post(url, json={"message": "latency"}, timeout=30)
        response.raise_for_status()
        (task,) = response.json()["tasks"]
        samples.append(deliveries.wait([task], timeout=30)[task] - started)
        time.sleep(0.01)  # an idle queue: one task at a time, well below the rate limit
    ms = [s * 1000 for s in samples]
    print(
        f"click-to-worker latency, {LATENCY_TASKS} tasks one at a time (POST /tasks -> worker "
        f"log line): p50 {_percentile(ms, 0.5):.1f} ms, p99 {_percentile(ms, 0.99):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms, max {max(ms):.1f} ms"
    )


def _throughput(url: str, deliveries: Deliveries, total: int, label: str) -> None:
    def create(batch: int) -> list[str]:
        response = requests.post(
            url, json={"message": f"throughput {batch}", "count": PER_REQUEST}, timeout=60
        )
        response.raise_for_status()
        ids: list[str] = response.json()["tasks"]
        return ids

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        batches = list(pool.map(create, range(total // PER_REQUEST)))
    created = time.monotonic() - started
    ids = [task for batch in batches for task in batch]
    seen = deliveries.wait(ids, timeout=DELIVERY_TIMEOUT_SECONDS)
    took = max(seen.values()) - started
    print(
        f"end-to-end throughput, {label}: {len(ids)} tasks created in {created:.2f} s "
        f"({len(ids) / created:.0f}/s through the task-app, {CLIENTS} clients x "
        f"{PER_REQUEST} per request), all delivered after {took:.2f} s -> "
        f"{len(ids) / took:.0f} tasks/s end to end"
    )


def main() -> None:
    settings = load_stack_file(STACK_FILE)
    ports = Ports.free()
    state_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    queues = [queue.to_api() for queue in declared_queues(STACK_FILE, state_dir)]
    plan = build_plan(settings, STACK_FILE, queues, ports=ports, state_dir=state_dir)
    deliveries = Deliveries()
    address = f"127.0.0.1:{ports.emulator}"
    rest_url = f"http://127.0.0.1:{ports.rest}"
    names = [str(queue["name"]) for queue in queues]
    stack = LocalStack(
        plan, deliveries, probes={EMULATOR: lambda: describe_queues(rest_url, names)}
    )
    started = time.monotonic()
    try:
        stack.start()
        print(
            f"local system ready in {time.monotonic() - started:.1f} s "
            "(emulator, then worker and task-app under gunicorn)"
        )
        url = f"{plan[TASK_APP].url}/tasks"
        with requests.Session() as session:
            _latency(session, url, deliveries)
        _throughput(
            url,
            deliveries,
            DEV_RATE_TASKS,
            f"Pulumi.dev.yaml queue ({settings.max_dispatches_per_second:g}/s)",
        )

        channel = grpc.insecure_channel(address)
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        queue = client.get_queue(name=settings.queue_id)
        queue.rate_limits.max_dispatches_per_second = 500
        queue.rate_limits.max_concurrent_dispatches = 1000
        client.update_queue(
            queue=queue, update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"])
        )
        channel.close()
        _throughput(url, deliveries, MAX_RATE_TASKS, "queue raised to 500/s (Cloud Tasks' max)")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
