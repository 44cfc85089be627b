"""Dead letters in the whole local system, as `make dev` runs it, with a fast retry config
(3 attempts, 0.2 s to 0.4 s): a task that fails every attempt ends in the dead-letter list
with its attempt count and last response, and nowhere else; Replay runs it once more and it
succeeds; Discard removes one; a missing grant is refused by the local system as by the
cloud."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from playwright.sync_api import expect, sync_playwright

from local_stack.plan import Ports, build_plan
from stack_settings import load_stack_file
from tests.e2e.harness import (
    STACK_FILE,
    StackLog,
    System,
    stack_queues,
    start_system,
    story,
    unique_id,
)
from tests.e2e.test_e2e_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

FAST = {
    "max_attempts": 3,
    "min_backoff": Decimal("0.2"),
    "max_backoff": Decimal("0.4"),
    "max_doublings": 1,
}
WAIT_SECONDS = 30


def fast_system(state: Any, revoke: tuple[str, str] | None = None) -> System:
    """The dev stack's system with the fast retry config on the queue and in both services'
    QUEUE_RETRY_CONFIG; ``revoke`` (queue suffix, role) removes one grant of the task-app."""
    settings = load_stack_file(STACK_FILE).model_copy(update=FAST)
    retry = settings.queue_spec().retry_config.to_api()
    queues = copy.deepcopy(stack_queues())
    for queue in queues:
        if queue["name"] == settings.queue_id:
            queue["retryConfig"] = retry
        if revoke and queue["name"].endswith(revoke[0]):
            for binding in queue["iamPolicy"]["bindings"]:
                if binding["role"] == revoke[1]:
                    binding["members"] = [m for m in binding["members"] if "task-app@" not in m]
    ports = Ports.free()
    plan = build_plan(settings, STACK_FILE, queues, ports=ports, state_dir=state)
    log = StackLog()
    stack = start_system(plan, log, ports)
    return System(settings, ports, plan, log, stack)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = fast_system(tmp_path_factory.mktemp("state"))
    try:
        yield running
    finally:
        running.stack.stop()


def dead_letters(system: System) -> list[dict[str, Any]]:
    answer = requests.get(f"{system.task_app_url}/api/dead-letters", timeout=30)
    assert answer.status_code == 200, answer.text
    letters: list[dict[str, Any]] = answer.json()["dead_letters"]
    return letters


def wait_for_dead_letter(system: System, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = [letter for letter in dead_letters(system) if letter["id"] == task_id]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{task_id} never became a dead letter\n{story(system.log, task_id)}")


def gone_from_the_queue(system: System, task_id: str) -> bool:
    try:
        system.client().get_task(name=f"{system.settings.queue_id}/tasks/{task_id}", timeout=5)
    except api_exceptions.NotFound:
        return True
    return False


def live_ids(system: System) -> list[str]:
    answer = requests.get(f"{system.task_app_url}/api/tasks", timeout=30)
    return [task["id"] for task in answer.json()["tasks"]]


def retry_counts(system: System, task_id: str) -> list[str]:
    return [
        e.record["cloud_tasks"]["retry_count"] for e in system.worker_records(task_id) if e.record
    ]


def test_a_task_failing_every_attempt_ends_in_the_dead_letters_only(system: System) -> None:
    """3 failed attempts (retry counts 0, 1, 2), then a dead letter saying so, with the last
    response; the live queue no longer has it; Replay runs it once more (the task's 4th
    attempt, which succeeds) and removes the dead letter; a second Replay finds none."""
    task_id = unique_id("dies")
    system.schedule(message="fails three times", fail_attempts=3, task_id=task_id)

    letter = wait_for_dead_letter(system, task_id)
    assert letter["attempts"] == 3
    assert letter["last_status"] == 500
    assert "simulated failure: attempt 3 fails" in letter["last_error"]
    assert "attempt 3 of 3" in letter["reason"]
    assert letter["message"] == "fails three times"
    assert letter["first_attempt_basis"] == "scheduled"
    assert retry_counts(system, task_id) == ["0", "1", "2"], story(system.log, task_id)
    # Nowhere else: not in the live queue, nor on its list.
    deadline = time.monotonic() + 5
    while not gone_from_the_queue(system, task_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone_from_the_queue(system, task_id)
    assert task_id not in live_ids(system)
    assert [d["id"] for d in dead_letters(system)].count(task_id) == 1

    replay = requests.post(
        f"{system.task_app_url}/api/dead-letters/{task_id}/replay", json={}, timeout=30
    )
    assert replay.status_code == 201, replay.text
    replayed = replay.json()["replayed_as"]
    again = requests.post(
        f"{system.task_app_url}/api/dead-letters/{task_id}/replay", json={}, timeout=30
    )
    assert again.status_code == 404
    system.log.wait_for(
        lambda _: system.worker_records(replayed) or None, WAIT_SECONDS, f"{replayed} runs"
    )
    deadline = time.monotonic() + 10
    while not gone_from_the_queue(system, replayed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone_from_the_queue(system, replayed), story(system.log, replayed)
    assert retry_counts(system, replayed) == ["0"], story(system.log, replayed)
    assert task_id not in [d["id"] for d in dead_letters(system)]
    assert replayed not in [d["id"] for d in dead_letters(system)]


def test_discard_removes_a_dead_letter(system: System) -> None:
    task_id = unique_id("discard")
    system.schedule(message="never works", fail_attempts=100, task_id=task_id)
    wait_for_dead_letter(system, task_id)
    answer = requests.delete(f"{system.task_app_url}/api/dead-letters/{task_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    assert task_id not in [d["id"] for d in dead_letters(system)]
    assert gone_from_the_queue(system, task_id)
    again = requests.delete(f"{system.task_app_url}/api/dead-letters/{task_id}", timeout=30)
    assert again.status_code == 404


def test_a_live_task_shows_its_retry_plan(system: System) -> None:
    """A task scheduled a minute ahead: attempt 1 of 3, its attempts drawn 0.2 s apart
    and then 0.4 s, given up after the third."""
    task_id = unique_id("plan")
    system.schedule(message="later", delay_seconds=60, task_id=task_id)
    try:
        tasks = requests.get(f"{system.task_app_url}/api/tasks", timeout=30).json()["tasks"]
        [task] = [t for t in tasks if t["id"] == task_id]
        plan = task["plan"]
        assert (plan["attempt"], plan["of"], plan["given_up_after"]) == (1, 3, 3)
        assert [p["x"] for p in plan["timeline"]] == [0, pytest.approx(1 / 3, abs=1e-3), 1]
    finally:
        system.client().delete_task(name=f"{system.settings.queue_id}/tasks/{task_id}", timeout=5)


def test_without_the_delete_grant_discard_is_refused_as_the_cloud_would(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The task-app's taskDeleter grant on the dead-letter queue removed: the local system
    refuses the DeleteTask (PERMISSION_DENIED naming cloudtasks.tasks.delete), the API
    answers 503 naming it, and the dead letter stays."""
    revoked = fast_system(
        tmp_path_factory.mktemp("revoked"), revoke=("-dead", "roles/cloudtasks.taskDeleter")
    )
    try:
        task_id = unique_id("denied")
        revoked.schedule(message="never works", fail_attempts=100, task_id=task_id)
        wait_for_dead_letter(revoked, task_id)
        answer = requests.delete(f"{revoked.task_app_url}/api/dead-letters/{task_id}", timeout=30)
        assert answer.status_code == 503
        assert "PERMISSION_DENIED" in answer.json()["error"]
        assert "cloudtasks.tasks.delete" in answer.json()["error"]
        assert task_id in [d["id"] for d in dead_letters(revoked)]
    finally:
        revoked.stack.stop()


