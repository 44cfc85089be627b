"""Security invariants of the stack, for every committed stack file: who may do what is
exactly the design's short list, every grant is non-authoritative and scoped to one
resource, and nothing is granted at project level."""

from __future__ import annotations

import json
import re

from stack_review import RecordedResource, StackRun
from tests.infra.helpers import (
    PASSWORD,
    QUEUE,
    QUEUE_MEMBER,
    SA_MEMBER,
    SECRET,
    SECRET_MEMBER,
    SERVICE,
    SERVICE_INVOKER,
    account_named,
    service_named,
)

PUBLIC = {"allUsers", "allAuthenticatedUsers"}
_IAM_TYPE = re.compile(r"iam", re.IGNORECASE)


def iam_resources(stack: StackRun) -> list[RecordedResource]:
    """Every resource whose type is an IAM grant, policy or binding of any kind."""
    return [r for r in stack.resources if r.custom and _IAM_TYPE.search(r.type.split(":")[-1])]


def test_worker_is_never_public(stack: StackRun) -> None:
    """The worker runs whatever a task asks: no allUsers/allAuthenticatedUsers invoker on
    it, and its ingress refuses the internet."""
    worker = service_named(stack, "worker")
    members = {
        r.inputs["member"]
        for r in stack.of_type(SERVICE_INVOKER)
        if r.inputs["name"] == worker.outputs["name"]
    }
    assert members, "the worker must have its invoker grant"
    assert not members & PUBLIC
    assert worker.inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"


def test_the_grants_are_exactly_the_designed_set(stack: StackRun) -> None:
    """The only grants are task-app -> invoker on the worker, enqueuer (create) and viewer
    (list) on the queue, viewer, enqueuer (full view) and taskDeleter on the dead-letter
    queue, serviceAccountUser on itself, secretAccessor on its one secret; worker ->
    enqueuer on the dead-letter queue; plus the public invoker on the task-app. Any extra
    grant is a review finding."""
    worker_member = f"serviceAccount:{account_named(stack, 'worker').outputs['email']}"
    task_app_sa = account_named(stack, "task-app")
    member = f"serviceAccount:{task_app_sa.outputs['email']}"
    secret = stack.one(SECRET)

    def target(r: RecordedResource) -> str:
        for key in ("name", "serviceAccountId", "secretId"):
            if key in r.inputs:
                return str(r.inputs[key])
        return "?"

    grants = {
        (r.type, target(r), r.inputs["role"], r.inputs["member"]) for r in iam_resources(stack)
    }
    assert grants == {
        (SERVICE_INVOKER, "worker", "roles/run.invoker", member),
        (SERVICE_INVOKER, "task-app", "roles/run.invoker", "allUsers"),
        (QUEUE_MEMBER, "jobs", "roles/cloudtasks.enqueuer", member),
        (QUEUE_MEMBER, "jobs", "roles/cloudtasks.viewer", member),
        (QUEUE_MEMBER, "jobs-dead", "roles/cloudtasks.viewer", member),
        (QUEUE_MEMBER, "jobs-dead", "roles/cloudtasks.enqueuer", member),
        (QUEUE_MEMBER, "jobs-dead", "roles/cloudtasks.taskDeleter", member),
        (QUEUE_MEMBER, "jobs-dead", "roles/cloudtasks.enqueuer", worker_member),
        (SA_MEMBER, task_app_sa.outputs["name"], "roles/iam.serviceAccountUser", member),
        (SECRET_MEMBER, secret.outputs["secretId"], "roles/secretmanager.secretAccessor", member),
    }
    assert len(iam_resources(stack)) == 10


def test_grants_are_non_authoritative_members_on_one_resource(stack: StackRun) -> None:
    """*IamBinding/*IamPolicy silently remove grants made elsewhere: only *IamMember, and
    none at project, folder or organization level (a project grant reaches every service
    and queue of the project)."""
    for resource in iam_resources(stack):
        assert resource.type.endswith(("IamMember", "IAMMember")), resource.type
        module = resource.type.split(":")[1].split("/")[0]
        assert module not in {"projects", "organizations", "folder"}, resource.type
        assert not resource.inputs.get("condition")


def test_service_account_grant_addresses_the_account_by_name(stack: StackRun) -> None:
    """serviceaccount.IAMMember takes the account's resource NAME; an email there
    addresses nothing and the OIDC token minting would fail at the first task."""
    grant = stack.one(SA_MEMBER)
    account = account_named(stack, "task-app")
    assert grant.inputs["serviceAccountId"] == account.outputs["name"]
    assert grant.inputs["serviceAccountId"].startswith("projects/")
    assert grant.inputs["serviceAccountId"] != account.outputs["email"]


def test_queue_grants_are_on_the_stack_queue(stack: StackRun) -> None:
    """Each queue grant must name one of the stack's queues (project, location, name), or
    the call it is for is refused with PERMISSION_DENIED."""
    queues = {
        (q.inputs["project"], q.inputs["location"], q.outputs["name"]) for q in stack.of_type(QUEUE)
    }
    assert len(queues) == 2
    grants = stack.of_type(QUEUE_MEMBER)
    assert {g.inputs["name"] for g in grants} == {name for _, _, name in queues}
    for grant in grants:
        assert (grant.inputs["project"], grant.inputs["location"], grant.inputs["name"]) in queues


def test_session_key_only_reaches_the_task_app_through_secret_manager(stack: StackRun) -> None:
    """The task-app's SECRET_KEY is generated, kept in Secret Manager and referenced: its
    value is in no Cloud Run configuration (which any viewer of the service can read)."""
    value = stack.one(PASSWORD).outputs["result"]
    assert len(value) >= 32
    for service in stack.of_type(SERVICE):
        assert value not in json.dumps(service.inputs)
    assert stack.one(PASSWORD).secret_outputs >= {"result"}
    version = stack.one("gcp:secretmanager/secretVersion:SecretVersion")
    assert version.inputs["secretData"] == value
    assert "secretData" in version.secret_paths
