"""The permission map: every Google API call the system makes, held against the grants a
stack declares.

Data, read by code and tests (``stack_review/data/``):

- ``permission_map.json``: each call (the task-app's CreateTask, Cloud Tasks minting a
  task's token, Cloud Run reading a secret...), who makes it, and the permission it needs
  on which resource. A Cloud Tasks method's permission is looked up in the emulator's table
  of Google's access-control reference, so the two can never disagree.
- Role -> permissions: Cloud Tasks roles from the emulator's table of Google's role
  reference, the other roles the stack grants from ``granted_roles.json``.

The rules (``check``), for one stack:

- **needed**: every call's permission is held by its caller through a grant on that very
  resource (a grant on another queue, or on the project, does not count).
- **surplus**: a grant is surplus when none of its role's permissions is needed by its
  member on its resource. A role that holds more than the call needs is not surplus when
  no smaller predefined role holds the needed permission (``roles/cloudtasks.viewer`` for
  ``cloudtasks.tasks.list``); the policy pack keeps roles to a short least-privilege list.

``scan_app_calls`` reads the services' source (an AST walk, nothing is imported) for Cloud
Tasks calls, through the client library or its REST API, so that a call added to the app
code without an entry in the map (and so without a grant) is found before it is deployed.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks_emulator import iam as emulator_iam

from stack_review.runner import StackRun
from stack_settings import PROJECT_DIR, StackSettings, validate_config

DATA_DIR = Path(__file__).resolve().parent / "data"
APP_DIR = PROJECT_DIR / "app"
APP_CODE = ("task_app", "worker")
"""The services whose source is scanned, as the map's ``code`` names them."""

FULL_VIEW = "FULL"

# IAM resource provider module -> the kind of resource the map names, and the input that
# names the resource.
_GRANT_KINDS: dict[str, tuple[str, str]] = {
    "cloudtasks": ("queue", "name"),
    "cloudrunv2": ("cloud_run_service", "name"),
    "serviceaccount": ("service_account", "serviceAccountId"),
    "secretmanager": ("secret", "secretId"),
}
_IAM_MEMBER = re.compile(r"(IamMember|IAMMember)$")


@dataclass(frozen=True, order=True)
class Need:
    """One permission a caller needs on one resource."""

    kind: str
    name: str
    member: str
    permission: str
    what: str


@dataclass(frozen=True, order=True)
class HeldGrant:
    """One role a stack grants one member on one resource."""

    kind: str
    name: str
    member: str
    role: str
    resource: str = ""
    """The Pulumi resource that makes the grant."""


@dataclass(frozen=True)
class Report:
    missing: list[Need]
    surplus: list[HeldGrant]
    unknown_roles: list[HeldGrant]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.surplus or self.unknown_roles)

    def problems(self) -> list[str]:
        lines = [
            f"missing: {n.member} needs {n.permission} on {n.kind} {n.name!r} ({n.what}); "
            "no grant on that resource holds it"
            for n in self.missing
        ]
        lines += [
            f"surplus: {g.resource} grants {g.role} to {g.member} on {g.kind} {g.name!r}, and "
            "no call needs any of its permissions there"
            for g in self.surplus
        ]
        lines += [
            f"unknown role: {g.resource} grants {g.role}, which the role tables do not list "
            "(add it with its permissions and Google's source)"
            for g in self.unknown_roles
        ]
        return lines


# ---- the data -------------------------------------------------------------------------


@cache
def permission_map() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA_DIR / "permission_map.json").read_text("utf-8"))
    return data


@cache
def role_permissions() -> dict[str, frozenset[str]]:
    """Every predefined role the tables know -> its permissions."""
    granted = json.loads((DATA_DIR / "granted_roles.json").read_text("utf-8"))["roles"]
    roles = dict(emulator_iam.roles())
    roles.update({role: frozenset(entry["permissions"]) for role, entry in granted.items()})
    return roles


def call_permissions(call: Mapping[str, Any]) -> list[str]:
    """The permissions one entry of the map needs."""
    if "permission" in call:
        return [str(call["permission"])]
    method = str(call["method"])
    methods = emulator_iam.method_permissions()
    if method not in methods:
        raise ValueError(
            f"permission map: {method!r} is not a Cloud Tasks method ({sorted(methods)})"
        )
    permissions = [methods[method]["permission"]]
    if call.get("view") == FULL_VIEW:
        permissions.append(emulator_iam.full_view_permission())
    return permissions


