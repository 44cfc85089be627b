"""IAM as Google Cloud enforces it, on the local system: the task-app calls Cloud Tasks as
its own service account (its token from its metadata server), and the emulator authorizes
each call against the queue's policy. With a grant the stack needs taken away (through
SetIamPolicy on the running emulator's queue, never in the committed stack), the task-app
fails the way it would first fail in production, and says which permission is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.iam.v1 import policy_pb2
from playwright.sync_api import expect, sync_playwright
from tasks_emulator.iam import roles

from local_stack.plan import task_app_service_account
from tests.e2e.harness import System, unique_id
from tests.e2e.test_e2e_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

Bindings = list[tuple[str, list[str]]]


def _member(system: System) -> str:
    return f"serviceAccount:{task_app_service_account(system.settings)}"


def revoked(bindings: Bindings, member: str, permission: str) -> Bindings:
    """``bindings`` without any role of ``member`` that holds ``permission``."""
    table = roles()
    kept = []
    for role, members in bindings:
        held = [m for m in members if m != member or permission not in table.get(role, ())]
        if held:
            kept.append((role, held))
    return kept


def _policy(bindings: Bindings) -> policy_pb2.Policy:
    return policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role=role, members=members) for role, members in bindings]
    )


@contextmanager
def queue_policy(system: System, change: Callable[[Bindings], Bindings]) -> Iterator[None]:
    """The queue's policy changed by ``change`` (as an owner: the local principal, a call
    without a token), and back as it was afterwards, whatever happens."""
    client = system.client()
    queue = system.settings.queue_id
    before = client.get_iam_policy(resource=queue)
    bindings = [(b.role, list(b.members)) for b in before.bindings]
    client.set_iam_policy(request={"resource": queue, "policy": _policy(change(bindings))})
    try:
        yield
    finally:
        client.set_iam_policy(request={"resource": queue, "policy": _policy(bindings)})


@contextmanager
def waiting_task(system: System, label: str) -> Iterator[str]:
    """A task scheduled through the task-app an hour ahead, so that it stays in the queue
    while it is listed; deleted afterwards."""
    [task_id] = system.schedule(task_id=unique_id(label), delay_seconds=3600)
    try:
        yield task_id
    finally:
        system.client().delete_task(name=f"{system.settings.queue_id}/tasks/{task_id}")


def test_api_tasks_lists_only_while_the_task_app_may_list(system: System) -> None:
    member = _member(system)
    url = f"{system.task_app_url}/api/tasks"
    # With the stack's own grants.
    with waiting_task(system, "iam-list") as task_id:
        listing = requests.get(url, timeout=30)
        assert listing.status_code == 200, listing.text
        assert task_id in [task["id"] for task in listing.json()["tasks"]]

        with queue_policy(system, lambda b: revoked(b, member, "cloudtasks.tasks.list")):
            denied = requests.get(url, timeout=30)
        assert denied.status_code == 503
        error = denied.json()["error"]
        assert "(PERMISSION_DENIED)" in error
        assert "cloudtasks.tasks.list" in error

        # The grant back: listed again, nothing lost.
        assert task_id in [task["id"] for task in requests.get(url, timeout=30).json()["tasks"]]


@pytest.mark.browser
def test_the_page_shows_the_tasks_or_the_missing_list_permission(
    system: System,
    chromium: Path,
) -> None:
    """What a person sees: the queue's tasks with the stack's grants; without the list
    grant, the page says PERMISSION_DENIED and names cloudtasks.tasks.list instead."""
    member = _member(system)
    with waiting_task(system, "iam-page") as task_id, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(system.task_app_url)
            row = page.locator("#tasks tbody tr", has_text=task_id)
            expect(row).to_have_count(1)
            with queue_policy(system, lambda b: revoked(b, member, "cloudtasks.tasks.list")):
                page.reload()
                status = page.locator("#tasks-status")
                expect(status).to_contain_text("PERMISSION_DENIED")
                expect(status).to_contain_text("cloudtasks.tasks.list")
                expect(row).to_have_count(0)
        finally:
            browser.close()


def test_without_the_enqueuer_grant_nothing_is_created(system: System) -> None:
    member = _member(system)
    task_id = unique_id("iam-create")
    with queue_policy(system, lambda b: revoked(b, member, "cloudtasks.tasks.create")):
        response = requests.post(
            f"{system.task_app_url}/tasks", json={"task_id": task_id}, timeout=30
        )
    assert response.status_code == 503, response.text
    body = response.json()
    assert "(PERMISSION_DENIED)" in body["error"]
    assert "cloudtasks.tasks.create" in body["error"]
    assert body["tasks"] == []
    with pytest.raises(api_exceptions.NotFound):
        system.client().get_task(name=f"{system.settings.queue_id}/tasks/{task_id}")
    # And with the grant back, the same request goes through.
    assert system.schedule(task_id=f"{task_id}-after") == [f"{task_id}-after"]
