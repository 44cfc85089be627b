"""The dead letters on the page and in the JSON API: listed, replayed, discarded; and each
live task's retry plan.

Dead letters are tasks of the paused queue DEAD_LETTER_QUEUE, parked there by the worker
(``service_common.dead_letter`` says what each holds). Calls go to the Cloud Tasks REST API
with google-auth's default credentials (Google's endpoint, or CLOUD_TASKS_API_ENDPOINT).

- ``GET /api/dead-letters``: the dead letters (first page, up to 100).
- ``POST /api/dead-letters/<id>/replay``: a new task on the live queue with the dead
  letter's body, under a name derived from the dead letter (a second replay of the same
  dead letter is ALREADY_EXISTS, so one task), then the dead letter deleted.
- ``DELETE /api/dead-letters/<id>``: the dead letter deleted.

404 for an id that is not a dead letter, 503 naming Cloud Tasks' status when it refuses or
is unreachable. A replay whose delete fails answers 503 and says so: the new task exists,
and replaying again only finishes the delete. The page's buttons post forms with the page's
CSRF token; the API's POST, like POST /tasks, takes JSON only (a cross-site form cannot
send it), and DELETE cannot be sent cross-site without a CORS preflight.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFProtect
from service_common import contract
from service_common.dead_letter import (
    EARLIER_ATTEMPTS_HEADER,
    TASK_ID,
    DeadLetterConfig,
    DeadLetterRecord,
    earlier_attempts,
    first_schedule_header,
    iso,
    parse_iso,
    replay_id,
    rest_error,
)
from service_common.web import json_error
from werkzeug.wrappers import Response as WerkzeugResponse

from task_app.settings import TaskAppSettings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

logger = logging.getLogger(__name__)

GOOGLE_API_ENDPOINT = "https://cloudtasks.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
LIST_PAGE_SIZE = 100
# What the page shows of a dead letter's body; the API gives it whole.
SHOWN_BODY = 300
# Attempts a live task's timeline draws; a longer plan ends its drawing there.
TIMELINE_ATTEMPTS = 60

api = Blueprint("dead_letters_api", __name__)
pages = Blueprint("dead_letters_pages", __name__)


class CloudTasksError(Exception):
    """Cloud Tasks refused the call or could not be reached."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotADeadLetter(Exception):
    """No dead letter has this id."""


class ReplayNotFinished(Exception):
    """The replay's task exists, the dead letter could not be deleted."""

    def __init__(self, replayed_as: str, error: CloudTasksError) -> None:
        super().__init__(f"replayed as {replayed_as}, not deleted: {error}")
        self.replayed_as = replayed_as
        self.error = error


@dataclass(frozen=True)
class ReplayOutcome:
    replayed_as: str
    already: bool
    """The replay's task had been created by an earlier replay of this dead letter."""