def names(settings: StackSettings) -> dict[str, str]:
    """What the map's templates name, for one stack."""
    values = {key: str(value) for key, value in settings.model_dump().items()}
    for attribute in ("dead_letter_queue_name",):
        if hasattr(settings, attribute):
            values[attribute] = str(getattr(settings, attribute))
    for service in ("task_app", "worker"):
        account = getattr(settings, f"{service}_name")
        values[f"{service}_email"] = f"{account}@{settings.project}.iam.gserviceaccount.com"
    return values


def needs(settings: StackSettings, calls: Sequence[Mapping[str, Any]] | None = None) -> list[Need]:
    """Every permission the system needs in this stack, from the map, in its order."""
    values = names(settings)
    found = []
    for call in permission_map()["calls"] if calls is None else calls:
        resource = call["resource"]
        for permission in call_permissions(call):
            found.append(
                Need(
                    kind=str(resource["kind"]),
                    name=str(resource["name"]).format(**values),
                    member=str(call["caller"]).format(**values),
                    permission=permission,
                    what=str(call["what"]),
                )
            )
    return list(dict.fromkeys(found))


def declared_grants(run: StackRun) -> list[HeldGrant]:
    """Every IAM member resource of a stack run, by the kind and name of its resource.
    Another kind of IAM resource (a binding, a policy, project IAM) raises: the map only
    reasons about one member on one resource, which is all the stack may declare."""
    grants = []
    for resource in run.resources:
        module = resource.type.split(":", 2)[1].split("/", 1)[0] if ":" in resource.type else ""
        is_iam = re.search(r"iam", resource.type.rsplit(":", 1)[-1], re.IGNORECASE)
        if not resource.custom or not is_iam:
            continue
        if not _IAM_MEMBER.search(resource.type) or module not in _GRANT_KINDS:
            raise ValueError(f"{resource.name}: {resource.type} is not a grant the map can check")
        kind, key = _GRANT_KINDS[module]
        target = str(resource.inputs[key]).rstrip("/").rsplit("/", 1)[-1]
        grants.append(
            HeldGrant(
                kind=kind,
                name=target,
                member=str(resource.inputs["member"]),
                role=str(resource.inputs["role"]),
                resource=resource.name,
            )
        )
    return sorted(grants)


def check(needed: Iterable[Need], grants: Iterable[HeldGrant]) -> Report:
    """The needed-and-nothing-more rules of the module docstring."""
    needed, grants = list(needed), list(grants)
    roles = role_permissions()
    unknown = [g for g in grants if g.role not in roles]
    missing = [
        need
        for need in needed
        if not any(
            (g.kind, g.name, g.member) == (need.kind, need.name, need.member)
            and need.permission in roles.get(g.role, frozenset())
            for g in grants
        )
    ]
    surplus = [
        grant
        for grant in grants
        if grant.role in roles
        and not any(
            (need.kind, need.name, need.member) == (grant.kind, grant.name, grant.member)
            and need.permission in roles[grant.role]
            for need in needed
        )
    ]
    return Report(missing=missing, surplus=surplus, unknown_roles=unknown)


def check_run(run: StackRun) -> Report:
    """The rules over one stack run, its settings read from the config it was given."""
    settings = validate_config(run.config, source=f"stack {run.stack}")
    return check(needs(settings), declared_grants(run))


# ---- the services' source -------------------------------------------------------------


