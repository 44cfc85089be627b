"""``python -m local_stack`` (what ``make dev`` runs) as a person uses it: it prints one
status line per part and the URL, serves the page, streams the three logs with a prefix
each, and Ctrl-C stops everything with no process left behind; a part that dies is named
and stops the rest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local_stack.plan import Ports
from tests.e2e.harness import alive, group_alive

pytestmark = pytest.mark.e2e

PROJECT_DIR = Path(__file__).resolve().parents[2]


class Runner:
    """``python -m local_stack`` in a child process, its output collected line by line."""

    def __init__(self, state_dir: Path) -> None:
        self.ports = Ports.free()
        env = {
            **os.environ,
            "TASK_APP_PORT": str(self.ports.task_app),
            "WORKER_PORT": str(self.ports.worker),
            "EMULATOR_PORT": str(self.ports.emulator),
            "EMULATOR_KEYS_PORT": str(self.ports.keys),
            "EMULATOR_REST_PORT": str(self.ports.rest),
            "TASK_APP_METADATA_PORT": str(self.ports.task_app_metadata),
            "WORKER_METADATA_PORT": str(self.ports.worker_metadata),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "local_stack", "--stack", "Pulumi.dev.yaml"),
                *("--state-dir", str(state_dir)),
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        output = "\n".join(self.lines[-30:])
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{output}")

    def part_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.lines:
            if match := re.search(r"\| (\S+) +ready in .* \(pid (\d+)\)$", line):
                pids[match[1]] = int(match[2])
        return pids

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    started = Runner(tmp_path)
    try:
        yield started
    finally:
        started.kill()


def test_make_dev_serves_the_page_streams_prefixed_logs_and_ctrl_c_leaves_nothing(
    runner: Runner,
) -> None:
    """The developer's loop: status line per part, the URL, the page served, logs of all
    three in one stream with prefixes, and Ctrl-C (SIGINT) stops every process (gunicorn's
    workers included) and exits 0."""
    url = runner.wait_for_line(r"open (http://127\.0\.0\.1:\d+) \(Ctrl-C", timeout=60)[1]
    assert url == f"http://127.0.0.1:{runner.ports.task_app}"
    pids = runner.part_pids()
    assert set(pids) == {"emulator", "worker", "task-app"}
    assert "queue projects/cloud-run-tasks-dev/locations/us-central1/queues/jobs: 100/s" in (
        "\n".join(runner.lines)
    )
    page = requests.get(url, timeout=10)
    assert page.status_code == 200
    assert "Schedule task" in page.text
    prefixes = {line.split(" | ")[0].split()[-1] for line in runner.lines if " | " in line}
    assert {"emulator", "worker", "task-app", "stack"} <= prefixes
    assert all(group_alive(pid) for pid in pids.values())

    # One Ctrl-C under `uv run` arrives twice (terminal and uv): still one graceful stop.
    runner.process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    runner.process.send_signal(signal.SIGINT)
    assert runner.finish(timeout=30) == 0
    assert any("SIGINT received: stopping" in line for line in runner.lines)
    assert not [line for line in runner.lines if "killing" in line], "the stop was not graceful"
    left = [name for name, pid in pids.items() if group_alive(pid) or alive(pid)]
    assert left == [], f"still running after Ctrl-C: {left}"


def test_a_part_that_dies_is_named_and_the_rest_is_stopped(runner: Runner) -> None:
    """If a part exits while running, the runner says which, stops the other two and exits
    non-zero, instead of serving a half-working system."""
    runner.wait_for_line(r"open http://127\.0\.0\.1:\d+ \(Ctrl-C", timeout=60)
    pids = runner.part_pids()
    os.killpg(pids["worker"], signal.SIGKILL)
    assert runner.finish(timeout=30) == 1
    runner.wait_for_line(r"worker exited with code -9; stopping the others", timeout=1)
    runner.wait_for_line(r"stopped because worker exited", timeout=1)
    left = [name for name, pid in pids.items() if group_alive(pid)]
    assert left == [], f"still running after the worker died: {left}"
