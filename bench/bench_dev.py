"""`make dev` as a developer meets it: from the command to the runner's "open http://..."
line, when the emulator, the worker and the task-app all answer (target: 3 s or less),
with each part's own ready time as the runner reports it, side by side.

Runs the Makefile's own command (sync, then the local runner) on free ports, a few times,
and stops the system each time with SIGTERM, as Ctrl-C does.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 3
TARGET_SECONDS = 3.0
TIMEOUT_SECONDS = 60.0
PORT_VARIABLES = (
    "TASK_APP_PORT",
    "WORKER_PORT",
    "EMULATOR_PORT",
    "EMULATOR_KEYS_PORT",
    "EMULATOR_REST_PORT",
    "TASK_APP_METADATA_PORT",
    "WORKER_METADATA_PORT",
)
PART_READY = re.compile(r"\| (\S+)\s+ready in ([\d.]+) s")


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _one_run() -> tuple[float, dict[str, float]]:
    """Seconds from `make dev` to the "open" line, and each part's reported ready time."""
    env = {**os.environ, **dict(zip(PORT_VARIABLES, map(str, _free_ports(7)), strict=True))}
    started = time.monotonic()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "dev"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    parts: dict[str, float] = {}
    ready = None
    # A runner that never gets ready is stopped, which ends the loop below.
    watchdog = threading.Timer(TIMEOUT_SECONDS, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in process.stdout:
            match = PART_READY.search(line)
            if match:
                parts[match[1]] = float(match[2])
            if "| open http" in line:
                ready = time.monotonic() - started
                break
    finally:
        watchdog.cancel()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    if ready is None:
        raise RuntimeError(f"make dev did not get ready within {TIMEOUT_SECONDS} s")
    return ready, parts


def main() -> None:
    runs = [_one_run() for _ in range(RUNS)]
    totals = [total for total, _ in runs]
    print(
        f"`make dev` to every part answering ({RUNS} runs, 2 shared cores: noisy; target <= "
        f"{TARGET_SECONDS:g} s): median {statistics.median(totals):.2f} s, "
        f"max {max(totals):.2f} s"
    )
    for part in sorted({name for _, parts in runs for name in parts}):
        seconds = [parts[part] for _, parts in runs if part in parts]
        print(f"  {part:8s} ready after its start: median {statistics.median(seconds):.1f} s")


if __name__ == "__main__":
    main()
