"""The stack's security invariants as plain functions over (resource type, properties).

This module is the policy pack's logic and nothing else: it imports no Pulumi package, so
the project's test suite (whose environment cannot hold pulumi-policy, which pins an older
protobuf) calls every rule directly, and the pack's entry point (``__main__.py`` beside this
file) only wraps each rule in a CrossGuard policy.

A resource rule receives the resource's type token (``gcp:cloudrunv2/service:Service``),
its properties as the Pulumi engine names them (camelCase, nested mappings and sequences)
and a ``RuleContext``; it returns one message per violation, empty when the resource
complies. A stack rule receives every resource of the stack and returns (message, urn)
pairs. The properties may be read-only mapping proxies, so rules read them only through
the ``Mapping`` / ``Sequence`` interfaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

PUBLIC_MEMBERS_AS_WRITTEN = frozenset({"allUsers", "allAuthenticatedUsers"})
PUBLIC_MEMBERS = frozenset(member.lower() for member in PUBLIC_MEMBERS_AS_WRITTEN)
"""IAM principals that mean "anyone" (compared lowercased)."""

INVOKER_ROLE = "roles/run.invoker"

DEFAULT_PUBLIC_INVOKER_SERVICES = ("task-app",)
"""Cloud Run services whose invoker role may be granted to allUsers (the policy's config
``publicInvokerServices`` overrides it, for a stack that renames the task-app)."""

DEFAULT_PROTECTED_STACKS = ("prod",)
"""Stacks whose services must keep deletion protection on (config ``protectedStacks``)."""

# Cloud Run service IAM resources, v2 and v1, and the property naming the service.
CLOUD_RUN_SERVICE_IAM = {
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": "name",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding": "name",
    "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy": "name",
    "gcp:cloudrun/iamMember:IamMember": "service",
    "gcp:cloudrun/iamBinding:IamBinding": "service",
    "gcp:cloudrun/iamPolicy:IamPolicy": "service",
}

# Where each Cloud Run workload names the identity it runs as.
CLOUD_RUN_WORKLOADS: dict[str, tuple[str, ...]] = {
    "gcp:cloudrunv2/service:Service": ("template", "serviceAccount"),
    "gcp:cloudrunv2/job:Job": ("template", "template", "serviceAccount"),
    "gcp:cloudrunv2/workerPool:WorkerPool": ("template", "serviceAccount"),
    "gcp:cloudrun/service:Service": ("template", "spec", "serviceAccountName"),
}

# Resources whose deletion protection is ON by provider default: a protected stack must
# keep it on explicitly, so a provider default changing under us cannot turn it off.
DELETION_PROTECTED_TYPES = frozenset(
    {
        "gcp:cloudrunv2/service:Service",
        "gcp:cloudrunv2/job:Job",
        "gcp:cloudrunv2/workerPool:WorkerPool",
    }
)

# The predefined roles the stack may grant, per kind of resource (the provider module of
# the IAM resource): each is the smallest Google role holding a permission one of the
# system's calls needs there (the permission map, stack_review/data/, says which). Owner,
# editor, admin and every other role would reach further than any call needs.
LEAST_PRIVILEGE_ROLES: dict[str, frozenset[str]] = {
    "cloudtasks": frozenset(
        {"roles/cloudtasks.enqueuer", "roles/cloudtasks.viewer", "roles/cloudtasks.taskDeleter"}
    ),
    "cloudrunv2": frozenset({INVOKER_ROLE}),
    "cloudrun": frozenset({INVOKER_ROLE}),
    "serviceaccount": frozenset({"roles/iam.serviceAccountUser"}),
    "secretmanager": frozenset({"roles/secretmanager.secretAccessor"}),
}

QUEUE_TYPE = "gcp:cloudtasks/queue:Queue"
QUEUE_RATE_LIMITS = ("maxDispatchesPerSecond", "maxConcurrentDispatches")
QUEUE_RETRY_CONFIG = ("maxAttempts", "minBackoff", "maxBackoff", "maxDoublings", "maxRetryDuration")

# Project, folder and organization IAM: any grant there reaches every resource below it.
_HIERARCHY_IAM = re.compile(r"^gcp:(projects|organizations|folder)/iam[A-Za-z]*:", re.IGNORECASE)
# Any resource-level IAM resource of the provider: ...IamMember, ...IAMBinding, ...IamPolicy.
_ANY_IAM = re.compile(r":[A-Za-z]*(IamMember|IamBinding|IamPolicy)$", re.IGNORECASE)
_DEFAULT_ACCOUNTS = (
    re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$"),
    re.compile(r"^[a-z0-9-]+@appspot\.gserviceaccount\.com$"),
)


@dataclass(frozen=True)
class RuleContext:
    """What a rule knows beyond one resource: which stack is deployed and the pack's config."""

    stack: str = ""
    public_invoker_services: frozenset[str] = frozenset(DEFAULT_PUBLIC_INVOKER_SERVICES)
    protected_stacks: frozenset[str] = frozenset(DEFAULT_PROTECTED_STACKS)

    @classmethod
    def from_config(cls, stack: str, config: Mapping[str, Any]) -> RuleContext:
        """Builds the context from a policy's config (keys ``publicInvokerServices`` and
        ``protectedStacks``, each a list of names); raises ValueError naming a bad value."""
        return cls(
            stack=stack.rsplit("/", 1)[-1],
            public_invoker_services=_names(
                config, "publicInvokerServices", DEFAULT_PUBLIC_INVOKER_SERVICES
            ),
            protected_stacks=_names(config, "protectedStacks", DEFAULT_PROTECTED_STACKS),
        )


