"""Cloud Tasks' REST API: HTTP/1.1 + JSON, as gcloud, curl and the official clients'
REST transports speak it, served from the same call path as gRPC (``calls.Api``).

The URL templates, verbs and body fields are not copied here: they are read from the
``google.api.http`` annotations that google-cloud-tasks carries in its REST transport
(``_get_http_options()`` of each method), so the routes are exactly the ones the official
client calls. Messages go through protobuf's JSON mapping (``google.protobuf.json_format``:
lowerCamelCase, durations as ``"15s"``, RFC 3339 times, base64 bytes, unset fields left
out). Errors are Google's JSON error body with the same status and message as over gRPC,
and the HTTP status Google pairs with that status (google-api-core's table).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2.services.cloud_tasks.transports import rest_base
from google.protobuf import json_format

from .calls import Api, Method
from .errors import ApiError

# Query parameters of Google's API front end that are not fields of the request.
SYSTEM_PARAMETERS = frozenset(
    {
        "alt", "$alt", "prettyPrint", "$prettyPrint", "fields", "$fields", "key",
        "access_token", "callback", "$callback", "quotaUser", "$.xgafv", "uploadType",
        "upload_protocol",
    }
)  # fmt: skip
# A request body holds at most one task (1 MiB, base64 in JSON) or a queue.
MAX_BODY_BYTES = 8 * 1024 * 1024
_VARIABLE = re.compile(r"\{([A-Za-z_.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Route:
    """One HTTP binding of a method: ``verb`` on ``pattern``, whose groups are the
    request fields in ``fields``; ``body`` is the field the JSON body fills ("*": all)."""

    verb: str
    pattern: re.Pattern[str]
    fields: tuple[str, ...]
    body: str | None
    method: Method | None  # None: a method of the API this emulator does not implement
    name: str


def http_options(method: str) -> list[dict[str, str]]:
    """The google.api.http bindings of ``method``, from the official client."""
    base = getattr(rest_base._BaseCloudTasksRestTransport, f"_Base{method}")
    options: list[dict[str, str]] = base._get_http_options()
    return options


def _segment(pattern: str) -> str:
    # A '*' is one path segment; ids never hold ':' (which starts a custom verb).
    parts = {"*": "[^/:]+", "**": "[^:]+"}
    return "/".join(parts.get(part, re.escape(part)) for part in pattern.split("/"))


def compile_template(uri: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A URL template such as ``/v2/{parent=projects/*/locations/*}/queues`` as a regex
    with one group per variable, and the field path of each variable."""
    pieces: list[str] = []
    fields: list[str] = []
    position = 0
    for variable in _VARIABLE.finditer(uri):
        pieces.append(re.escape(uri[position : variable.start()]))
        pieces.append(f"({_segment(variable.group(2) or '*')})")
        fields.append(variable.group(1))
        position = variable.end()
    pieces.append(re.escape(uri[position:]))
    return re.compile("^" + "".join(pieces) + "$"), tuple(fields)


def api_methods() -> list[str]:
    """Every method the client's REST transport has a binding for."""
    base = vars(rest_base._BaseCloudTasksRestTransport)
    return [name.removeprefix("_Base") for name in base if name.startswith("_Base")]


def routes(api: Api) -> list[Route]:
    """Every binding of every method of the API; those the emulator does not implement
    (batch, CMEK, locations, operations) answer UNIMPLEMENTED, as over gRPC."""
    found = []
    for name in api_methods():
        for option in http_options(name):
            pattern, fields = compile_template(option["uri"])
            verb, body = option["method"].upper(), option.get("body")
            found.append(Route(verb, pattern, fields, body, api.methods.get(name), name))
    return found


def _set_path(message: Any, path: str, value: str) -> None:
    *parents, last = path.split(".")
    for name in parents:
        message = getattr(message, name)
    setattr(message, last, value)


def _query_fields(query: Any) -> dict[str, Any]:
    """Query parameters as a JSON object: ``a.b=1`` becomes ``{"a": {"b": "1"}}``."""
    fields: dict[str, Any] = {}
    for key, value in query.items():
        if key in SYSTEM_PARAMETERS:
            continue
        *parents, last = key.split(".")
        node = fields
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"query parameter {key!r} conflicts with another")
        node[last] = value
    return fields


def parse_request(route: Route, match: re.Match[str], body: bytes, query: Any) -> Any:
    """The request message of one HTTP request; ParseError or ValueError if it is bad."""
    assert route.method is not None
    message = route.method.request()
    if route.body is not None and body.strip():
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the request body must be a JSON object")
        target = message if route.body == "*" else getattr(message, route.body)
        json_format.ParseDict(document, target)
    for path, value in zip(route.fields, match.groups(), strict=True):
        _set_path(message, path, value)
    fields = _query_fields(query)
    if fields:
        json_format.ParseDict(fields, message)
    return message


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status Google pairs with a gRPC status."""
    status = core_exceptions.exception_class_for_grpc_status(code).code
    return int(status) if status is not None else 500


def error_response(code: grpc.StatusCode, message: str) -> web.Response:
    """Google's JSON error body."""
    status = http_status(code)
    body = {"error": {"code": status, "message": message, "status": code.name}}
    return web.json_response(body, status=status)


class RestApi:
    """The aiohttp application serving ``api`` over HTTP/1.1 + JSON."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.by_verb: dict[str, list[Route]] = {}
        for route in routes(api):
            self.by_verb.setdefault(route.verb, []).append(route)

    def find(self, verb: str, path: str) -> tuple[Route, re.Match[str]] | None:
        for route in self.by_verb.get(verb, ()):
            match = route.pattern.match(path)
            if match is not None:
                return route, match
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.find(request.method, request.path)
        if found is None:
            return error_response(
                grpc.StatusCode.NOT_FOUND,
                f"No method of the Cloud Tasks API is {request.method} {request.path}.",
            )
        route, match = found
        if route.method is None:
            return error_response(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{route.name} is not implemented by this emulator.",
            )
        try:
            body = await request.read()
            message = parse_request(route, match, body, request.query)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The request body is larger than {MAX_BODY_BYTES} bytes.",
            )
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid JSON payload received. {error}"
            )
        try:
            response = await self.api.call_durable(
                route.method, message, request.headers.get("Authorization", "")
            )
        except ApiError as error:
            return error_response(error.code, error.message)
        integers = "enum-encoding=int" in request.query.get("$alt", "")
        document = json_format.MessageToDict(response, use_integers_for_enums=integers)
        return web.Response(
            body=json.dumps(document).encode(), content_type="application/json", charset="utf-8"
        )

    def app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_BODY_BYTES)
        application.router.add_route("*", "/{path:.*}", self.handle)
        return application
