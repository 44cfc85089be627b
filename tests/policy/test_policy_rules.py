"""The policy pack's rules, called directly with hand-built resources.

pulumi-policy cannot live in the project's environment (it pins an older protobuf), so the
rules are plain functions over (resource type, properties) and are tested here the way
CrossGuard calls them: camelCase properties, read-only mappings, one message per breach.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from policy import stack_rules
from policy.stack_rules import RuleContext, StackResource

PROD = RuleContext(stack="prod")
DEV = RuleContext(stack="dev")

V2_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
V2_BINDING = "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding"
V2_POLICY = "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy"
V1_MEMBER = "gcp:cloudrun/iamMember:IamMember"
SERVICE = "gcp:cloudrunv2/service:Service"
QUEUE = "gcp:cloudtasks/queue:Queue"
QUEUE_MEMBER = "gcp:cloudtasks/queueIamMember:QueueIamMember"
SA_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
TASK_APP_SA = "task-app@cloud-run-tasks-prod.iam.gserviceaccount.com"
WORKER_SA = "worker@cloud-run-tasks-prod.iam.gserviceaccount.com"


class ReadOnly(Mapping[str, Any]):
    """Stands in for CrossGuard's property proxy: a Mapping that is not a dict, with nested
    mappings and sequences wrapped the same way."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class ReadOnlyList(Sequence[Any]):
    def __init__(self, items: Sequence[Any]) -> None:
        self._items = list(items)

    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._items[index])

    def __len__(self) -> int:
        return len(self._items)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return ReadOnly(value)
    if isinstance(value, list):
        return ReadOnlyList(value)
    return value


def props(**values: Any) -> Mapping[str, Any]:
    return ReadOnly(values)


def service(name: str, account: str | None, protection: bool | None = True) -> Mapping[str, Any]:
    template: dict[str, Any] = {"containers": [{"image": f"us-docker.pkg.dev/p/r/{name}@sha256:0"}]}
    if account is not None:
        template["serviceAccount"] = account
    values: dict[str, Any] = {"name": name, "location": "us-central1", "template": template}
    if protection is not None:
        values["deletionProtection"] = protection
    return ReadOnly(values)


def full_queue(**retry_overrides: Any) -> dict[str, Any]:
    retry = {
        "maxAttempts": 10.0,  # numbers arrive from the engine as floats
        "minBackoff": "1s",
        "maxBackoff": "15s",
        "maxDoublings": 3.0,
        "maxRetryDuration": "0s",
    }
    retry.update(retry_overrides)
    return {
        "name": "jobs",
        "location": "us-central1",
        "rateLimits": {"maxDispatchesPerSecond": 100.0, "maxConcurrentDispatches": 100.0},
        "retryConfig": retry,
    }


def reference_stack() -> list[StackResource]:
    """What the stack declares, reduced to what the rules read: it breaks no rule."""
    worker_name = "projects/p/locations/us-central1/services/worker"
    return [
        StackResource(SERVICE, service("task-app", TASK_APP_SA), "urn:task-app", "task-app"),
        StackResource(SERVICE, service("worker", WORKER_SA), "urn:worker", "worker"),
        StackResource(QUEUE, ReadOnly(full_queue()), "urn:queue", "jobs"),
        StackResource(
            V2_MEMBER,
            props(name="task-app", role="roles/run.invoker", member="allUsers"),
            "urn:public",
        ),
        StackResource(
            V2_MEMBER,
            props(
                name=worker_name, role="roles/run.invoker", member=f"serviceAccount:{TASK_APP_SA}"
            ),
            "urn:invoker",
        ),
        StackResource(
            QUEUE_MEMBER,
            props(
                name="jobs",
                role="roles/cloudtasks.enqueuer",
                member=f"serviceAccount:{TASK_APP_SA}",
            ),
            "urn:enqueuer",
        ),
        StackResource(
            SA_MEMBER,
            props(
                serviceAccountId=f"projects/p/serviceAccounts/{TASK_APP_SA}",
                role="roles/iam.serviceAccountUser",
                member=f"serviceAccount:{TASK_APP_SA}",
            ),
            "urn:actas",
        ),
    ]


