"""task-app's routes: the page (pages blueprint) and the JSON API (api blueprint)."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from service_common.config import max_work_seconds
from service_common.web import InvalidBody, json_error, parse_json, read_body
from werkzeug.wrappers import Response as WerkzeugResponse

from task_app.cloud_tasks import CloudTasksGateway, CloudTasksUnavailable, CreateOutcome
from task_app.dead_letters import with_plans
from task_app.forms import ScheduleForm, form_values
from task_app.options import describe_errors, validate_options
from task_app.settings import TaskAppSettings

logger = logging.getLogger(__name__)

pages = Blueprint("pages", __name__)
api = Blueprint("api", __name__)


def _settings() -> TaskAppSettings:
    settings: TaskAppSettings = current_app.extensions["task_app.settings"]
    return settings


def _gateway() -> CloudTasksGateway:
    gateway: CloudTasksGateway = current_app.extensions["task_app.cloud_tasks"]
    return gateway


def _outcome_status(outcome: CreateOutcome) -> int:
    if outcome.ok:
        return 201
    return 409 if outcome.already_exists else 503


def _render_page(
    form: ScheduleForm,
    status: int = 200,
    field_errors: dict[str, str] | None = None,
    error: str | None = None,
    outcome: CreateOutcome | None = None,
) -> tuple[str, int]:
    # The queue's tasks are not fetched here: the page loads them from /api/tasks, so a slow
    # or hung Cloud Tasks never holds up the page (or the request thread that serves it).
    settings = _settings()
    html = render_template(
        "index.html",
        form=form,
        field_errors=field_errors or {},
        error=error,
        outcome=outcome,
        queue_id=settings.queue_id,
        max_work_seconds=max_work_seconds(settings.dispatch_deadline_seconds),
    )
    return html, status


@pages.get("/")
def index() -> tuple[str, int]:
    """The page: the form, and a table its script fills from /api/tasks. Never creates a task."""
    return _render_page(ScheduleForm())


@pages.post("/")
def schedule_from_form() -> WerkzeugResponse | tuple[str, int]:
    """The button: schedule, then redirect back to the page (post/redirect/get)."""
    form = ScheduleForm()
    # CSRFProtect already refused a POST without a valid token; this checks the rest.
    form.validate()
    values, field_errors = form_values(form)
    options, problems = validate_options(
        values, max_work_seconds(_settings().dispatch_deadline_seconds)
    )
    field_errors = {**problems, **field_errors}
    if field_errors or options is None:
        return _render_page(
            form,
            400,
            field_errors=field_errors,
            error="Nothing was scheduled: " + describe_errors(field_errors),
        )
    outcome = _gateway().create_tasks(options)
    if not outcome.ok:
        return _render_page(form, _outcome_status(outcome), error=outcome.error, outcome=outcome)
    ids = ", ".join(outcome.created)
    noun = "task" if len(outcome.created) == 1 else "tasks"
    flash(f"Scheduled {len(outcome.created)} {noun}: {ids}", "success")
    return redirect(url_for("pages.index"), code=303)


@api.post("/tasks")
def create_tasks() -> tuple[Response, int]:
    """JSON API: ``{"message", "delay_seconds", "count", "fail_attempts", "work_seconds",
    "task_id"}``, all optional -> 201 ``{"tasks": [ids]}``."""
    # Requiring a JSON content type is what keeps this CSRF-exempt endpoint out of reach of
    # cross-site forms: browsers cannot send it cross-origin without a CORS preflight.
    if not request.is_json:
        return json_error(415, "Content-Type must be application/json")
    try:
        data = parse_json(read_body())
    except InvalidBody as invalid:
        return json_error(400, f"{invalid}; send {{}} for the defaults")
    if not isinstance(data, dict):
        return json_error(400, 'the body must be a JSON object, e.g. {"count": 2}')
    options, errors = validate_options(
        data, max_work_seconds(_settings().dispatch_deadline_seconds)
    )
    if errors or options is None:
        return json_error(400, "invalid request: " + describe_errors(errors), fields=errors)
    outcome = _gateway().create_tasks(options)
    if outcome.ok:
        return jsonify({"tasks": outcome.created}), 201
    return json_error(
        _outcome_status(outcome),
        outcome.error or "the tasks could not be created",
        tasks=outcome.created,
        requested=outcome.requested,
        failed_task=outcome.failed_position,
        outcome_unknown=outcome.outcome_unknown,
    )


@api.get("/api/tasks")
def list_tasks() -> tuple[Response, int]:
    """The queue's current tasks, for the page's refresh."""
    try:
        tasks = _gateway().list_tasks()
    except CloudTasksUnavailable as unavailable:
        return json_error(503, str(unavailable))
    response = jsonify({"queue": _settings().queue_id, "tasks": with_plans(tasks)})
    response.headers["Cache-Control"] = "no-store"
    return response, 200