def _names(config: Mapping[str, Any], key: str, default: Sequence[str]) -> frozenset[str]:
    value = config.get(key, default)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"policy config {key} = {value!r}: must be a list of names")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"policy config {key} = {value!r}: every entry must be a non-empty name")
    return frozenset(value)


@dataclass(frozen=True)
class StackResource:
    """One resource of a stack, as a stack rule sees it (outputs, not inputs)."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str = ""
    name: str = ""


@dataclass(frozen=True)
class Grant:
    """One (role, member) pair that an IAM resource grants."""

    role: str
    member: str

    @property
    def is_public(self) -> bool:
        return self.member.strip().lower() in PUBLIC_MEMBERS


# ---- reading properties -------------------------------------------------------------


def _get(props: Any, *path: str) -> Any:
    """props[path[0]][path[1]]..., or None where a step is missing or not a mapping."""
    value = props
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [item for item in value if isinstance(item, str)]
    return []


def last_segment(resource_name: Any) -> str:
    """'projects/p/locations/l/services/task-app' or 'task-app' -> 'task-app'."""
    return str(resource_name or "").rstrip("/").rsplit("/", 1)[-1]


def iam_grants(resource_type: str, props: Mapping[str, Any]) -> list[Grant]:
    """Every grant an IAM resource makes: ``member`` + ``role`` (…IamMember), ``members`` +
    ``role`` (…IamBinding) or the bindings inside ``policyData`` (…IamPolicy, a JSON string).
    Empty for a resource that is not an IAM resource."""
    if not (_ANY_IAM.search(resource_type) or _HIERARCHY_IAM.match(resource_type)):
        return []
    role = _get(props, "role")
    grants = [Grant(str(role or ""), member) for member in _strings(_get(props, "member"))]
    grants += [Grant(str(role or ""), member) for member in _strings(_get(props, "members"))]
    policy_data = _get(props, "policyData")
    if isinstance(policy_data, str) and policy_data.strip():
        try:
            policy = json.loads(policy_data)
        except json.JSONDecodeError:
            policy = {}
        for binding in policy.get("bindings", []) if isinstance(policy, dict) else []:
            if isinstance(binding, dict):
                binding_role = str(binding.get("role", ""))
                grants += [Grant(binding_role, m) for m in _strings(binding.get("members"))]
    return grants


def service_account_of(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The identity a Cloud Run workload runs as ('' when unset), None for other resources."""
    path = CLOUD_RUN_WORKLOADS.get(resource_type)
    if path is None:
        return None
    value = _get(props, *path)
    return value.strip() if isinstance(value, str) else ""


def _seconds(duration: Any) -> Decimal | None:
    text = str(duration).strip()
    if not text.endswith("s"):
        return None
    try:
        return Decimal(text[:-1])
    except InvalidOperation:
        return None


def _describe(resource_type: str, props: Mapping[str, Any] | None = None) -> str:
    """'Service' or, when the resource has a name property, "Service 'worker'"."""
    kind = resource_type.rsplit(":", 1)[-1]
    name = _get(props, "name") if props is not None else None
    return f"{kind} {last_segment(name)!r}" if isinstance(name, str) and name else kind


# ---- resource rules -----------------------------------------------------------------


