"""Fixtures for the end-to-end tests: the whole local system, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_stack.plan import Ports, build_plan
from stack_settings import load_stack_file
from tests.e2e.harness import (
    STACK_FILE,
    StackLog,
    System,
    stack_queues,
    start_system,
)

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium. Outside CI its absence skips the test; under CI it is an error,
    because .ci/run installs it and a skipped browser test would hide a broken page."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run must install it (apt-get chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI runs this test")


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The whole local system with Pulumi.dev.yaml's queue, shared by the end-to-end tests
    (each test uses its own task ids, and waits until its tasks are done)."""
    settings = load_stack_file(STACK_FILE)
    ports = Ports.free()
    plan = build_plan(
        settings,
        STACK_FILE,
        stack_queues(),
        ports=ports,
        state_dir=tmp_path_factory.mktemp("state"),
    )
    log = StackLog()
    stack = start_system(plan, log, ports)
    try:
        yield System(settings, ports, plan, log, stack)
    finally:
        stack.stop()