def test_the_fast_config_is_what_the_services_were_given(system: System) -> None:
    """The test's premise: both services judge with the queue's own retry config."""
    for part in ("worker", "task-app"):
        env = system.plan[part].env
        assert '"maxAttempts": 3' in env["QUEUE_RETRY_CONFIG"], part


@pytest.mark.browser
def test_the_page_shows_dead_letters_and_plans_and_its_buttons_work(
    system: System, chromium: Path
) -> None:
    """A person's view: a dead letter on the page with why it died and after how many
    attempts; a delayed task's plan in words and as three dots; Replay and Discard from the
    page (forms with the page's CSRF token), each leaving the list."""
    replayed_id, discarded_id, later_id = (
        unique_id(k) for k in ("pg-replay", "pg-drop", "pg-plan")
    )
    for task_id in (replayed_id, discarded_id):
        system.schedule(message="on the page", fail_attempts=3, task_id=task_id)
        wait_for_dead_letter(system, task_id)
    system.schedule(message="later", delay_seconds=120, task_id=later_id)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(system.task_app_url)
                row = page.locator("#dead-letters tbody tr", has_text=replayed_id)
                expect(row).to_have_count(1)
                expect(row.locator("td").nth(1)).to_contain_text("attempt 3 fails")
                expect(row.locator("td").nth(3)).to_have_text("3")
                live = page.locator("#tasks tbody tr", has_text=later_id)
                expect(live.locator(".plan-text")).to_contain_text("attempt 1 of 3")
                expect(live.locator("svg.timeline circle")).to_have_count(3)
                page.screenshot(path=str(ARTIFACTS / "browser-dead-letters.png"), full_page=True)

                row.get_by_role("button", name="Replay").click()
                expect(page.locator("#flash")).to_contain_text(f"Replayed {replayed_id} as task")
                dropped = page.locator("#dead-letters tbody tr", has_text=discarded_id)
                dropped.get_by_role("button", name="Discard").click()
                expect(page.locator("#flash")).to_contain_text(
                    f"Discarded dead letter {discarded_id}"
                )
                expect(page.locator("#dead-letters tbody tr", has_text=replayed_id)).to_have_count(
                    0
                )
                expect(dropped).to_have_count(0)
            finally:
                browser.close()
    finally:
        system.client().delete_task(name=f"{system.settings.queue_id}/tasks/{later_id}", timeout=5)
    assert replayed_id not in [d["id"] for d in dead_letters(system)]
    assert discarded_id not in [d["id"] for d in dead_letters(system)]
