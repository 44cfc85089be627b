"""IAM as Cloud Tasks enforces it: queue policies, callers identified by their OAuth
access token, and every method authorized against the policies that apply.

Google's facts are data: the predefined roles (``data/cloudtasks_roles.json``) and the
permission each method needs (``data/cloudtasks_method_permissions.json``), both with
their source. A queue's policy is ``QueueRecord.iam_policy`` (a serialized
google.iam.v1.Policy), read and written through the engine only. A project's policy,
given at start, applies to every queue of the project, as the resource hierarchy does in
the cloud; methods on a location (CreateQueue, ListQueues) are authorized against it alone.

Enforcement starts when the first policy exists (given at start or set through
SetIamPolicy); until then every call is allowed and tokens are not read. A call without
a token acts as the local principal: by default an owner holding every permission, so
scripts and gcloud with ``auth/disable_credentials`` keep working.

Access tokens are minted here (for the metadata server) as ``ya29.`` followed by a JWT
signed with the emulator's OIDC key: anything that holds the key can check them, so they
stay valid for as long as the key does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import grpc
import jwt
from google.iam.v1 import policy_pb2

from .clock import Clock
from .engine import VIEW_FULL, Engine
from .errors import ApiError, api_error, invalid
from .oidc import TokenSigner

OWNER = "owner"
ACCESS_TOKEN_PREFIX = "ya29."  # noqa: S105 - the shape of Google's tokens, not a secret
ACCESS_AUDIENCE = "https://cloudtasks.googleapis.com/"
ACCESS_TOKEN_ISSUER = "tasks-emulator"  # noqa: S105 - a name, not a secret
ACCESS_TOKEN_SECONDS = 3600
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# The etag of a policy that was never set, as Google answers it ("ACAB" in JSON).
EMPTY_ETAG = b"\x00\x20\x01"
MEMBER_RE = re.compile(
    r"^(allUsers|allAuthenticatedUsers|"
    r"(user|serviceAccount|group|domain|principal|principalSet|deleted:[a-zA-Z]+):.+)$"
)
PolicyPb = policy_pb2.Policy


def _data(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath(f"data/{name}").read_text("utf-8"))


@cache
def roles() -> dict[str, frozenset[str]]:
    """Predefined role -> its permissions, from Google's role reference."""
    table = _data("cloudtasks_roles.json")["roles"]
    return {role: frozenset(entry["permissions"]) for role, entry in table.items()}


@cache
def method_permissions() -> dict[str, dict[str, str]]:
    """Method -> {"permission", "on"}, from Google's access control reference."""
    methods: dict[str, dict[str, str]] = _data("cloudtasks_method_permissions.json")["methods"]
    return methods


@cache
def full_view_permission() -> str:
    return str(_data("cloudtasks_method_permissions.json")["full_view_permission"])


@cache
def cloudtasks_permissions() -> frozenset[str]:
    """Every Cloud Tasks permission some role holds: what TestIamPermissions accepts."""
    return frozenset(p for held in roles().values() for p in held if p.startswith("cloudtasks."))


def member_of(email: str) -> str:
    """The IAM member an account's email is: serviceAccount: for service accounts."""
    kind = "serviceAccount" if email.endswith(".gserviceaccount.com") else "user"
    return f"{kind}:{email}"


@dataclass(frozen=True)
class Caller:
    """Who makes a call: ``member`` None is the local owner, who may do anything."""

    member: str | None
    authenticated: bool = False


OWNER_CALLER = Caller(None)

Grants = tuple[tuple[frozenset[str], frozenset[str]], ...]  # (permissions, members) each


@lru_cache(maxsize=1024)
def _grants(serialized: bytes) -> Grants:
    policy = PolicyPb.FromString(serialized)
    table = roles()
    return tuple(
        (table.get(binding.role, frozenset()), frozenset(binding.members))
        for binding in policy.bindings
    )


def _matches(members: frozenset[str], caller: Caller) -> bool:
    return (
        caller.member in members
        or "allUsers" in members
        or (caller.authenticated and "allAuthenticatedUsers" in members)
    )


def _project(resource: str) -> str:
    return "/".join(resource.split("/", 2)[:2])


def _queue_of(resource: str) -> str:
    return resource.split("/tasks/", 1)[0]


def check_policy(policy: Any) -> None:
    """INVALID_ARGUMENT for a policy this emulator cannot hold, naming what is wrong."""
    known = roles()
    for binding in policy.bindings:
        if binding.role not in known:
            raise invalid(
                f"Role {binding.role} is not supported for this resource "
                f"(supported: {', '.join(sorted(known))})."
            )
        if binding.HasField("condition"):
            raise invalid(
                f"The binding of {binding.role} has a condition: IAM conditions are not "
                "evaluated by this emulator."
            )
        for member in binding.members:
            if not MEMBER_RE.match(member):
                raise invalid(
                    f"Invalid member {member!r}: must be user:, serviceAccount:, group:, "
                    "domain:, principal: or principalSet: followed by its id, or allUsers "
                    "or allAuthenticatedUsers."
                )
    if policy.audit_configs:
        raise invalid("auditConfigs are not supported on queues.")


