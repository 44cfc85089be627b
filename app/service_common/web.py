"""HTTP hygiene both services share: security headers and error pages without internals."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, jsonify, make_response, request
from werkzeug.exceptions import HTTPException, InternalServerError

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

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = make_response(respond(status, f"{status} {error.name}: {error.description}"))
        # Keep what the error says beyond its body, such as Allow on a 405.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response | str, int]:
        # The traceback goes to the log (with the request's trace id), never to the client.
        logger.exception("unhandled error while serving %s %s", request.method, request.path)
        return respond(500, f"500 {InternalServerError.name}: the server failed; see its logs")
