"""OIDC verification of the Cloud Tasks caller, done by the worker itself.

Behind Cloud Run IAM this is defence in depth: IAM admits any account with run.invoker,
this pins the exact caller (the task-app service account) and the audience.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import transport
from google.auth.transport import requests as auth_requests
from google.oauth2 import id_token

logger = logging.getLogger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Google rotates its keys over days and says how long to cache them (Cache-Control max-age).
DEFAULT_CERTS_TTL_SECONDS = 300.0
MAX_CERTS_TTL_SECONDS = 24 * 3600.0
CERTS_FETCH_TIMEOUT_SECONDS = 5.0
CLOCK_SKEW_SECONDS = 10


class CachingRequest(transport.Request):
    """google-auth's requests transport, keeping GET answers for their max-age.

    Without it every task would fetch the certificates again.
    """

    def __init__(self, session: requests.Session | None = None) -> None:
        self._inner = auth_requests.Request(session=session or requests.Session())
        self._cache: dict[str, tuple[float, transport.Response]] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        if method != "GET" or body is not None:
            passed: transport.Response = self._inner(
                url, method=method, body=body, headers=headers, timeout=timeout
            )
            return passed
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        response: transport.Response = self._inner(
            url, method="GET", headers=headers, timeout=timeout or CERTS_FETCH_TIMEOUT_SECONDS
        )
        if response.status == 200:
            with self._lock:
                self._cache[url] = (now + _max_age(response.headers), response)
        return response


def _max_age(headers: Any) -> float:
    match = re.search(r"max-age=(\d+)", str(headers.get("Cache-Control", "")))
    if match is None:
        return DEFAULT_CERTS_TTL_SECONDS
    return min(float(match.group(1)), MAX_CERTS_TTL_SECONDS)


class AuthFailure(Exception):
    """Why a request is refused: 401 (no or bad token), 403 (wrong caller), 503 (no keys)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class TokenVerifier:
    """Checks ``Authorization: Bearer <Google ID token>`` against the expected caller."""

    def __init__(self, caller_email: str, certs_url: str) -> None:
        self._caller_email = caller_email
        self._certs_url = certs_url
        self._request = CachingRequest()

    def verify(self, authorization: str | None, audience: str) -> Mapping[str, Any]:
        """The token's claims, or AuthFailure saying why not."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthFailure(401, "missing bearer token")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            claims: Mapping[str, Any] = id_token.verify_token(
                token,
                self._request,
                audience=audience,
                certs_url=self._certs_url,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        except auth_exceptions.TransportError as error:
            # Our problem, not the caller's: answer 5xx so Cloud Tasks tries again later.
            logger.error("cannot fetch the token certificates from %s: %s", self._certs_url, error)
            raise AuthFailure(503, "token certificates unavailable") from error
        except (ValueError, auth_exceptions.GoogleAuthError) as error:
            raise AuthFailure(401, f"invalid token: {error}") from error
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise AuthFailure(401, f"invalid token: issuer {claims.get('iss')!r} is not Google")
        if claims.get("email") != self._caller_email:
            raise AuthFailure(403, f"caller {claims.get('email')!r} is not allowed")
        if claims.get("email_verified") is not True:
            raise AuthFailure(403, f"caller {claims.get('email')!r} has no verified email")
        return claims
