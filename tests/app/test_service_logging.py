"""Structured logs of both services: one JSON object per line, severity, trace link."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask.testing import FlaskClient
from service_common.logs import configure_logging, parse_trace_headers, project_id_for_traces

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


def test_worker_lines_carry_the_w3c_trace_span_and_sampling(
    worker_client: FlaskClient, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """traceparent wins over X-Cloud-Trace-Context; its span id and sampled flag reach the
    line, the worker's label and the logging call's place too."""
    parent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    worker_client.post(
        "/tasks",
        json={"message": "traced"},
        headers={"traceparent": parent, "X-Cloud-Trace-Context": "ffff/1;o=0"},
    )

    [line] = [entry for entry in log_lines() if entry.get("task_message") == "traced"]
    assert line["severity"] == "INFO"
    assert line["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["logging.googleapis.com/labels"] == {
        "python_logger": "worker.views",
        "service": "worker",
    }
    assert line["logging.googleapis.com/sourceLocation"]["function"] == "run_task"
    assert line["time"].endswith("Z")


@pytest.mark.parametrize(
    ("traceparent", "cloud_trace", "expected"),
    [
        (None, f"{TRACE_ID}/7;o=1", (TRACE_ID, "0000000000000007", True)),
        (None, f"{TRACE_ID};o=0", (TRACE_ID, "", False)),
        (None, TRACE_ID, (TRACE_ID, "", False)),
        (
            f"00-{'0' * 32}-00f067aa0ba902b7-01",
            f"{TRACE_ID}/1",
            (TRACE_ID, "0000000000000001", False),
        ),
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None, ("", "", False)),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", None, (TRACE_ID, "00f067aa0ba902b7", False)),
        (None, None, ("", "", False)),
        (None, "/;o=1", ("", "", False)),
    ],
)
def test_trace_headers_are_read_as_google_documents_them(
    traceparent: str | None, cloud_trace: str | None, expected: tuple[str, str, bool]
) -> None:
    """W3C traceparent (an all-zero id or version ff is invalid, so the other header
    counts), else TRACE_ID[/SPAN_ID][;o=OPTIONS] with a decimal span id written as 16 hex
    digits (https://cloud.google.com/trace/docs/trace-context)."""
    assert parse_trace_headers(traceparent, cloud_trace) == expected


def test_a_line_is_one_json_object_whatever_the_record_holds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A multi-line message, an exception's traceback, fields that try to overwrite what
    Cloud Logging reads, and a value JSON cannot hold: still one parseable line each."""
    configure_logging("test-service", "p")
    logger = logging.getLogger("test.lines")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("first\nsecond", extra={"json_fields": {"severity": "DEBUG", "n": 1}})
    logger.warning("odd value", extra={"json_fields": {"when": object()}})

    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in out if line.startswith("{")]
    assert len(lines) == len(out) == 2
    failed, odd = lines
    assert failed["severity"] == "ERROR"
    assert failed["message"].startswith("first\nsecond\nTraceback")
    assert "RuntimeError: boom" in failed["message"]
    assert failed["n"] == 1
    assert failed["logging.googleapis.com/trace"] == ""
    assert failed["httpRequest"] == {}
    assert odd["when"].startswith("<object object")
