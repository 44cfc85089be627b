"""Hostile request bodies against both services, through Flask's test client: JSON nested
or spread too far, strict JSON only, and bodies over the limit whether their length is
announced or streamed in chunks."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

DEPTH = 10_000


def deep_array(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int = DEPTH) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def chunked_post(client: FlaskClient, path: str, body: bytes) -> TestResponse:
    """A body without Content-Length, as a server hands on a chunked request."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("body", [deep_array(), deep_object()], ids=["array", "object"])
def test_task_app_answers_deep_json_with_400(
    client: FlaskClient, fake_tasks: FakeCloudTasks, body: bytes
) -> None:
    """JSON nested beyond what the parser can follow is bad input: 400 saying so."""
    response = client.post("/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.get_json()["error"]
    assert fake_tasks.create_requests == []


@pytest.mark.parametrize("body", [deep_array(), deep_object()], ids=["array", "object"])
def test_worker_acknowledges_deep_json_as_a_permanent_failure(
    worker_client: FlaskClient,
    log_lines: Callable[[], list[dict[str, Any]]],
    body: bytes,
) -> None:
    """No retry can fix such a payload: 2xx, so Cloud Tasks does not deliver it again, and
    an ERROR line that says why."""
    response = worker_client.post(
        "/tasks",
        data=body,
        content_type="application/json",
        headers={"X-CloudTasks-TaskName": "deep"},
    )

    assert response.status_code == 200
    assert response.get_json()["acknowledged"] is True
    assert "nested too deeply" in response.get_json()["error"]
    assert any(
        line["severity"] == "ERROR" and "can never succeed" in line["message"]
        for line in log_lines()
    )


def test_wide_json_within_the_limit_is_judged_by_its_fields(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """Thousands of unknown keys are refused as unknown fields, not by a crash."""
    body = json.dumps({f"k{index}": index for index in range(4000)}).encode()
    assert len(body) < 64 * 1024

    response = client.post("/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    assert fake_tasks.create_requests == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_refused(
    client: FlaskClient, worker_client: FlaskClient, constant: str
) -> None:
    """JSON has no NaN or Infinity (RFC 8259); Python's parser would accept them."""
    task_app = client.post(
        "/tasks", data=f'{{"delay_seconds": {constant}}}', content_type="application/json"
    )
    worker = worker_client.post(
        "/tasks", data=f'{{"work_seconds": {constant}}}', content_type="application/json"
    )

    assert task_app.status_code == 400
    assert constant in task_app.get_json()["error"]
    assert worker.status_code == 200
    assert worker.get_json()["acknowledged"] is True
    assert constant in worker.get_json()["error"]


def test_task_app_chunked_body_over_the_limit_is_413(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """A streamed body is held to the same 64 KiB as an announced one: 413, never a body
    cut at the limit and then called invalid JSON."""
    body = json.dumps({"message": "x" * 70_000}).encode()

    response = chunked_post(client, "/tasks", body)

    assert response.status_code == 413
    assert fake_tasks.create_requests == []


def test_task_app_chunked_body_at_the_limit_is_read_whole(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """Exactly 64 KiB streamed is within the limit (judged by its fields, not refused)."""
    body = json.dumps({"message": "m"}).encode()
    body += b" " * (64 * 1024 - len(body))

    response = chunked_post(client, "/tasks", body)

    assert response.status_code == 201


def test_worker_chunked_body_over_the_limit_is_413(worker_client: FlaskClient) -> None:
    """No Cloud Tasks delivery is over 1 MiB; a bigger streamed body is refused, not cut."""
    body = json.dumps({"message": "x" * (1024 * 1024 + 65 * 1024)}).encode()

    response = chunked_post(worker_client, "/tasks", body)

    assert response.status_code == 413


@pytest.mark.parametrize("path", ["//", "//evil.example/", "//tasks", "/api//tasks"])
def test_doubled_slashes_never_redirect_to_the_request_host(
    client: FlaskClient, worker_client: FlaskClient, path: str
) -> None:
    """A redirect built from the Host header would point wherever the caller says."""
    for service in (client, worker_client):
        response = service.get(
            "/", headers={"Host": "evil.example"}, environ_overrides={"PATH_INFO": path}
        )

        assert "evil.example" not in response.headers.get("Location", "")
        assert not 300 <= response.status_code < 400, response.headers.get("Location")
