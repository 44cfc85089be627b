"""Property-based fuzz of both services' request bodies and headers, through Flask's test
client: whatever arrives, the answer is one the status discipline allows, with a JSON
message, and never a 500 from a crash.

Bounded: a fixed number of examples each, derandomized (the same examples every run, so a
failure reproduces), no example database written to the tree.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from fake_cloud_tasks import FakeCloudTasks
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services_support import OidcKeys

FUZZ = settings(
    max_examples=100,
    deadline=2000,
    derandomize=True,
    database=None,
    # The app is built once per test, not per example: its state does not leak between
    # examples (each call is independent, Cloud Tasks is a fake emptied per test).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=15,
)


def field(small: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly near the valid range, sometimes anything at all."""
    return small | json_values


task_options = st.fixed_dictionaries(
    {},
    optional={
        "message": field(st.text(max_size=1100)),
        "delay_seconds": field(st.floats(min_value=-10, max_value=3_000_000)),
        # Few tasks per example: each one is a CreateTask call.
        "count": field(st.integers(min_value=-2, max_value=4)),
        "fail_attempts": field(st.integers(min_value=-2, max_value=120)),
        "work_seconds": field(st.floats(min_value=-1, max_value=2000)),
        "task_id": field(st.text(max_size=600)),
    },
)
worker_payloads = st.fixed_dictionaries(
    {},
    optional={
        "message": field(st.text(max_size=2000)),
        "work_seconds": field(st.floats(min_value=-1, max_value=100)),
        "fail_attempts": field(st.integers(min_value=-2, max_value=5)),
    },
)

# Header values as a WSGI server hands them over: latin-1 text without line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=200,
)
interesting_headers = st.sampled_from(
    [
        "Content-Type",
        "Accept",
        "Authorization",
        "Cookie",
        "X-Forwarded-Proto",
        "X-Forwarded-For",
        "X-Cloud-Trace-Context",
        "Traceparent",
        "X-CloudTasks-TaskName",
        "X-CloudTasks-TaskRetryCount",
        "X-CloudTasks-TaskExecutionCount",
        "X-CloudTasks-TaskETA",
        "X-CloudTasks-QueueName",
        "X-CloudTasks-TaskPreviousResponse",
        "X-CloudTasks-TaskRetryReason",
    ]
)
headers = st.dictionaries(
    interesting_headers | st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"), header_text, max_size=6
)
bodies = st.binary(max_size=3000) | json_values.map(lambda value: json.dumps(value).encode())


def assert_json_answer(response: Any, allowed: set[int]) -> dict[str, Any]:
    assert response.status_code in allowed, (response.status_code, response.get_data()[:300])
    body = response.get_json(silent=True)
    assert isinstance(body, dict), response.get_data()[:300]
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str)
        assert body["error"]
    return body


# ---- task-app ------------------------------------------------------------------------------


@FUZZ
@given(options=task_options)
def test_task_app_api_judges_any_json_object(
    client: FlaskClient, fake_tasks: FakeCloudTasks, options: dict[str, Any]
) -> None:
    """Any object is either scheduled (201) or refused with a message naming the field
    (400); a task_id used twice is 409."""
    response = client.post("/tasks", json=options)
    body = assert_json_answer(response, {201, 400, 409})
    if response.status_code == 400:
        assert body["error"].startswith("invalid request")


@FUZZ
@given(body=bodies, extra=headers)
def test_task_app_api_answers_any_body_and_headers(
    client: FlaskClient, fake_tasks: FakeCloudTasks, body: bytes, extra: dict[str, str]
) -> None:
    """Raw bytes with any headers: a JSON answer within the discipline, never a crash."""
    response = client.post(
        "/tasks", data=body, headers={"Content-Type": "application/json", **extra}
    )
    assert_json_answer(response, {201, 400, 409, 413, 415})


@FUZZ
@given(extra=headers, path=st.sampled_from(["/", "/api/tasks", "/healthz", "/nope"]))
def test_task_app_pages_answer_any_headers(
    client: FlaskClient, fake_tasks: FakeCloudTasks, extra: dict[str, str], path: str
) -> None:
    """The page, the list and the probe under any headers: never a 5xx from a crash."""
    response = client.get(path, headers=extra)
    assert response.status_code in {200, 404}, (path, response.status_code)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@FUZZ
