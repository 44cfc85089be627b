"""Structured logs of both services: one JSON object per line, severity, trace link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from fake_cloud_tasks import FakeCloudTasks
from flask.testing import FlaskClient
from service_common.logs import project_id_for_traces

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_task_app_error_line_carries_severity_and_the_request_trace(
    client: FlaskClient,
    fake_tasks: FakeCloudTasks,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """An outage is logged at ERROR with the trace of the request that hit it, linked to the
    project named in QUEUE, so Cloud Logging groups it with the request."""
    fake_tasks.fail("CreateTask", grpc.StatusCode.UNAVAILABLE)

    client.post("/tasks", json={}, headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/7;o=1"})

    [line] = [entry for entry in log_lines() if entry["severity"] == "ERROR"]
    assert line["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert line["logging.googleapis.com/labels"]["service"] == "task-app"
    assert line["httpRequest"]["requestMethod"] == "POST"


def test_lines_outside_a_request_have_no_trace(
    log_lines: Callable[[], list[dict[str, Any]]], client: FlaskClient
) -> None:
    """Start-up lines are JSON too, without a made-up trace."""
    lines = log_lines()
    ready = [line for line in lines if line.get("message", "").startswith("task-app ready")]
    assert len(ready) == 1
    assert ready[0]["logging.googleapis.com/trace"] == ""


def test_project_for_traces_comes_from_queue_then_environment() -> None:
    """QUEUE's project wins; GOOGLE_CLOUD_PROJECT is the fallback; a bad QUEUE is ignored
    here (settings validation reports it) rather than crashing logging."""
    queue = "projects/from-queue/locations/l/queues/jobs"
    assert project_id_for_traces({"QUEUE": queue, "GOOGLE_CLOUD_PROJECT": "env"}) == "from-queue"
    assert project_id_for_traces({"GOOGLE_CLOUD_PROJECT": "env"}) == "env"
    assert project_id_for_traces({"QUEUE": "bad", "GOOGLE_CLOUD_PROJECT": "env"}) == "env"
    assert project_id_for_traces({}) is None