@dataclass(frozen=True, order=True)
class FoundCall:
    """A Cloud Tasks call in a service's source."""

    code: str
    """The service, as the map's ``code`` names it (``task_app``)."""
    path: str
    line: int
    method: str
    view: str = ""
    """``FULL`` when the call asks for the full task view."""

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _snake(method: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


_HTTP_VERBS = {"get": "GET", "post": "POST", "delete": "DELETE", "patch": "PATCH", "put": "PUT"}
# A REST path of the Cloud Tasks API: .../tasks (list, create), .../tasks/ID (get, delete),
# .../tasks/ID:run (run).
_REST_TASKS = re.compile(r"/tasks(?P<rest>(?:/[^\"'\s]*)?)")


def _rest_method(verb: str, text: str) -> str | None:
    match = _REST_TASKS.search(text)
    if match is None:
        return None
    rest = match.group("rest")
    if rest.endswith(":run") and verb == "POST":
        return "RunTask"
    if not rest or rest == "/":
        return {"GET": "ListTasks", "POST": "CreateTask"}.get(verb)
    return {"GET": "GetTask", "DELETE": "DeleteTask"}.get(verb)


def _full_view(text: str) -> bool:
    return bool(re.search(r"(response_view|responseView)[^\n]*FULL", text))


def scan_source(code: str, path: str, source: str) -> list[FoundCall]:
    """Cloud Tasks calls in one module: a client method (``client.list_tasks(...)``), a
    request message (``tasks_v2.ListTasksRequest(...)``), or an HTTP verb (``.post``,
    ``.get``, ``.delete``, ``.request``) whose arguments spell a ``.../tasks`` REST path."""
    tree = ast.parse(source, filename=path)
    client_methods = {_snake(m): m for m in emulator_iam.method_permissions()}
    request_classes = {f"{m}Request": m for m in emulator_iam.method_permissions()}
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]

    def around(node: ast.AST) -> str:
        """The source of the function holding ``node`` (the whole module at top level)."""
        holders = [
            f
            for f in functions
            if f.lineno <= getattr(node, "lineno", 0) <= (f.end_lineno or f.lineno)
        ]
        holder = min(holders, key=lambda f: (f.end_lineno or 0) - f.lineno, default=None)
        return ast.get_source_segment(source, holder) or "" if holder else source

    # A route decorator (``@api.post("/tasks")``) serves a path; it calls nothing.
    decorators = {id(d) for f in ast.walk(tree) for d in getattr(f, "decorator_list", [])}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in decorators:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        method = client_methods.get(name) or request_classes.get(name)
        if method is None and name.lower() in (*_HTTP_VERBS, "request"):
            arguments = " ".join(
                ast.get_source_segment(source, arg) or ""
                for arg in [*node.args, *(k.value for k in node.keywords)]
            )
            verb = _HTTP_VERBS.get(name.lower())
            if verb is None and node.args and isinstance(node.args[0], ast.Constant):
                verb = str(node.args[0].value).upper()
            method = _rest_method(verb or "", _resolved(arguments, around(node)))
        if method is None:
            continue
        text = ast.get_source_segment(source, node) or ""
        view = FULL_VIEW if _full_view(text) or _full_view(around(node)) else ""
        found.append(FoundCall(code, path, node.lineno, method, view))
    return sorted(set(found))


def _resolved(arguments: str, context: str) -> str:
    """The arguments, and the assignments in the same function of each name they use (a
    URL is often built one line above the call)."""
    text = arguments
    for name in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", arguments)):
        for match in re.finditer(rf"\b{re.escape(name)}\s*=\s*(.+)", context):
            text += " " + match.group(1)
    return text


def scan_app_calls(app_dir: Path = APP_DIR, codes: Sequence[str] = APP_CODE) -> list[FoundCall]:
    """Every Cloud Tasks call in the services' source."""
    found = []
    for code in codes:
        for path in sorted((app_dir / code).rglob("*.py")):
            shown = (
                str(path.relative_to(app_dir.parent))
                if path.is_relative_to(app_dir.parent)
                else str(path)
            )
            found += scan_source(code, shown, path.read_text("utf-8"))
    return sorted(found)


def unmapped_calls(
    found: Iterable[FoundCall], calls: Sequence[Mapping[str, Any]] | None = None
) -> list[FoundCall]:
    """Calls in the source with no entry of the map for that service and method (a FULL
    view needs an entry that asks for it, since it needs one more permission)."""
    entries = permission_map()["calls"] if calls is None else calls
    mapped = {
        (str(c["code"]), str(c["method"]), str(c.get("view", "")))
        for c in entries
        if "code" in c and "method" in c
    }
    return [
        call
        for call in found
        if (call.code, call.method, call.view) not in mapped
        and not (call.view == "" and (call.code, call.method, FULL_VIEW) in mapped)
    ]
