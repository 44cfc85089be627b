"""The chapter's demo in a real browser: open the task-app's page, press "Schedule task",
see the task in the queue's list (retrying, as the page refreshes itself), then see it gone
once the worker has acknowledged it. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.harness import System, story

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_pressing_schedule_task_shows_the_task_retrying_then_done(
    system: System, chromium: Path
) -> None:
    """A person's view: the button schedules a task (its id is shown), the queue list shows
    it with its dispatch count growing as the emulator retries it, and it leaves the list
    when the worker acknowledges it, without reloading the page."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(system.task_app_url)
            expect(page.get_by_role("heading", name="Schedule a task")).to_be_visible()

            page.fill("#message", "hello from the browser")
            # Three failed attempts (at 0 s, 1 s and 3 s, then success at 7 s with the dev
            # backoff) keep the task in the list across the page's 3-second refreshes.
            page.fill("#fail_attempts", "3")
            page.get_by_role("button", name="Schedule task").click()

            flash = page.locator("#flash")
            expect(flash).to_contain_text("Scheduled 1 task: ")
            task_id = flash.inner_text().rsplit(": ", 1)[1].strip()
            row = page.locator("#tasks tbody tr", has_text=task_id)
            expect(row).to_have_count(1)

            dispatches = row.locator("td").nth(2)
            # The retries show on the page itself: two or three dispatches so far.
            expect(dispatches).to_have_text(re.compile(r"^[23]$"), timeout=8000)
            page.screenshot(path=str(ARTIFACTS / "browser-task-retrying.png"), full_page=True)

            try:
                expect(row).to_have_count(0, timeout=20000)
            except AssertionError as error:
                page.screenshot(path=str(ARTIFACTS / "browser-task-stuck.png"), full_page=True)
                raise AssertionError(f"{error}\n{story(system.log, task_id)}") from error
            page.screenshot(path=str(ARTIFACTS / "browser-task-done.png"), full_page=True)
        finally:
            browser.close()

    attempts = system.worker_records(task_id)
    retry_counts = [e.record["cloud_tasks"]["retry_count"] for e in attempts if e.record]
    assert retry_counts == ["0", "1", "2", "3"], story(system.log, task_id)
    assert all(e.record and e.record["task_message"] == "hello from the browser" for e in attempts)
