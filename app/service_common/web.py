"""HTTP hygiene both services share: security headers, error pages without internals, and
the one reader of JSON request bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, make_response, request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

logger = logging.getLogger(__name__)

# Everything the page needs is served by the app itself: no CDN, no inline script or style.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # frame-ancestors covers current browsers; X-Frame-Options covers older ones.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(app: Flask) -> None:
    """Attach the security headers to every response, error pages included."""

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def route_exact_paths(app: Flask) -> None:
    """Never answer a path with doubled slashes (``//``) with a redirect.

    Werkzeug would redirect it to an absolute URL built from the request's Host header,
    letting any caller choose where the service's answer points; unmerged, such a path is
    routed as it is (or not found).
    """
    app.url_map.merge_slashes = False


def json_error(status: int, message: str, **extra: object) -> tuple[Response, int]:
    """A JSON error body: ``{"error": message, ...}``."""
    return jsonify({"error": message, **extra}), status


def register_error_handlers(
    app: Flask, render_html: Callable[[int, str], tuple[str, int]] | None = None
) -> None:
    """Answer every HTTP error with a short message and never with a stack trace.

    Browsers (Accept: text/html) get ``render_html``'s page when one is given; everything
    else gets JSON.
    """

    def wants_html() -> bool:
        if render_html is None:
            return False
        best = request.accept_mimetypes.best_match(["application/json", "text/html"])
        return best == "text/html" and not request.path.startswith("/api/")

    def respond(status: int, message: str) -> tuple[Response | str, int]:
        if wants_html() and render_html is not None:
            return render_html(status, message)
        return json_error(status, message)

    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = make_response(respond(status, f"{status} {error.name}: {error.description}"))
        # Keep what the error says beyond its body, such as Allow on a 405.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    def _unexpected(error: Exception) -> Response:
        # The traceback goes to the log (with the request's trace id), never to the client.
        logger.exception("unhandled error while serving %s %s", request.method, request.path)
        return _http_error(InternalServerError("the server failed; see its logs"))

    # One page for every error: an unexpected one is answered as the 500 it becomes.
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


class InvalidBody(ValueError):
    """A request body that is not the JSON it must be; the message says why."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def read_body() -> bytes:
    """The request body, held to the app's MAX_CONTENT_LENGTH however it was sent.

    Werkzeug refuses an announced Content-Length over the limit, but a streamed (chunked)
    body is only cut at the limit; one byte more on the wire means it was too large.
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if (
        limit is not None
        and request.content_length is None
        and len(data) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge(f"the body is over the limit of {limit} bytes")
    return data


def parse_json(body: bytes) -> Any:
    """Strict JSON from a request body, or InvalidBody saying what is wrong.

    Every way a body can fail is caught here, including nesting deeper than the parser can
    follow (RecursionError), so no hostile body reaches the service as a crash.
    """
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidBody("the body is not valid JSON: it is nested too deeply") from None
    except UnicodeDecodeError as error:
        raise InvalidBody(f"the body is not valid JSON: it is not UTF-8 ({error.reason})") from None
    except ValueError as error:
        raise InvalidBody(f"the body is not valid JSON: {error}") from None
