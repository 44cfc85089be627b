"""task-app's page: the "Schedule task" button, CSRF, post/redirect/get and the task list."""

from __future__ import annotations

import re

import grpc
import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask.testing import FlaskClient


def test_page_has_the_button_the_fields_and_only_local_assets(client: FlaskClient) -> None:
    """The chapter's page: a "Schedule task" button with optional fields, a CSRF token,
    and scripts and styles served by the app itself (the CSP allows nothing else)."""
    response = client.get("/")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.search(r"<button[^>]*>Schedule task</button>", html)
    for field in ("message", "delay_seconds", "count", "fail_attempts", "work_seconds"):
        assert f'name="{field}"' in html
    assert 'name="csrf_token"' in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert '<script src="/static/app.js"' in html
    for asset in ("/static/app.js", "/static/style.css"):
        with client.get(asset) as served:
            assert served.status_code == 200


def test_form_without_csrf_token_is_refused(
    client: FlaskClient, fake_tasks: FakeCloudTasks
) -> None:
    """A cross-site form post (no token) schedules nothing."""
    response = client.post("/", data={"count": "1"}, headers={"Accept": "text/html"})

    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert fake_tasks.create_requests == []


def test_press_redirects_and_flashes_the_created_ids(
    client: FlaskClient, fake_tasks: FakeCloudTasks, csrf_token: str
) -> None:
    """Post/redirect/get: the press answers 303 to the page, which then shows the ids of
    exactly the tasks that were created; reloading the page creates nothing more."""
    response = client.post(
        "/",
        data={"csrf_token": csrf_token, "message": "from the page", "count": "2"},
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    ids = [name.rsplit("/", 1)[-1] for name in fake_tasks.tasks]
    assert len(ids) == 2
    assert f"Scheduled 2 tasks: {', '.join(ids)}" in page
    again = client.get("/").get_data(as_text=True)
    assert "Scheduled 2 tasks" not in again
    assert len(fake_tasks.create_requests) == 2


def test_empty_form_schedules_one_default_task(
    client: FlaskClient, fake_tasks: FakeCloudTasks, csrf_token: str
) -> None:
    """Every field is optional: the bare button schedules one task."""
    response = client.post("/", data={"csrf_token": csrf_token}, follow_redirects=True)

    assert response.status_code == 200
    assert "Scheduled 1 task:" in response.get_data(as_text=True)
    assert len(fake_tasks.create_requests) == 1


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("count", "abc", "count must be a whole number"),
        ("count", "0", "count must be an integer between 1 and 100"),
        ("delay_seconds", "2592001", "delay_seconds must be a number of seconds between 0"),
        ("delay_seconds", "soon", "delay_seconds must be a number"),
        ("fail_attempts", "-2", "fail_attempts must be an integer between 0 and 100"),
        ("work_seconds", "1e9", "work_seconds must be a number of seconds between 0 and 895"),
    ],
)
def test_invalid_form_field_is_named_on_the_page(
    client: FlaskClient,
    fake_tasks: FakeCloudTasks,
    csrf_token: str,
    field: str,
    value: str,
    words: str,
) -> None:
    """A bad value is shown next to its field with a 400, and nothing is scheduled."""
    response = client.post("/", data={"csrf_token": csrf_token, field: value})

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert f'id="{field}-error"' in html
    assert words in html
    assert fake_tasks.create_requests == []


def test_outage_shows_503_on_the_page_with_what_was_created(
    client: FlaskClient, fake_tasks: FakeCloudTasks, csrf_token: str
) -> None:
    """An outage during a fan-out is a 503 page that says which tasks exist."""
    fake_tasks.fail("CreateTask", grpc.StatusCode.UNAVAILABLE, call=2)

    response = client.post("/", data={"csrf_token": csrf_token, "count": "3"})

    assert response.status_code == 503
    html = response.get_data(as_text=True)
    assert "Cloud Tasks is unavailable (UNAVAILABLE): task 2 of 3 was not created" in html
    [created] = [name.rsplit("/", 1)[-1] for name in fake_tasks.tasks]
    assert f"(1 of 3): {created}" in html


def test_page_never_waits_for_cloud_tasks(client: FlaskClient, fake_tasks: FakeCloudTasks) -> None:
    """The page does not list the queue itself: even with ListTasks hung it is served at
    once, with an empty table its script fills from /api/tasks."""
    fake_tasks.delay("ListTasks", 30)

    response = client.get("/")

    assert response.status_code == 200
    assert fake_tasks.list_requests == []
    html = response.get_data(as_text=True)
    assert "Loading the queue's tasks" in html
    assert "<tbody></tbody>" in html
    assert 'src="/static/app.js"' in html


def test_unknown_page_is_an_html_404_for_browsers(client: FlaskClient) -> None:
    """Browsers get a short HTML page, API clients JSON; neither shows internals."""
    html = client.get("/nope", headers={"Accept": "text/html"})
    api = client.get("/nope", headers={"Accept": "application/json"})

    assert html.status_code == api.status_code == 404
    assert html.mimetype == "text/html"
    assert "404 Not Found" in html.get_data(as_text=True)
    assert api.get_json()["error"].startswith("404 Not Found")


@pytest.mark.parametrize(("proto", "secure"), [("https", True), ("http", False)])
def test_session_cookie_is_secure_behind_https(
    client: FlaskClient, fake_tasks: FakeCloudTasks, proto: str, secure: bool
) -> None:
    """On Cloud Run (TLS ended in front, X-Forwarded-Proto: https) the session cookie that
    carries the flash and the CSRF secret is Secure and HttpOnly; a local http run still works."""
    response = client.get("/", headers={"X-Forwarded-Proto": proto})

    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert ("Secure" in cookie.split("; ")) is secure