def worker_never_public(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """No Cloud Run service other than the public task-app grants anything to allUsers or
    allAuthenticatedUsers: the worker runs whatever a task says, so only the task-app's
    identity may call it."""
    service_key = CLOUD_RUN_SERVICE_IAM.get(resource_type)
    if service_key is None:
        return []
    service = last_segment(_get(props, service_key))
    if service in context.public_invoker_services:
        return []
    return [
        f"Cloud Run service {service!r} grants {grant.role} to {grant.member}; only "
        f"{sorted(context.public_invoker_services)} may be public. Grant "
        f"{INVOKER_ROLE} to the calling service account instead."
        for grant in iam_grants(resource_type, props)
        if grant.is_public
    ]


def public_only_as_task_app_invoker(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """allUsers / allAuthenticatedUsers appear in exactly one kind of grant: roles/run.invoker
    on a public invoker service (the task-app). Not on a queue, a service account, a
    repository, a secret, nor any other role on the task-app. (Public grants on other Cloud
    Run services are the worker-never-public rule's.)"""
    service_key = CLOUD_RUN_SERVICE_IAM.get(resource_type)
    service = last_segment(_get(props, service_key)) if service_key else None
    if service_key and service not in context.public_invoker_services:
        return []
    messages = []
    for grant in iam_grants(resource_type, props):
        if not grant.is_public:
            continue
        if service_key and grant.role == INVOKER_ROLE:
            continue
        target = (
            f"Cloud Run service {service!r}" if service_key else _describe(resource_type, props)
        )
        messages.append(
            f"{target} grants {grant.role} to {grant.member}; the only public grant allowed "
            f"is {INVOKER_ROLE} on {sorted(context.public_invoker_services)}."
        )
    return messages


def iam_at_resource_level_only(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """No project, folder or organization IAM resource of any kind: every grant names one
    resource (a service, the queue, a service account), so no identity gets a role on
    everything in the project."""
    if not _HIERARCHY_IAM.match(resource_type):
        return []
    grants = ", ".join(f"{g.role} to {g.member}" for g in iam_grants(resource_type, props))
    scope = resource_type.split(":", 2)[1].split("/", 1)[0]
    return [
        f"{resource_type} manages IAM on the whole {scope.rstrip('s')}"
        + (f" ({grants})" if grants else "")
        + "; grant the role on the one resource that needs it (a *IamMember resource)."
    ]


def least_privilege_roles(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """Every resource-level grant is one of the small predefined roles its kind of resource
    allows (LEAST_PRIVILEGE_ROLES): a queue grants enqueuer, viewer or taskDeleter, a Cloud
    Run service run.invoker, a service account serviceAccountUser, a secret
    secretAccessor. Anything wider (admin, editor, a basic role) is refused."""
    if _HIERARCHY_IAM.match(resource_type):
        return []  # the iam-at-resource-level-only rule's
    module = resource_type.split(":", 2)[1].split("/", 1)[0] if ":" in resource_type else ""
    allowed = LEAST_PRIVILEGE_ROLES.get(module, frozenset())
    return [
        f"{_describe(resource_type, props)} grants {grant.role} to {grant.member}; on this "
        f"kind of resource the stack grants only {sorted(allowed) or 'nothing'}, the "
        "smallest roles holding what the system's calls need."
        for grant in iam_grants(resource_type, props)
        if grant.role not in allowed
    ]


def dedicated_service_account(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """Each Cloud Run workload names its own service account. Unset means the Compute
    Engine default account, which usually holds Editor on the whole project."""
    account = service_account_of(resource_type, props)
    if account is None:
        return []
    field_path = ".".join(CLOUD_RUN_WORKLOADS[resource_type])
    if not account:
        return [
            f"{_describe(resource_type, props)} has no {field_path}: it would run as the default "
            "compute service account. Set a dedicated service account."
        ]
    if any(pattern.match(account) for pattern in _DEFAULT_ACCOUNTS):
        return [
            f"{_describe(resource_type, props)} runs as the default service account {account}; "
            "set a dedicated service account with only the roles this service needs."
        ]
    return []


def deletion_protection_in_protected_stacks(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """In a protected stack (prod), no resource turns deletion protection off (nor sets
    the provider's deletionPolicy to DELETE), and every Cloud Run workload sets it on
    explicitly, so a replacement or a destroy cannot take production down by accident.
    A stack that cannot be told counts as protected."""
    if context.stack and context.stack not in context.protected_stacks:
        return []
    stack = context.stack or "(unknown)"
    protected = sorted(context.protected_stacks)
    messages = []
    value = _get(props, "deletionProtection")
    if value is False or (resource_type in DELETION_PROTECTED_TYPES and value is not True):
        shown = "unset" if value is None else repr(value)
        messages.append(
            f"{_describe(resource_type, props)} has deletionProtection {shown} in stack "
            f"{stack!r}; protected stacks {protected} must set it to true."
        )
    if _get(props, "deletionPolicy") == "DELETE":
        messages.append(
            f"{_describe(resource_type, props)} has deletionPolicy DELETE in stack {stack!r}; "
            f"protected stacks {protected} use PREVENT (or leave it unset)."
        )
    return messages


def queue_explicit_retry_and_rate_limits(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    """Every Cloud Tasks queue states its rate limits and its whole retry config, and its
    retries end (a bounded attempt count or retry duration): the API's defaults (500/s,
    1000 concurrent, 100 attempts over an unbounded time) would hammer a failing worker."""
    if resource_type != QUEUE_TYPE:
        return []
    missing = [
        f"rateLimits.{key}" for key in QUEUE_RATE_LIMITS if _get(props, "rateLimits", key) is None
    ] + [
        f"retryConfig.{key}"
        for key in QUEUE_RETRY_CONFIG
        if _get(props, "retryConfig", key) is None
    ]
    if missing:
        return [f"queue {_get(props, 'name')!r} leaves {', '.join(missing)} to the API default."]
    attempts = _get(props, "retryConfig", "maxAttempts")
    duration = _seconds(_get(props, "retryConfig", "maxRetryDuration"))
    if attempts == -1 and duration is not None and duration == 0:
        return [
            f"queue {_get(props, 'name')!r} retries forever (maxAttempts -1 and "
            "maxRetryDuration 0s); bound one of them."
        ]
    return []


# ---- stack rules --------------------------------------------------------------------


def service_accounts_not_shared(
    resources: Iterable[StackResource], context: RuleContext
) -> list[tuple[str, str]]:
    """No two Cloud Run workloads run as the same service account: a grant meant for one
    (the task-app's enqueuer role) must not reach the other."""
    by_account: dict[str, list[StackResource]] = {}
    for resource in resources:
        account = service_account_of(resource.resource_type, resource.props)
        if account:
            by_account.setdefault(account, []).append(resource)
    violations = []
    for account, users in sorted(by_account.items()):
        if len(users) > 1:
            names = ", ".join(sorted(last_segment(_get(r.props, "name")) or r.name for r in users))
            violations += [
                (f"{account} is shared by Cloud Run workloads {names}; give each its own.", r.urn)
                for r in users
            ]
    return violations


# ---- the pack's table ---------------------------------------------------------------

ResourceCheck = Callable[[str, Mapping[str, Any], RuleContext], list[str]]
StackCheck = Callable[[Iterable[StackResource], RuleContext], list[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    """One policy of the pack: its CrossGuard name, description and check."""

    name: str
    description: str
    check: ResourceCheck | StackCheck
    kind: str = "resource"  # or "stack"
    uses_config: tuple[str, ...] = field(default=())


RULES: tuple[Rule, ...] = (
    Rule(
        "worker-never-public",
        "No Cloud Run service but the task-app grants anything to allUsers/allAuthenticatedUsers.",
        worker_never_public,
        uses_config=("publicInvokerServices",),
    ),
    Rule(
        "public-only-as-task-app-invoker",
        "allUsers appears only as roles/run.invoker on the task-app service.",
        public_only_as_task_app_invoker,
        uses_config=("publicInvokerServices",),
    ),
    Rule(
        "iam-at-resource-level-only",
        "No project, folder or organization IAM: every grant is on one resource.",
        iam_at_resource_level_only,
    ),
    Rule(
        "iam-least-privilege-roles",
        "Every grant is one of the small predefined roles its kind of resource allows.",
        least_privilege_roles,
    ),
    Rule(
        "cloud-run-dedicated-service-account",
        "Each Cloud Run workload runs as a dedicated service account, never the default one.",
        dedicated_service_account,
    ),
    Rule(
        "service-accounts-not-shared",
        "No two Cloud Run workloads share a service account.",
        service_accounts_not_shared,
        kind="stack",
    ),
    Rule(
        "deletion-protection-in-prod",
        "Protected stacks (prod) keep deletion protection on.",
        deletion_protection_in_protected_stacks,
        uses_config=("protectedStacks",),
    ),
    Rule(
        "queue-explicit-retry-and-rate-limits",
        "Every Cloud Tasks queue sets its rate limits and a bounded retry config explicitly.",
        queue_explicit_retry_and_rate_limits,
    ),
)


def check_resource(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> Iterator[tuple[str, str]]:
    """(rule name, message) for every resource rule the resource breaks."""
    for rule in RULES:
        if rule.kind == "resource":
            check: Any = rule.check
            for message in check(resource_type, props, context):
                yield rule.name, message


def check_stack(
    resources: Sequence[StackResource], context: RuleContext
) -> list[tuple[str, str, str]]:
    """(rule name, urn, message) for every violation of every rule, resource and stack
    rules alike, over a whole stack: what the pack would report for it."""
    found = [
        (name, resource.urn, message)
        for resource in resources
        for name, message in check_resource(resource.resource_type, resource.props, context)
    ]
    for rule in RULES:
        if rule.kind == "stack":
            check: Any = rule.check
            found += [(rule.name, urn, message) for message, urn in check(resources, context)]
    return found