# ---- worker never public -------------------------------------------------------------


@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_worker_granted_to_the_public_is_a_violation(member: str) -> None:
    """Worker never public: a public invoker on the worker (named by its full id) is caught,
    and the message names the service and the member."""
    messages = stack_rules.worker_never_public(
        V2_MEMBER,
        props(
            name="projects/p/locations/l/services/worker", role="roles/run.invoker", member=member
        ),
        PROD,
    )
    assert len(messages) == 1
    assert "'worker'" in messages[0]
    assert member in messages[0]


def test_worker_public_through_a_binding_a_policy_or_the_v1_api_is_caught() -> None:
    """Worker never public, whichever IAM resource shape grants it (binding, policy JSON,
    Cloud Run v1 IamMember)."""
    binding = props(name="worker", role="roles/run.invoker", members=["user:a@b.c", "allUsers"])
    policy = props(
        name="worker",
        policyData=json.dumps(
            {"bindings": [{"role": "roles/run.invoker", "members": ["allAuthenticatedUsers"]}]}
        ),
    )
    v1 = props(service="worker", role="roles/run.invoker", member="allUsers")
    assert len(stack_rules.worker_never_public(V2_BINDING, binding, PROD)) == 1
    assert len(stack_rules.worker_never_public(V2_POLICY, policy, PROD)) == 1
    assert len(stack_rules.worker_never_public(V1_MEMBER, v1, PROD)) == 1


def test_worker_invoked_by_the_task_app_identity_is_allowed() -> None:
    """Worker never public: the intended grant (task-app SA as invoker) is not a breach,
    nor is the task-app's own public invoker."""
    private = props(name="worker", role="roles/run.invoker", member=f"serviceAccount:{TASK_APP_SA}")
    public_task_app = props(name="task-app", role="roles/run.invoker", member="allUsers")
    assert stack_rules.worker_never_public(V2_MEMBER, private, PROD) == []
    assert stack_rules.worker_never_public(V2_MEMBER, public_task_app, PROD) == []


# ---- allUsers only as the task-app's invoker ------------------------------------------


def test_public_grant_outside_cloud_run_is_a_violation() -> None:
    """allUsers only as the task-app's invoker: anyone enqueueing on the queue or acting as
    a service account is caught, naming the resource kind and role."""
    queue = props(name="jobs", role="roles/cloudtasks.enqueuer", member="allUsers")
    account = props(serviceAccountId="x", role="roles/iam.serviceAccountUser", member="allUsers")
    [queue_message] = stack_rules.public_only_as_task_app_invoker(QUEUE_MEMBER, queue, PROD)
    [account_message] = stack_rules.public_only_as_task_app_invoker(SA_MEMBER, account, PROD)
    assert "QueueIamMember" in queue_message
    assert "roles/cloudtasks.enqueuer" in queue_message
    assert "roles/iam.serviceAccountUser" in account_message


def test_public_grant_of_another_role_on_the_task_app_is_a_violation() -> None:
    """allUsers only as roles/run.invoker: the public may call the task-app, not manage it."""
    admin = props(name="task-app", role="roles/run.admin", member="allUsers")
    [message] = stack_rules.public_only_as_task_app_invoker(V2_MEMBER, admin, PROD)
    assert "roles/run.admin" in message


def test_public_invoker_on_the_task_app_is_the_one_allowed_public_grant() -> None:
    """allUsers only as the task-app's invoker: that grant itself passes; public grants on
    other Cloud Run services are left to worker-never-public (no double report)."""
    invoker = props(name="task-app", role="roles/run.invoker", member="allUsers")
    worker = props(name="worker", role="roles/run.invoker", member="allUsers")
    assert stack_rules.public_only_as_task_app_invoker(V2_MEMBER, invoker, PROD) == []
    assert stack_rules.public_only_as_task_app_invoker(V2_MEMBER, worker, PROD) == []


