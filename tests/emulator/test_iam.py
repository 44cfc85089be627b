"""IAM on queues as Cloud Tasks has it: Get/Set/TestIamPermissions with etags, every
method authorized against the policies that apply with Google's role table, callers named
by their access token, and nothing enforced until a policy exists. Each test runs over
gRPC (through the front process) and over REST."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from google.cloud import tasks_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from tasks_emulator import EmulatorThread, VirtualClock
from tasks_emulator.config import parse_config
from tasks_emulator.errors import error_texts
from tasks_emulator.iam import method_permissions, roles

from .conftest import PARENT, START, Harness, client_for, raises, rest_client_for, virtual_harness

Q = f"{PARENT}/queues/jobs"
APP = "task-app@test-project.iam.gserviceaccount.com"
OTHER = "worker@test-project.iam.gserviceaccount.com"
URL = "http://127.0.0.1:9/"


@pytest.fixture(params=[(True, "grpc"), (False, "rest")], ids=["grpc", "rest"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    front_process, transport = request.param
    yield from virtual_harness(front_process=front_process, transport=transport)


def text(key: str, **values: str) -> str:
    return error_texts()[key]["text"].format(**values)


def as_(harness: Harness, email: str) -> list[tuple[str, str]]:
    """Call metadata carrying an access token the emulator minted for ``email``."""
    token = harness.runner.call(harness.emulator.iam.mint_access_token, email)
    return [("authorization", f"Bearer {token}")]


def grant(harness: Harness, queue: str, *bindings: tuple[str, str]) -> policy_pb2.Policy:
    policy = policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role=role, members=[member]) for role, member in bindings]
    )
    return harness.client.set_iam_policy(request={"resource": queue, "policy": policy})


def test_policy_round_trip_and_etag_conflict(harness: Harness) -> None:
    """A queue starts with an empty policy (etag ACAB); SetIamPolicy stores bindings with a
    new etag and version 1; a write carrying a stale etag is ABORTED with IAM's text and
    changes nothing; an unknown role is refused naming it."""
    harness.queue("jobs")
    empty = harness.client.get_iam_policy(request={"resource": Q})
    assert list(empty.bindings) == []
    assert base64.b64encode(empty.etag) == b"ACAB"
    stored = grant(harness, Q, ("roles/cloudtasks.enqueuer", f"serviceAccount:{APP}"))
    assert stored.version == 1
    assert stored.etag != empty.etag
    got = harness.client.get_iam_policy(request={"resource": Q})
    assert got == stored
    stale = policy_pb2.Policy(etag=empty.etag)
    with raises("ABORTED", exact=text("policy_etag_conflict")):
        harness.client.set_iam_policy(request={"resource": Q, "policy": stale})
    bad = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/nope", members=["allUsers"])])
    with raises("INVALID_ARGUMENT", match="roles/nope"):
        harness.client.set_iam_policy(request={"resource": Q, "policy": bad})
    assert harness.client.get_iam_policy(request={"resource": Q}) == stored


def test_methods_follow_the_policy_with_googles_wording(harness: Harness) -> None:
    """The enqueuer may create tasks (FULL view included) and nothing else: ListTasks is
    PERMISSION_DENIED naming cloudtasks.tasks.list and the queue in the real service's
    words. A viewer may list, but not see bodies (FULL needs cloudtasks.tasks.fullView)."""
    harness.queue("jobs")
    grant(
        harness, Q,
        ("roles/cloudtasks.enqueuer", f"serviceAccount:{APP}"),
        ("roles/cloudtasks.viewer", f"serviceAccount:{OTHER}"),
    )  # fmt: skip
    app, other = as_(harness, APP), as_(harness, OTHER)
    full = tasks_v2.Task.View.FULL
    task = harness.client.create_task(
        request={"parent": Q, "task": {"http_request": {"url": URL}}, "response_view": full},
        metadata=app,
    )
    denied = text("permission_denied", permission="cloudtasks.tasks.list", resource=Q)
    with raises("PERMISSION_DENIED", exact=denied):
        list(harness.client.list_tasks(parent=Q, metadata=app))
    with raises("PERMISSION_DENIED", match='"cloudtasks.queues.pause"'):
        harness.client.pause_queue(name=Q, metadata=other)
    assert [t.name for t in harness.client.list_tasks(parent=Q, metadata=other)] == [task.name]
    denied = text("permission_denied", permission="cloudtasks.tasks.fullView", resource=Q)
    with raises("PERMISSION_DENIED", exact=denied):
        harness.client.get_task(request={"name": task.name, "response_view": full}, metadata=other)
    with raises("PERMISSION_DENIED", match='"cloudtasks.tasks.create"'):
        harness.client.create_task(
            parent=Q, task=tasks_v2.Task(http_request={"url": URL}), metadata=other
        )


def assert_unauthenticated(harness: Harness, authorization: str) -> None:
    """GetQueue with ``authorization`` answers UNAUTHENTICATED (401 over REST: read from
    the wire, since the REST client answers a 401 by refreshing its credentials)."""
    if harness.transport == "grpc":
        with raises("UNAUTHENTICATED", exact=text("unauthenticated")):
            harness.client.get_queue(name=Q, metadata=[("authorization", authorization)])
        return
    request = urllib.request.Request(
        f"{harness.emulator.rest_url}/v2/{Q}", headers={"Authorization": authorization}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    error = json.load(caught.value)["error"]
    assert (error["status"], error["message"]) == ("UNAUTHENTICATED", text("unauthenticated"))


def test_tokens_identify_callers(harness: Harness) -> None:
    """Once a policy exists a token that is not the emulator's, or has expired, is
    UNAUTHENTICATED; a call without a token is the local owner and may do anything."""
    harness.queue("jobs")
    grant(harness, Q, ("roles/cloudtasks.viewer", f"serviceAccount:{APP}"))
    app = as_(harness, APP)
    assert harness.client.get_queue(name=Q, metadata=app).name == Q
    for forged in ("Bearer ya29.not-a-token", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 40):
        assert_unauthenticated(harness, forged)
    harness.advance(3601)
    assert_unauthenticated(harness, app[0][1])
    harness.client.pause_queue(name=Q)  # no token: the local owner


def test_without_any_policy_nothing_is_enforced(harness: Harness) -> None:
    """No policy anywhere: every call is allowed whatever token it carries, as before
    IAM existed in the emulator."""
    harness.queue("jobs")
    forged = [("authorization", "Bearer ya29.not-a-token")]
    harness.client.pause_queue(name=Q, metadata=forged)
    assert list(harness.client.list_tasks(parent=Q, metadata=forged)) == []


def test_test_iam_permissions_answers_what_the_caller_holds(harness: Harness) -> None:
    """TestIamPermissions needs no permission and answers the asked ones the caller holds;
    a permission that does not exist is refused."""
    harness.queue("jobs")
    grant(harness, Q, ("roles/cloudtasks.taskRunner", f"serviceAccount:{APP}"))
    asked = ["cloudtasks.tasks.run", "cloudtasks.tasks.list", "cloudtasks.tasks.fullView"]
    request = iam_policy_pb2.TestIamPermissionsRequest(resource=Q, permissions=asked)
    held = harness.client.test_iam_permissions(request=request, metadata=as_(harness, APP))
    assert list(held.permissions) == ["cloudtasks.tasks.run", "cloudtasks.tasks.fullView"]
    assert list(harness.client.test_iam_permissions(request=request).permissions) == asked
    request = iam_policy_pb2.TestIamPermissionsRequest(resource=Q, permissions=["storage.x"])
    with raises("INVALID_ARGUMENT", match="storage.x"):
        harness.client.test_iam_permissions(request=request)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_project_policy_and_local_principal_from_the_config_file(transport: str) -> None:
    """A project policy in the config file is inherited by the project's queues and is
    what CreateQueue and ListQueues are authorized against; a queue's iamPolicy comes from
    its entry; with --local-principal naming a member, calls without a token are that
    member and nothing more."""
    config = {
        "projects": [{"name": "projects/test-project", "iamPolicy": {"bindings": [
            {"role": "roles/cloudtasks.queueAdmin", "members": [f"serviceAccount:{OTHER}"]},
        ]}}],
        "queues": [{"name": Q, "iamPolicy": {"bindings": [
            {"role": "roles/cloudtasks.enqueuer", "members": [f"serviceAccount:{APP}"]},
        ]}}],
    }  # fmt: skip
    runner = EmulatorThread(
        port=0, keys_port=0, rest_port=0, clock=VirtualClock(start=START),
        local_principal="user:dev@example.com",
    )  # fmt: skip
    emulator = runner.start()
    client = (
        rest_client_for(emulator.rest_url) if transport == "rest" else client_for(emulator.address)
    )
    try:
        runner.call(parse_config(json.dumps(config), "test.json").apply, emulator)
        harness = Harness(runner, client, VirtualClock(), transport)
        other, app = as_(harness, OTHER), as_(harness, APP)
        client.pause_queue(name=Q, metadata=other)  # inherited from the project
        assert [q.name for q in client.list_queues(parent=PARENT, metadata=other)] == [Q]
        created = client.create_queue(
            parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/more"), metadata=other
        )
        assert created.name.endswith("/more")
        client.create_task(parent=Q, task=tasks_v2.Task(http_request={"url": URL}), metadata=app)
        with raises("PERMISSION_DENIED", match='"cloudtasks.queues.list"'):
            list(client.list_queues(parent=PARENT, metadata=app))
        with raises("PERMISSION_DENIED", match='"cloudtasks.queues.get"'):
            client.get_queue(name=Q)  # no token: user:dev@example.com, granted nothing
    finally:
        client.transport.close()
        runner.stop()


def test_role_table_covers_every_method() -> None:
    """Every permission a method needs is held by some predefined role, and the roles the
    stack grants hold what Google's reference says (enqueuer: create and fullView only)."""
    held = {permission for permissions in roles().values() for permission in permissions}
    assert {rule["permission"] for rule in method_permissions().values()} <= held
    enqueuer = {p for p in roles()["roles/cloudtasks.enqueuer"] if p.startswith("cloudtasks.")}
    assert enqueuer == {"cloudtasks.tasks.create", "cloudtasks.tasks.fullView"}