class DeadLetterStore:
    """The dead-letter queue through the REST API; one per process."""

    def __init__(
        self,
        settings: DeadLetterConfig,
        app_settings: TaskAppSettings,
        session: Any = None,
        credentials: Credentials | None = None,
    ) -> None:
        """``session`` None: an AuthorizedSession with ``credentials`` (None: google-auth's
        default credentials), made at the first call. The endpoint and the timeout are the
        task-app's own (CLOUD_TASKS_API_ENDPOINT, CLOUD_TASKS_TIMEOUT_SECONDS)."""
        self.settings = settings
        self.app_settings = app_settings
        self.api_endpoint = (app_settings.api_endpoint or GOOGLE_API_ENDPOINT).rstrip("/")
        self.timeout_seconds = app_settings.api_timeout_seconds
        self._session = session
        self._credentials = credentials
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.queue is not None

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                # Imported at the first call: a service starts without paying for them.
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials = self._credentials
                if credentials is None:
                    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
                self._session = AuthorizedSession(credentials)
            return self._session

    @contextlib.contextmanager
    def _sending(self, what: str) -> Iterator[None]:
        """A failure to send (no credentials, no connection) as UNAVAILABLE."""
        try:
            yield
        except Exception as error:  # the call was not made, or its answer never came
            logger.error("Cloud Tasks %s could not be sent: %r", what, error)
            raise CloudTasksError("UNAVAILABLE", f"{type(error).__name__}: {error}") from error

    # ---- the calls (each a Cloud Tasks method the stack grants on the dead-letter queue) --

    def list(self) -> tuple[list[dict[str, Any]], bool]:
        """The dead letters (first page) and whether there are more."""
        url = f"{self.api_endpoint}/v2/{self.settings.queue}/tasks"
        with self._sending("ListTasks"):
            response = self._get_session().get(
                url,
                params={"responseView": "FULL", "pageSize": LIST_PAGE_SIZE},
                timeout=self.timeout_seconds,
            )
        answer = _answer(response)
        tasks = answer.get("tasks", [])
        return [describe(task) for task in tasks], bool(answer.get("nextPageToken"))

    def get(self, dead_letter: str) -> dict[str, Any]:
        """One dead letter with its body (FULL view); NotADeadLetter when it is not there."""
        url = f"{self.api_endpoint}/v2/{self.settings.queue}/tasks/{dead_letter}"
        with self._sending("GetTask"):
            response = self._get_session().get(
                url, params={"responseView": "FULL"}, timeout=self.timeout_seconds
            )
        try:
            return _answer(response)
        except CloudTasksError as error:
            if error.status == "NOT_FOUND":
                raise NotADeadLetter(dead_letter) from None
            raise

    def delete(self, dead_letter: str) -> None:
        """Delete a dead letter; NotADeadLetter when it is not there."""
        url = f"{self.api_endpoint}/v2/{self.settings.queue}/tasks/{dead_letter}"
        with self._sending("DeleteTask"):
            response = self._get_session().delete(url, timeout=self.timeout_seconds)
        try:
            _answer(response)
        except CloudTasksError as error:
            if error.status == "NOT_FOUND":
                raise NotADeadLetter(dead_letter) from None
            raise

    def replay(self, dead_letter: str) -> ReplayOutcome:
        """A new task on the live queue with the dead letter's body, then the dead letter
        deleted. A failed delete raises ReplayNotFinished."""
        task = self.get(dead_letter)
        new_id = replay_id(str(task["name"]), str(task.get("createTime", "")))
        url = f"{self.api_endpoint}/v2/{self.app_settings.queue}/tasks"
        already = False
        with self._sending("CreateTask"):
            response = self._get_session().post(
                url,
                json={"task": self._replayed(task, new_id)},
                timeout=self.timeout_seconds,
            )
        try:
            _answer(response)
        except CloudTasksError as error:
            if error.status != "ALREADY_EXISTS":
                raise
            already = True  # an earlier replay of this dead letter created it
        try:
            self.delete(dead_letter)
        except NotADeadLetter:
            pass  # a replay at the same moment removed it
        except CloudTasksError as error:
            raise ReplayNotFinished(new_id, error) from error
        logger.info(
            "dead letter %s replayed as task %s%s",
            dead_letter,
            new_id,
            " (created by an earlier replay)" if already else "",
        )
        return ReplayOutcome(new_id, already)

    def _replayed(self, dead: Mapping[str, Any], new_id: str) -> dict[str, Any]:
        """The live task a replay creates: the task-app's own target, token and deadline,
        the dead letter's body and Content-Type."""
        app = self.app_settings
        original = dead.get("httpRequest", {})
        kept = original.get("headers", {})
        headers = {
            "Content-Type": _header(kept, "Content-Type") or "application/json",
            **first_schedule_header(time.time()),
        }
        record = DeadLetterRecord.from_headers(kept)
        earlier = earlier_attempts(kept) + (record.attempts if record else 0)
        if earlier:
            headers[EARLIER_ATTEMPTS_HEADER] = str(earlier)
        http: dict[str, Any] = {
            "url": app.worker_tasks_url,
            "httpMethod": "POST",
            "headers": headers,
            "body": original.get("body", ""),
        }
        if app.oidc_service_account:
            http["oidcToken"] = {
                "serviceAccountEmail": app.oidc_service_account,
                # The audience every task of the task-app's carries (see cloud_tasks).
                "audience": app.worker_url,
            }
        return {
            "name": f"{app.queue}/tasks/{new_id}",
            "httpRequest": http,
            "dispatchDeadline": f"{app.dispatch_deadline_seconds}s",
        }

    # ---- the retry plan of live tasks ----------------------------------------------------

    def plan_of(self, task: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
        """A live task's retry plan as the page draws it (None without the retry config)."""
        retry = self.settings.retry
        if retry is None:
            return None
        now = time.time() if now is None else now
        made = int(str(task.get("dispatch_count") or 0))
        next_at = _seconds(task.get("schedule_time")) or now
        first = _seconds(task.get("first_attempt_time"))
        if first is None and made:
            first = next_at - retry.retried_at_least(made + 1)
        plan = retry.plan(
            limit=TIMELINE_ATTEMPTS, attempts_made=made, next_at=next_at, first_at=first
        )
        end = plan.attempts[-1].at
        span = max(end - next_at, 1e-9)
        return {
            "attempt": made + 1,
            "of": plan.given_up_after,
            "next_at": iso(next_at),
            "given_up_at": iso(end) if plan.given_up_after is not None else None,
            "given_up_after": plan.given_up_after,
            "truncated": plan.truncated,
            # Each remaining attempt's place on the timeline, 0 (next) to 1 (last drawn).
            "timeline": [
                {"number": a.number, "at": iso(a.at), "x": round((a.at - next_at) / span, 4)}
                for a in plan.attempts
            ],
        }


def with_plans(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live tasks as the API lists them, each with its retry plan."""
    plan_of = store().plan_of
    now = time.time()
    return [{**task, "plan": plan_of(task, now)} for task in tasks]


def describe(task: Mapping[str, Any]) -> dict[str, Any]:
    """What the page and the API say of one dead letter."""
    name = str(task.get("name", ""))
    http = task.get("httpRequest", {})
    record = DeadLetterRecord.from_headers(http.get("headers", {}))
    try:
        body = base64.b64decode(http.get("body", "")).decode("utf-8", "replace")
    except ValueError:
        body = ""
    message = None
    try:
        payload = json.loads(body) if body else None
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            message = payload["message"]
    except ValueError:
        pass
    return {
        "id": name.rsplit("/", 1)[-1],
        "name": name,
        "parked_at": task.get("createTime"),
        "task": record.task if record else None,
        "attempts": record.attempts if record else None,
        "first_attempt": record.first_attempt if record else None,
        "first_attempt_basis": record.first_attempt_basis if record else None,
        "last_attempt": record.last_attempt if record else None,
        "last_status": record.status if record else None,
        "last_error": record.error if record else None,
        "reason": record.reason if record else None,
        "message": message,
        "body": body,
        "body_shown": body[:SHOWN_BODY],
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def _seconds(value: Any) -> float | None:
    if not value:
        return None
    try:
        return parse_iso(str(value))
    except ValueError:
        return None


def _answer(response: Any) -> dict[str, Any]:
    """The JSON answer of a call; CloudTasksError with the API's status otherwise."""
    if 200 <= response.status_code < 300:
        answer: dict[str, Any] = response.json() if response.content else {}
        return answer
    status, message = rest_error(response)
    raise CloudTasksError(status, message)


# ---- Flask --------------------------------------------------------------------------------


def store() -> DeadLetterStore:
    found: DeadLetterStore = current_app.extensions["task_app.dead_letters"]
    return found


def init_app(
    app: Flask,
    csrf: CSRFProtect,
    credentials: Credentials | None = None,
    dead_letters: DeadLetterStore | None = None,
) -> None:
    """Attach the dead letters (from the task-app's settings by default) and their routes."""
    if dead_letters is None:
        settings: TaskAppSettings = app.extensions["task_app.settings"]
        dead_letters = DeadLetterStore(settings.dead_letters, settings, credentials=credentials)
    app.extensions["task_app.dead_letters"] = dead_letters
    csrf.exempt(api)  # JSON only, see the module docstring
    app.register_blueprint(api)
    app.register_blueprint(pages)

    @app.context_processor
    def _enabled() -> dict[str, Any]:
        return {"dead_letters_enabled": store().enabled}

    if not dead_letters.enabled:
        logger.warning(
            "%s is not set: the page lists no dead letters", contract.DEAD_LETTER_QUEUE.name
        )


def _unavailable(error: CloudTasksError, what: str) -> str:
    return (
        f"Cloud Tasks refused or could not be reached ({error.status}: {error.message}): "
        f"cannot {what} the dead letters"
    )


def _check_id(dead_letter: str) -> tuple[Response, int] | None:
    if not TASK_ID.match(dead_letter):
        return json_error(
            400, f"{dead_letter[:100]!r} is not a task id: 1-500 letters, digits, - or _"
        )
    return None


def _not_configured() -> tuple[Response, int]:
    return json_error(
        503, f"{contract.DEAD_LETTER_QUEUE.name} is not set: there are no dead letters"
    )


@api.get("/api/dead-letters")
def list_dead_letters() -> tuple[Response, int]:
    dead_letters = store()
    if not dead_letters.enabled:
        return _not_configured()
    try:
        items, more = dead_letters.list()
    except CloudTasksError as error:
        return json_error(503, _unavailable(error, "list"), cloud_tasks_status=error.status)
    response = jsonify({"queue": dead_letters.settings.queue, "dead_letters": items, "more": more})
    response.headers["Cache-Control"] = "no-store"
    return response, 200


@api.post("/api/dead-letters/<dead_letter>/replay")
def replay_dead_letter(dead_letter: str) -> tuple[Response, int]:
    # As POST /tasks: JSON only, which a cross-site form cannot send.
    if not request.is_json:
        return json_error(415, "Content-Type must be application/json (send {})")
    return _replay(dead_letter)


def _store_for(dead_letter: str) -> tuple[DeadLetterStore, tuple[Response, int] | None]:
    """The dead letters' store, or the answer refusing the call: a malformed id (400), or
    no dead-letter queue configured."""
    if (bad := _check_id(dead_letter)) is not None:
        return store(), bad
    dead_letters = store()
    if not dead_letters.enabled:
        return dead_letters, _not_configured()
    return dead_letters, None


def _replay(dead_letter: str) -> tuple[Response, int]:
    dead_letters, refused = _store_for(dead_letter)
    if refused is not None:
        return refused
    try:
        outcome = dead_letters.replay(dead_letter)
    except NotADeadLetter:
        return json_error(404, f"no dead letter {dead_letter!r}")
    except ReplayNotFinished as unfinished:
        error = unfinished.error
        return json_error(
            503,
            f"replayed as task {unfinished.replayed_as!r}, but Cloud Tasks did not remove the "
            f"dead letter ({error.status}: {error.message}); Replay again to remove it (it "
            "creates no second task)",
            cloud_tasks_status=error.status,
            replayed_as=unfinished.replayed_as,
        )
    except CloudTasksError as error:
        return json_error(
            503,
            f"Cloud Tasks refused or could not be reached ({error.status}: {error.message}): "
            "nothing was replayed",
            cloud_tasks_status=error.status,
        )
    return jsonify({"replayed_as": outcome.replayed_as, "already": outcome.already}), 201


@api.delete("/api/dead-letters/<dead_letter>")
def discard_dead_letter(dead_letter: str) -> tuple[Response, int]:
    return _discard(dead_letter)


def _discard(dead_letter: str) -> tuple[Response, int]:
    dead_letters, refused = _store_for(dead_letter)
    if refused is not None:
        return refused
    try:
        dead_letters.delete(dead_letter)
    except NotADeadLetter:
        return json_error(404, f"no dead letter {dead_letter!r}")
    except CloudTasksError as error:
        return json_error(
            503,
            f"Cloud Tasks refused or could not be reached ({error.status}: {error.message}): "
            "the dead letter was not discarded",
            cloud_tasks_status=error.status,
        )
    logger.info("dead letter %s discarded", dead_letter)
    return jsonify({"discarded": dead_letter}), 200


# The page's buttons: forms with the page's CSRF token, then back to the page.


def _back(answer: tuple[Response, int], done: Callable[[dict[str, Any]], str]) -> WerkzeugResponse:
    response, status = answer
    body = response.get_json() or {}
    if status < 300:
        flash(done(body), "success")
    else:
        flash(str(body.get("error", f"failed ({status})")), "error")
    return redirect(url_for("pages.index"), code=303)


@pages.post("/dead-letters/<dead_letter>/replay")
def replay_from_page(dead_letter: str) -> WerkzeugResponse:
    return _back(
        _replay(dead_letter), lambda body: f"Replayed {dead_letter} as task {body['replayed_as']}"
    )


@pages.post("/dead-letters/<dead_letter>/discard")
def discard_from_page(dead_letter: str) -> WerkzeugResponse:
    return _back(_discard(dead_letter), lambda _: f"Discarded dead letter {dead_letter}")