@given(
    form=st.dictionaries(
        st.sampled_from(
            [
                "message",
                "delay_seconds",
                "count",
                "fail_attempts",
                "work_seconds",
                "csrf_token",
                "other",
            ]
        ),
        header_text,
        max_size=7,
    )
)
def test_task_app_form_answers_any_fields(
    client: FlaskClient, fake_tasks: FakeCloudTasks, form: dict[str, str]
) -> None:
    """The form without a valid CSRF token is refused (400), whatever it carries."""
    response = client.post("/", data=form)
    assert response.status_code == 400


# ---- worker --------------------------------------------------------------------------------


@pytest.fixture
def quick_worker(worker_client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """The worker whose simulated work takes no time, so examples stay fast."""
    from worker import shutdown

    monkeypatch.setattr(shutdown, "wait_for_shutdown", lambda seconds: False)
    return worker_client


@FUZZ
@given(payload=worker_payloads, extra=headers)
def test_worker_answers_any_payload_within_the_discipline(
    quick_worker: FlaskClient, payload: dict[str, Any], extra: dict[str, str]
) -> None:
    """Done or acknowledged (200), or the simulated failure (500) a fail_attempts above
    the retry count asks for; nothing else."""
    response = quick_worker.post("/tasks", json=payload, headers=extra)
    body = assert_json_answer(response, {200, 500})
    if response.status_code == 500:
        assert body["error"].startswith("simulated failure")
    else:
        assert body["acknowledged"] is True


@FUZZ
@given(body=bodies, extra=headers)
def test_worker_acknowledges_any_body(
    quick_worker: FlaskClient, body: bytes, extra: dict[str, str]
) -> None:
    """Bytes that are not a valid payload are acknowledged (200) so Cloud Tasks stops;
    only the simulated failure is a 500."""
    response = quick_worker.post("/tasks", data=body, headers=extra)
    body_json = assert_json_answer(response, {200, 500})
    if response.status_code == 500:
        assert body_json["error"].startswith("simulated failure")


def _segment(value: Any) -> str:
    raw = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


forged_tokens = (
    header_text
    | st.tuples(json_values, json_values, st.binary(max_size=300)).map(
        lambda parts: ".".join(_segment(part) for part in parts)
    )
    | st.tuples(
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["RS256", "none", "HS256", "ES256"]), "kid": json_values}
        ),
        st.fixed_dictionaries(
            {},
            optional={
                key: json_values
                for key in ("iss", "aud", "email", "email_verified", "iat", "exp", "nbf")
            },
        ),
        st.binary(max_size=300),
    ).map(lambda parts: ".".join(_segment(part) for part in parts))
)


@FUZZ
@given(token=forged_tokens, scheme=st.sampled_from(["Bearer ", "bearer ", "", "Basic "]))
def test_secured_worker_refuses_any_forged_token(
    secured_worker_client: FlaskClient, oidc_keys: OidcKeys, token: str, scheme: str
) -> None:
    """No forged or garbled token gets past the check, and none crashes it: 401 with the
    generic message."""
    response = secured_worker_client.post(
        "/tasks", json={"message": "m"}, headers={"Authorization": scheme + token}
    )
    body = assert_json_answer(response, {401})
    assert body["error"] in {"invalid token", "missing bearer token"}


@FUZZ
@given(
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "email", "email_verified", "iat", "exp", "nbf", "sub"]),
        json_values,
        max_size=8,
    )
)
def test_secured_worker_judges_any_claims_signed_with_the_right_key(
    secured_worker_client: FlaskClient,
    oidc_keys: OidcKeys,
    claims: dict[str, Any],
) -> None:
    """Even a token the right key signed is refused (401/403) unless every claim holds;
    claims of any type are judged, never a crash."""
    # Signed as they are, without the checks a JWT library makes when it encodes.
    token = jwt.PyJWS().encode(
        json.dumps(claims).encode(),
        oidc_keys.private_key,
        algorithm="RS256",
        headers={"kid": oidc_keys.kid},
    )
    response = secured_worker_client.post(
        "/tasks", json={"message": "m"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_json_answer(response, {401, 403})
