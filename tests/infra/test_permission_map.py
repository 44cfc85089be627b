"""The permission map holds every committed stack: each call's permission is granted on its
very resource, no grant is surplus, and every Cloud Tasks call in the services' source has
an entry in the map."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
from tasks_emulator import iam as emulator_iam

from stack_review import StackRun
from stack_review import permissions as pm
from stack_settings import StackSettings, validate_config


def test_every_call_is_granted_and_no_grant_is_surplus(stack: StackRun) -> None:
    report = pm.check_run(stack)
    assert report.problems() == []
    assert pm.declared_grants(stack), "the stack grants something"


def test_the_map_names_the_calls_the_issue_lists(settings: StackSettings) -> None:
    """CreateTask and ListTasks on the queue, actAs for the token, invoke on the worker,
    the secret read: each a permission on one named resource."""
    needed = {(n.kind, n.name, n.permission) for n in pm.needs(settings)}
    email = f"{settings.task_app_name}@{settings.project}.iam.gserviceaccount.com"
    assert {
        ("queue", settings.queue_name, "cloudtasks.tasks.create"),
        ("queue", settings.queue_name, "cloudtasks.tasks.list"),
        ("service_account", email, "iam.serviceAccounts.actAs"),
        ("cloud_run_service", settings.worker_name, "run.routes.invoke"),
        ("secret", f"{settings.task_app_name}-secret-key", "secretmanager.versions.access"),
    } <= needed


@pytest.mark.parametrize(
    ("queue", "member", "role", "wanted"),
    [
        ("live", "task-app", "roles/cloudtasks.viewer", ["cloudtasks.tasks.list"]),
        ("live", "task-app", "roles/cloudtasks.enqueuer", ["cloudtasks.tasks.create"]),
        ("dead", "worker", "roles/cloudtasks.enqueuer", ["cloudtasks.tasks.create"]),
        # GetTask (a replay reads the dead letter) and ListTasks, both in the FULL view.
        (
            "dead",
            "task-app",
            "roles/cloudtasks.viewer",
            ["cloudtasks.tasks.list", "cloudtasks.tasks.get"],
        ),
        ("dead", "task-app", "roles/cloudtasks.enqueuer", ["cloudtasks.tasks.fullView"] * 2),
        ("dead", "task-app", "roles/cloudtasks.taskDeleter", ["cloudtasks.tasks.delete"]),
    ],
)
def test_removing_a_queue_grant_leaves_a_permission_missing(
    stack: StackRun, queue: str, member: str, role: str, wanted: list[str]
) -> None:
    settings = validate_config(stack.config)
    name = settings.queue_name if queue == "live" else settings.dead_letter_queue_name
    account = f"serviceAccount:{pm.names(settings)[member.replace('-', '_') + '_email']}"
    grants = pm.declared_grants(stack)
    kept = [
        g for g in grants if (g.kind, g.name, g.member, g.role) != ("queue", name, account, role)
    ]
    assert len(kept) == len(grants) - 1
    report = pm.check(pm.needs(settings), kept)
    assert [(n.kind, n.name, n.member, n.permission) for n in report.missing] == [
        ("queue", name, account, permission) for permission in wanted
    ]
    assert f"needs {wanted[0]} on queue {name!r}" in report.problems()[0]


def test_a_grant_on_another_resource_does_not_count(stack: StackRun) -> None:
    """The viewer grant moved to another queue: still missing on this one, and surplus there."""
    settings = validate_config(stack.config)
    grants = [
        dataclasses.replace(g, name="other")
        if (g.name, g.role) == (settings.queue_name, "roles/cloudtasks.viewer")
        else g
        for g in pm.declared_grants(stack)
    ]
    report = pm.check(pm.needs(settings), grants)
    assert [n.permission for n in report.missing] == ["cloudtasks.tasks.list"]
    assert [(g.name, g.role) for g in report.surplus] == [("other", "roles/cloudtasks.viewer")]


@pytest.mark.parametrize(
    ("role", "member"),
    [
        ("roles/cloudtasks.taskDeleter", "task-app"),  # on the live queue nothing deletes
        ("roles/cloudtasks.viewer", "worker"),  # the right role for someone else
    ],
)
def test_an_extra_grant_is_surplus(stack: StackRun, role: str, member: str) -> None:
    settings = validate_config(stack.config)
    account = getattr(settings, f"{member.replace('-', '_')}_name")
    extra = pm.HeldGrant(
        "queue",
        settings.queue_name,
        f"serviceAccount:{account}@{settings.project}.iam.gserviceaccount.com",
        role,
        "extra",
    )
    report = pm.check(pm.needs(settings), [*pm.declared_grants(stack), extra])
    assert report.surplus == [extra]
    assert report.missing == []


def test_a_role_the_tables_do_not_know_is_reported(stack: StackRun) -> None:
    settings = validate_config(stack.config)
    odd = pm.HeldGrant("queue", settings.queue_name, "user:a@example.com", "roles/made.up", "odd")
    report = pm.check(pm.needs(settings), [*pm.declared_grants(stack), odd])
    assert report.unknown_roles == [odd]
    assert not report.ok


def test_every_granted_role_has_its_permissions_and_source(stack: StackRun) -> None:
    roles = pm.role_permissions()
    for grant in pm.declared_grants(stack):
        assert roles[grant.role], grant.role
    granted = json.loads((pm.DATA_DIR / "granted_roles.json").read_text())["roles"]
    for role, entry in granted.items():
        assert entry["source"].startswith("https://cloud.google.com/iam/docs/roles-permissions/")
        assert role not in emulator_iam.roles(), "one table per role"
    # Cloud Tasks' roles are the emulator's table: the same facts for both.
    assert roles["roles/cloudtasks.viewer"] == emulator_iam.roles()["roles/cloudtasks.viewer"]


def test_the_map_names_only_known_methods_sources_and_templates(settings: StackSettings) -> None:
    data = pm.permission_map()
    for call in data["calls"]:
        assert call["source"] in data["sources"], call
        assert pm.call_permissions(call)
        assert call["caller"].format(**pm.names(settings))
    with pytest.raises(ValueError, match="'ListTask' is not a Cloud Tasks method"):
        pm.call_permissions({"method": "ListTasks"[:-1]})


def test_a_full_view_needs_the_full_view_permission() -> None:
    assert pm.call_permissions({"method": "ListTasks", "view": "FULL"}) == [
        "cloudtasks.tasks.list",
        "cloudtasks.tasks.fullView",
    ]


# ---- the services' source ---------------------------------------------------------------


def test_every_cloud_tasks_call_in_the_services_is_in_the_map() -> None:
    found = pm.scan_app_calls()
    methods = {(c.code, c.method) for c in found}
    assert {("task_app", "CreateTask"), ("task_app", "ListTasks")} <= methods
    assert [c.where() for c in pm.unmapped_calls(found)] == []


def _scan(tmp_path: Path, code: str, source: str) -> list[pm.FoundCall]:
    service = tmp_path / "app" / code
    service.mkdir(parents=True)
    (service / "module.py").write_text(textwrap.dedent(source))
    return pm.scan_app_calls(tmp_path / "app", codes=[code])


def test_a_client_call_without_an_entry_is_found(tmp_path: Path) -> None:
    found = _scan(
        tmp_path,
        "task_app",
        """
        def force(client, name):
            client.run_task(request={"name": name}, retry=None)
        """,
    )
    assert [(c.method, c.where()) for c in pm.unmapped_calls(found)] == [
        ("RunTask", "app/task_app/module.py:3")
    ]


def test_a_rest_call_without_an_entry_is_found(tmp_path: Path) -> None:
    """The worker through the REST API: POST .../tasks is CreateTask (mapped), DELETE
    .../tasks/ID is DeleteTask (not mapped for the worker)."""
    found = _scan(
        tmp_path,
        "worker",
        """
        def park(session, endpoint, queue, body):
            url = f"{endpoint}/v2/{queue}/tasks"
            return session.post(url, json={"task": body}, timeout=10)

        def drop(session, endpoint, queue, task_id):
            return session.delete(f"{endpoint}/v2/{queue}/tasks/{task_id}", timeout=10)
        """,
    )
    assert {(c.code, c.method) for c in found} == {
        ("worker", "CreateTask"),
        ("worker", "DeleteTask"),
    }
    assert [(c.code, c.method) for c in pm.unmapped_calls(found)] == [("worker", "DeleteTask")]
    mapped = [{"code": "worker", "method": m} for m in ("CreateTask", "DeleteTask")]
    assert pm.unmapped_calls(found, mapped) == []


def test_a_full_view_call_needs_a_full_view_entry(tmp_path: Path) -> None:
    found = _scan(
        tmp_path,
        "task_app",
        """
        from google.cloud import tasks_v2

        def dead(client, queue):
            return client.list_tasks(
                request=tasks_v2.ListTasksRequest(
                    parent=queue, response_view=tasks_v2.Task.View.FULL
                )
            )
        """,
    )
    assert {(c.method, c.view) for c in found} == {("ListTasks", "FULL")}
    assert pm.unmapped_calls(found, [{"code": "task_app", "method": "ListTasks"}])
    assert not pm.unmapped_calls(
        found, [{"code": "task_app", "method": "ListTasks", "view": "FULL"}]
    )


def test_route_decorators_are_not_calls(tmp_path: Path) -> None:
    found = _scan(
        tmp_path,
        "worker",
        """
        @tasks.post("/tasks")
        def run_task():
            return "", 204
        """,
    )
    assert found == []