def test_renamed_task_app_is_configured_through_public_invoker_services() -> None:
    """The allowed public service follows the pack's config, not a hard-coded name."""
    context = RuleContext.from_config("prod", {"publicInvokerServices": ["frontend"]})
    frontend = props(name="frontend", role="roles/run.invoker", member="allUsers")
    task_app = props(name="task-app", role="roles/run.invoker", member="allUsers")
    assert stack_rules.worker_never_public(V2_MEMBER, frontend, context) == []
    assert len(stack_rules.worker_never_public(V2_MEMBER, task_app, context)) == 1


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"publicInvokerServices": "task-app"}, "publicInvokerServices"),
        ({"protectedStacks": [""]}, "protectedStacks"),
    ],
)
def test_bad_policy_config_names_the_key_and_value(config: dict[str, Any], key: str) -> None:
    """A malformed pack config stops with a message naming the key and the value given."""
    with pytest.raises(ValueError, match=key) as error:
        RuleContext.from_config("prod", config)
    assert repr(config[key]) in str(error.value)


# ---- IAM only at resource level ---------------------------------------------------------


@pytest.mark.parametrize(
    "resource_type",
    [
        "gcp:projects/iAMMember:IAMMember",
        "gcp:projects/iAMBinding:IAMBinding",
        "gcp:projects/iAMPolicy:IAMPolicy",
        "gcp:projects/iAMAuditConfig:IAMAuditConfig",
        "gcp:organizations/iAMMember:IAMMember",
        "gcp:folder/iAMBinding:IAMBinding",
    ],
)
def test_project_folder_and_organization_iam_is_a_violation(resource_type: str) -> None:
    """IAM only at resource level: any IAM resource on the project, a folder or the
    organization is caught, with the grant it makes."""
    grant = props(project="p", role="roles/editor", member=f"serviceAccount:{WORKER_SA}")
    [message] = stack_rules.iam_at_resource_level_only(resource_type, grant, PROD)
    assert resource_type in message
    if resource_type.endswith("IAMMember"):
        assert "roles/editor" in message


def test_resource_level_grants_are_not_hierarchy_iam() -> None:
    """IAM only at resource level: the stack's own grants (queue, service, account) pass."""
    for resource in reference_stack():
        assert (
            stack_rules.iam_at_resource_level_only(resource.resource_type, resource.props, PROD)
            == []
        )


# ---- least-privilege roles -------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "target", "role"),
    [
        (QUEUE_MEMBER, {"name": "jobs"}, "roles/cloudtasks.admin"),
        (QUEUE_MEMBER, {"name": "jobs"}, "roles/cloudtasks.editor"),
        (QUEUE_MEMBER, {"name": "jobs"}, "roles/run.invoker"),
        (V2_MEMBER, {"name": "worker"}, "roles/run.admin"),
        (SA_MEMBER, {"serviceAccountId": "projects/p/serviceAccounts/a@p"}, "roles/owner"),
        (
            "gcp:secretmanager/secretIamMember:SecretIamMember",
            {"secretId": "s"},
            "roles/secretmanager.admin",
        ),
    ],
)
def test_a_wider_role_than_the_kind_allows_is_a_violation(
    resource_type: str, target: dict[str, str], role: str
) -> None:
    """Least privilege: a role outside the small set allowed on its kind of resource is
    caught, naming the role and what is allowed instead."""
    grant = props(**target, role=role, member=f"serviceAccount:{TASK_APP_SA}")
    [message] = stack_rules.least_privilege_roles(resource_type, grant, PROD)
    assert role in message
    assert "grants only" in message


def test_the_stack_roles_are_least_privilege() -> None:
    """Least privilege: the stack's own grants pass."""
    for resource in reference_stack():
        assert stack_rules.least_privilege_roles(resource.resource_type, resource.props, PROD) == []
    viewer = props(
        name="jobs", role="roles/cloudtasks.viewer", member=f"serviceAccount:{TASK_APP_SA}"
    )
    assert stack_rules.least_privilege_roles(QUEUE_MEMBER, viewer, PROD) == []