class Iam:
    """Authorization of every call, and the IAM methods on queues."""

    def __init__(
        self,
        engine: Engine,
        signer: TokenSigner,
        clock: Clock,
        local_principal: str = OWNER,
    ) -> None:
        if local_principal != OWNER and not MEMBER_RE.match(local_principal):
            raise ValueError(
                f"local principal {local_principal!r}: must be {OWNER!r} or an IAM member "
                "such as user:dev@example.com or "
                "serviceAccount:NAME@PROJECT.iam.gserviceaccount.com"
            )
        self.engine = engine
        self.signer = signer
        self.clock = clock
        self.local = OWNER_CALLER if local_principal == OWNER else Caller(local_principal, False)
        self.project_policies: dict[str, bytes] = {}

    # ---- who calls ------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True once any policy exists: before that the emulator allows every call."""
        return bool(self.project_policies) or any(
            record.iam_policy is not None for record in self.engine.queues.values()
        )

    def caller(self, authorization: str) -> Caller:
        """The caller an Authorization header (or gRPC metadata) names; UNAUTHENTICATED for
        a token that is not one of this emulator's, or has expired."""
        if not authorization:
            return self.local
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(ACCESS_TOKEN_PREFIX):
            raise api_error("unauthenticated")
        try:
            claims = self.signer.verify(token.removeprefix(ACCESS_TOKEN_PREFIX), ACCESS_AUDIENCE)
        except jwt.InvalidTokenError:
            raise api_error("unauthenticated") from None
        if not float(claims.get("exp", 0)) > self.clock.now():
            raise api_error("unauthenticated")
        return Caller(member_of(str(claims["email"])), authenticated=True)

    def mint_access_token(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> str:
        """An access token this emulator recognises as ``email``, valid for an hour."""
        now = int(self.clock.now())
        claims = {
            "iss": ACCESS_TOKEN_ISSUER,
            "aud": ACCESS_AUDIENCE,
            "email": email,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
        }
        return ACCESS_TOKEN_PREFIX + self.signer.sign(claims)

    # ---- what they may do -----------------------------------------------------------

    def held(self, caller: Caller, resource: str, permissions: list[str]) -> list[str]:
        """Those of ``permissions`` that ``caller`` holds on ``resource`` (a queue, a task
        or a location) through the project's policy and, for a queue, its own."""
        if caller.member is None:
            return list(permissions)
        sources = [self.project_policies.get(_project(resource))]
        if "/queues/" in resource:
            record = self.engine.queues.get(_queue_of(resource))
            sources.append(record.iam_policy if record is not None else None)
        granted: set[str] = set()
        for serialized in sources:
            if serialized:
                for role_permissions, members in _grants(serialized):
                    if _matches(members, caller):
                        granted |= role_permissions
        return [permission for permission in permissions if permission in granted]

    def authorize(self, method: str, request: Any, authorization: str) -> Caller:
        """The caller of ``method``, once it holds every permission the call needs;
        PERMISSION_DENIED naming the first it lacks."""
        if not self.enabled:
            return OWNER_CALLER
        caller = self.caller(authorization)
        rule = method_permissions().get(method)
        if rule is None or caller.member is None:
            return caller
        resource = _resource(method, request)
        needed = [rule["permission"]]
        if getattr(request, "response_view", 0) == VIEW_FULL:
            needed.append(full_view_permission())
        held = self.held(
            caller, resource if rule["on"] != "project" else _project(resource), needed
        )
        for permission in needed:
            if permission not in held:
                named = resource if rule["on"] != "queue" else _queue_of(resource)
                raise api_error("permission_denied", permission=permission, resource=named)
        return caller

    # ---- the IAM methods ------------------------------------------------------------

    def get_policy(self, resource: str) -> Any:
        serialized = self.engine.get_iam_policy(resource)
        if serialized is None:
            return PolicyPb(etag=EMPTY_ETAG)
        return PolicyPb.FromString(serialized)

    def set_policy(self, resource: str, policy: Any) -> Any:
        current = self.get_policy(resource)
        if policy.etag and policy.etag != current.etag:
            raise api_error("policy_etag_conflict")
        check_policy(policy)
        stored = PolicyPb()
        stored.CopyFrom(policy)
        stored.version = 1  # no conditions: Google answers version 1
        stored.etag = _next_etag(current.etag)
        self.engine.set_iam_policy(resource, stored.SerializeToString())
        return stored

    def test_permissions(self, caller: Caller, resource: str, permissions: list[str]) -> list[str]:
        self.engine.get_iam_policy(resource)  # NOT_FOUND for a queue that does not exist
        known = cloudtasks_permissions()
        for permission in permissions:
            if permission not in known:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Permission {permission} is not valid for a queue "
                    f"(valid: {', '.join(sorted(known))}).",
                )
        return self.held(caller, resource, permissions)

    def set_project_policy(self, project: str, policy: Any) -> None:
        """The policy of ``project`` (``projects/P``), inherited by all its queues."""
        if not re.fullmatch(r"projects/[^/]+", project):
            raise ValueError(f"project {project!r}: must be projects/PROJECT_ID")
        check_policy(policy)
        self.project_policies[project] = policy.SerializeToString()


def _next_etag(previous: bytes) -> bytes:
    """A new etag for each version of a policy (opaque to clients, as Google's are)."""
    counter = 0 if previous == EMPTY_ETAG else int.from_bytes(previous[-8:], "big")
    return (counter + 1).to_bytes(8, "big")


def _resource(method: str, request: Any) -> str:
    """The resource a request names: its queue, task or location."""
    if method in ("CreateQueue",):
        return str(request.queue.name or request.parent)
    if method == "UpdateQueue":
        return str(request.queue.name)
    for field in ("resource", "name", "parent"):
        value = getattr(request, field, None)
        if value:
            return str(value)
    return ""
