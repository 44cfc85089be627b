"""The REST API on the wire: routes read from the official client, protobuf's JSON
mapping, query parameters, Google's error body; and answers too large for one message
(paged by bytes over every transport, an oversized frame answered, never fatal)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import rest_base
from tasks_emulator.link import METHODS
from tasks_emulator.rest import compile_template, http_options

from .conftest import PARENT, Harness, virtual_harness

Q = f"{PARENT}/queues/jobs"


@pytest.fixture
def harness() -> Iterator[Harness]:
    yield from virtual_harness(front_process=True, transport="rest")


def http(
    harness: Harness, verb: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        harness.emulator.rest_url + path, data=data, method=verb,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_every_method_has_the_clients_http_binding() -> None:
    """Each method the emulator serves is routed by the client's own google.api.http
    binding, and each template's regex takes exactly the names it describes."""
    served = set(METHODS)
    bindings = {
        name.removeprefix("_Base")
        for name in vars(rest_base._BaseCloudTasksRestTransport)
        if name.startswith("_Base")
    }
    assert served <= bindings
    pattern, fields = compile_template(http_options("PauseQueue")[0]["uri"])
    assert fields == ("name",)
    assert pattern.match(f"/v2/{Q}:pause")
    assert not pattern.match(f"/v2/{Q}")
    assert not pattern.match(f"/v2/{Q}/tasks/t:pause")


def test_json_mapping_and_query_parameters(harness: Harness) -> None:
    """lowerCamelCase fields, durations as "0.100s", unset fields left out (no
    maxRetryDuration when unlimited); updateMask, responseView and alt=json from the query;
    enums as numbers when the client asks for them."""
    status, queue = http(harness, "POST", f"/v2/{PARENT}/queues", {"name": Q})
    assert status == 200, queue
    assert queue["retryConfig"] == {
        "maxAttempts": 100, "minBackoff": "0.100s", "maxBackoff": "3600s", "maxDoublings": 16,
    }  # fmt: skip
    assert queue["state"] == "RUNNING"
    status, updated = http(
        harness, "PATCH", f"/v2/{Q}?updateMask=rateLimits.maxDispatchesPerSecond&alt=json",
        {"rateLimits": {"maxDispatchesPerSecond": 5, "maxConcurrentDispatches": 7}},
    )  # fmt: skip
    assert status == 200, updated
    assert updated["rateLimits"] == {
        "maxDispatchesPerSecond": 5.0, "maxBurstSize": 1, "maxConcurrentDispatches": 1000,
    }  # fmt: skip
    http(harness, "POST", f"/v2/{Q}:pause", {})
    body = {"task": {"httpRequest": {"url": "http://127.0.0.1:9/", "body": "aGVsbG8="}}}
    status, task = http(harness, "POST", f"/v2/{Q}/tasks", body)
    assert status == 200, task
    assert task["view"] == "BASIC"
    assert "body" not in task["httpRequest"]
    assert task["httpRequest"]["headers"] == {"User-Agent": "Google-Cloud-Tasks"}
    status, full = http(harness, "GET", f"/v2/{task['name']}?responseView=FULL")
    assert full["httpRequest"]["body"] == "aGVsbG8="
    assert full["createTime"].endswith("Z")
    _, numeric = http(harness, "GET", f"/v2/{Q}?%24alt=json%3Benum-encoding%3Dint")
    assert numeric["state"] == 2  # PAUSED


def test_errors_are_googles_json_body(harness: Harness) -> None:
    """A failed call answers {"error": {"code", "message", "status"}} with the HTTP status
    Google pairs with the gRPC status; a malformed body or an unknown field is 400."""
    status, error = http(harness, "GET", f"/v2/{Q}")
    assert status == 404
    assert error == {
        "error": {
            "code": 404,
            "message": "Queue does not exist. If you just created the queue, wait at least "
            "a minute for the queue to initialize.",
            "status": "NOT_FOUND",
        }
    }
    status, error = http(harness, "POST", f"/v2/{PARENT}/queues", {"name": Q, "colour": 1})
    assert (status, error["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert error["error"]["message"].startswith("Invalid JSON payload received.")
    assert "colour" in error["error"]["message"]
    status, error = http(harness, "GET", "/v2/nothing/here")
    assert (status, error["error"]["status"]) == (404, "NOT_FOUND")
    status, error = http(harness, "POST", f"/v2/{Q}/tasks:batchCreate", {})
    assert (status, error["error"]["status"]) == (501, "UNIMPLEMENTED")


BIG = 1024 * 1024 - 2048  # a task just under the API's 1 MiB


@pytest.mark.parametrize(
    ("front_process", "transport"),
    [(True, "grpc"), (False, "rest")],
    ids=["grpc-front-process", "rest"],
)
def test_large_list_is_paged_by_bytes(front_process: bool, transport: str) -> None:
    """70 tasks of about 1 MiB listed with the FULL view and page_size 1000: 70 MiB, more
    than the link between the emulator's processes carries and than a gRPC client reads
    by default. Pages hold fewer tasks than asked for, every task is listed once, and the
    emulator keeps serving. (One such call used to take the whole emulator down.)"""
    for harness in virtual_harness(front_process=front_process, transport=transport):
        harness.queue("jobs")
        harness.client.pause_queue(name=Q)
        for index in range(70):
            harness.task(Q, "http://127.0.0.1:9/", name=f"{Q}/tasks/t{index:02d}",
                         http={"body": bytes([index]) * BIG})  # fmt: skip
        pager = harness.client.list_tasks(
            request={"parent": Q, "page_size": 1000, "response_view": tasks_v2.Task.View.FULL}
        )
        pages = [list(page.tasks) for page in pager.pages]
        names = [task.name for page in pages for task in page]
        assert names == [f"{Q}/tasks/t{index:02d}" for index in range(70)]
        assert all(len(task.http_request.body) == BIG for page in pages for task in page)
        assert len(pages) > 1
        assert max(len(page) for page in pages) < 70
        assert harness.client.get_queue(name=Q).name == Q