# ---- dedicated service account ---------------------------------------------------------


@pytest.mark.parametrize(
    "account",
    [
        "123456789012-compute@developer.gserviceaccount.com",
        "my-project@appspot.gserviceaccount.com",
    ],
)
def test_service_on_a_default_account_is_a_violation(account: str) -> None:
    """Dedicated SA: the default compute (or App Engine) account is refused by name."""
    [message] = stack_rules.dedicated_service_account(SERVICE, service("worker", account), PROD)
    assert account in message


def test_service_without_an_account_is_a_violation() -> None:
    """Dedicated SA: an unset template.serviceAccount means the default compute account."""
    [message] = stack_rules.dedicated_service_account(SERVICE, service("worker", None), PROD)
    assert "template.serviceAccount" in message


def test_jobs_and_v1_services_are_held_to_the_same_rule() -> None:
    """Dedicated SA: the rule reads each workload type's own field."""
    job = props(template={"template": {"serviceAccount": ""}})
    v1 = props(template={"spec": {"serviceAccountName": "1-compute@developer.gserviceaccount.com"}})
    assert len(stack_rules.dedicated_service_account("gcp:cloudrunv2/job:Job", job, PROD)) == 1
    assert len(stack_rules.dedicated_service_account("gcp:cloudrun/service:Service", v1, PROD)) == 1
    assert stack_rules.dedicated_service_account(SERVICE, service("w", WORKER_SA), PROD) == []


def test_two_services_sharing_an_account_are_both_reported() -> None:
    """Dedicated SA: a stack whose services share one identity is caught on each of them."""
    resources = [
        StackResource(SERVICE, service("task-app", WORKER_SA), "urn:a"),
        StackResource(SERVICE, service("worker", WORKER_SA), "urn:b"),
    ]
    violations = stack_rules.service_accounts_not_shared(resources, PROD)
    assert sorted(urn for _, urn in violations) == ["urn:a", "urn:b"]
    assert "task-app, worker" in violations[0][0]


# ---- deletion protection in prod --------------------------------------------------------


@pytest.mark.parametrize(("protection", "shown"), [(False, "False"), (None, "unset")])
def test_prod_service_without_deletion_protection_is_a_violation(
    protection: bool | None, shown: str
) -> None:
    """Deletion protection in prod: off or left to the provider default is caught."""
    [message] = stack_rules.deletion_protection_in_protected_stacks(
        SERVICE, service("worker", WORKER_SA, protection), PROD
    )
    assert f"deletionProtection {shown}" in message
    assert "'prod'" in message


def test_dev_may_turn_deletion_protection_off() -> None:
    """Deletion protection in prod only: dev stays easy to tear down."""
    dev_service = service("worker", WORKER_SA, False)
    assert stack_rules.deletion_protection_in_protected_stacks(SERVICE, dev_service, DEV) == []
    assert (
        stack_rules.deletion_protection_in_protected_stacks(SERVICE, service("w", WORKER_SA), PROD)
        == []
    )


def test_unknown_stack_counts_as_protected_and_other_types_are_held_to_it() -> None:
    """Deletion protection errs towards protection: an unknown stack is protected, and any
    resource that turns deletionProtection off (a secret here) is caught in prod."""
    unknown = RuleContext(stack="")
    assert (
        len(
            stack_rules.deletion_protection_in_protected_stacks(
                SERVICE, service("w", WORKER_SA, False), unknown
            )
        )
        == 1
    )
    secret = props(secretId="app-secret", deletionProtection=False)
    assert (
        len(
            stack_rules.deletion_protection_in_protected_stacks(
                "gcp:secretmanager/secret:Secret", secret, PROD
            )
        )
        == 1
    )
    custom = RuleContext.from_config("staging", {"protectedStacks": ["staging", "prod"]})
    assert (
        len(
            stack_rules.deletion_protection_in_protected_stacks(
                SERVICE, service("w", WORKER_SA, False), custom
            )
        )
        == 1
    )


def test_prod_queue_whose_deletion_policy_allows_delete_is_a_violation() -> None:
    """Deletion protection in prod: a resource that states deletionPolicy DELETE is caught
    in prod and allowed in dev; PREVENT passes."""
    deletable = props(name="jobs", deletionPolicy="DELETE")
    [message] = stack_rules.deletion_protection_in_protected_stacks(QUEUE, deletable, PROD)
    assert "deletionPolicy DELETE" in message
    assert stack_rules.deletion_protection_in_protected_stacks(QUEUE, deletable, DEV) == []
    prevented = props(name="jobs", deletionPolicy="PREVENT")
    assert stack_rules.deletion_protection_in_protected_stacks(QUEUE, prevented, PROD) == []


# ---- queue limits ---------------------------------------------------------------------


def test_queue_with_every_limit_set_passes() -> None:
    """Explicit retry and rate limits: the dev stack's tuned queue passes."""
    assert (
        stack_rules.queue_explicit_retry_and_rate_limits(QUEUE, ReadOnly(full_queue()), PROD) == []
    )


def test_queue_missing_a_setting_names_each_missing_field() -> None:
    """Explicit retry and rate limits: every field left to the API default is named."""
    queue = full_queue()
    del queue["retryConfig"]["maxDoublings"]
    del queue["rateLimits"]
    [message] = stack_rules.queue_explicit_retry_and_rate_limits(QUEUE, ReadOnly(queue), PROD)
    assert "retryConfig.maxDoublings" in message
    assert "rateLimits.maxDispatchesPerSecond" in message
    assert "rateLimits.maxConcurrentDispatches" in message


def test_queue_that_retries_forever_is_a_violation() -> None:
    """Explicit retry limits: unlimited attempts need a bounded retry duration."""
    forever = ReadOnly(full_queue(maxAttempts=-1.0, maxRetryDuration="0s"))
    bounded = ReadOnly(full_queue(maxAttempts=-1.0, maxRetryDuration="86400s"))
    [message] = stack_rules.queue_explicit_retry_and_rate_limits(QUEUE, forever, PROD)
    assert "retries forever" in message
    assert stack_rules.queue_explicit_retry_and_rate_limits(QUEUE, bounded, PROD) == []


# ---- the whole pack over a stack --------------------------------------------------------


def test_reference_stack_passes_every_rule() -> None:
    """The pack does not cry wolf: the stack as designed breaks no rule, in dev or prod."""
    assert stack_rules.check_stack(reference_stack(), PROD) == []
    assert stack_rules.check_stack(reference_stack(), DEV) == []


def test_each_breach_is_reported_by_its_own_rule() -> None:
    """Each invariant is reported under its CrossGuard policy name, with the resource's urn."""
    resources = reference_stack()
    resources[1] = StackResource(SERVICE, service("worker", TASK_APP_SA, False), "urn:worker")
    resources[2] = StackResource(QUEUE, props(name="jobs"), "urn:queue")
    resources.append(
        StackResource(
            V2_MEMBER, props(name="worker", role="roles/run.invoker", member="allUsers"), "urn:w"
        )
    )
    resources.append(
        StackResource(
            "gcp:projects/iAMMember:IAMMember", props(role="roles/owner", member="user:x"), "urn:p"
        )
    )
    found = {(name, urn) for name, urn, _ in stack_rules.check_stack(resources, PROD)}
    assert found == {
        ("deletion-protection-in-prod", "urn:worker"),
        ("queue-explicit-retry-and-rate-limits", "urn:queue"),
        ("worker-never-public", "urn:w"),
        ("iam-at-resource-level-only", "urn:p"),
        ("service-accounts-not-shared", "urn:task-app"),
        ("service-accounts-not-shared", "urn:worker"),
    }


def test_rule_names_are_unique_and_every_rule_has_a_description() -> None:
    """CrossGuard refuses duplicate policy names; each rule explains itself."""
    names = [rule.name for rule in stack_rules.RULES]
    assert len(names) == len(set(names)) == 8
    assert all(rule.description and rule.check.__doc__ for rule in stack_rules.RULES)
