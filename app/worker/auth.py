"""OIDC verification of the Cloud Tasks caller, done by the worker itself.

Behind Cloud Run IAM this is defence in depth: IAM admits any account with run.invoker,
this pins the exact caller (the task-app service account) and the audiences the stack
configured, never one taken from the request.

What a refused caller is told stays generic ("invalid token"); the reason, which may name
the expected audience or the known key ids, goes to the worker's log only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.auth import exceptions as auth_exceptions

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Google rotates its keys over days and says how long to cache them (Cache-Control max-age).
DEFAULT_CERTS_TTL_SECONDS = 300.0
MAX_CERTS_TTL_SECONDS = 24 * 3600.0
CERTS_FETCH_TIMEOUT_SECONDS = 5.0
# A token whose key id is not among the cached keys makes the worker fetch the keys again
# (the signer may have rotated or restarted with a new key), at most this often, so that
# tokens with made-up key ids cannot turn each request into a fetch.
UNKNOWN_KEY_REFETCH_SECONDS = 30.0
CLOCK_SKEW_SECONDS = 10
# Google's ID tokens are valid for one hour
# (https://cloud.google.com/docs/authentication/token-types#id-lifetime); a longer-lived
# token was not minted by Google for this, whoever signed it.
MAX_TOKEN_LIFETIME_SECONDS = 3600

INVALID_TOKEN = "invalid token"  # noqa: S105 (a message, not a secret)
CALLER_NOT_ALLOWED = "caller not allowed"


class AuthFailure(Exception):
    """Why a request is refused: 401 (no or bad token), 403 (wrong caller), 503 (no keys).

    ``reason`` is what the caller is told; ``detail`` is logged only.
    """

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail or reason


class KeysUnavailable(Exception):
    """The signing keys could not be fetched, or the answer was not a key set."""


def _max_age(headers: Mapping[str, str]) -> float:
    match = re.search(r"max-age=(\d+)", str(headers.get("Cache-Control", "")))
    if match is None:
        return DEFAULT_CERTS_TTL_SECONDS
    return min(float(match.group(1)), MAX_CERTS_TTL_SECONDS)


class KeySet:
    """The signer's PEM certificates by key id, from ``url`` (Google's v1 certs format).

    Kept for the answer's max-age, so a task does not cost a fetch; fetched again early,
    rate-limited, when a token names a key id the set does not hold.
    """

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        # None until the first fetch: requests loads then, not with the worker.
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._expires = float("-inf")
        self._last_unknown_refetch = float("-inf")
        self.fetches = 0

    def keys_for(self, key_id: str) -> Mapping[str, str]:
        """The key set, fresh, and fetched again if it lacks ``key_id`` (rate-limited)."""
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._fetch(now)
            elif (
                key_id not in self._keys
                and now - self._last_unknown_refetch >= UNKNOWN_KEY_REFETCH_SECONDS
            ):
                self._last_unknown_refetch = now
                logger.info("token key id %r is not among the cached keys: fetching them", key_id)
                self._fetch(now)
            return dict(self._keys)

    def _fetch(self, now: float) -> None:
        import requests

        self.fetches += 1
        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.get(self._url, timeout=CERTS_FETCH_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise KeysUnavailable(f"cannot fetch the keys from {self._url}: {error}") from None
        if response.status_code != 200:
            raise KeysUnavailable(f"{self._url} answered {response.status_code}")
        try:
            keys = response.json()
        except ValueError:
            keys = None
        if (
            not isinstance(keys, dict)
            or not keys
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())
        ):
            raise KeysUnavailable(
                f"{self._url} answered 200 with something that is not a key set "
                '({"key id": "PEM certificate", ...})'
            )
        self._keys = keys
        self._expires = now + _max_age(response.headers)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthFailure(401, INVALID_TOKEN, f"claim {name} is not a number: {value!r}")
    return float(value)


class TokenVerifier:
    """Checks ``Authorization: Bearer <Google ID token>`` against the expected caller and
    the configured audiences."""

    def __init__(
        self,
        caller_email: str,
        certs_url: str,
        audiences: Sequence[str],
        keys: KeySet | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audiences:
            raise ValueError("a token verifier needs at least one accepted audience")
        self._caller_email = caller_email
        self._certs_url = certs_url
        self._audiences = list(audiences)
        self.keys = keys or KeySet(certs_url)
        self._clock = clock

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims, or AuthFailure saying why not."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthFailure(401, "missing bearer token")
        token = authorization.removeprefix("Bearer ").strip()
        # google-auth's JWT code (and the crypto under it) loads with the first token, not
        # with the worker, whose start-up it would otherwise lengthen by half.
        from google.auth import jwt as google_jwt

        try:
            header = google_jwt.decode_header(token)
        except (ValueError, TypeError, auth_exceptions.GoogleAuthError) as error:
            raise AuthFailure(401, INVALID_TOKEN, f"unreadable token: {error}") from None
        key_id = header.get("kid")
        if not isinstance(key_id, str):
            raise AuthFailure(401, INVALID_TOKEN, "the token names no key id")
        try:
            keys = self.keys.keys_for(key_id)
        except KeysUnavailable as error:
            # Our problem, not the caller's: answer 5xx so Cloud Tasks tries again later.
            raise AuthFailure(503, "token certificates unavailable", str(error)) from None
        try:
            claims: Mapping[str, Any] = google_jwt.decode(
                token,
                certs=keys,
                audience=self._audiences,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        except (ValueError, TypeError, auth_exceptions.GoogleAuthError) as error:
            raise AuthFailure(401, INVALID_TOKEN, str(error)) from None
        self._check_times(claims)
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise AuthFailure(401, INVALID_TOKEN, f"issuer {claims.get('iss')!r} is not Google")
        if claims.get("email") != self._caller_email:
            raise AuthFailure(403, CALLER_NOT_ALLOWED, f"caller {claims.get('email')!r}")
        if claims.get("email_verified") is not True:
            raise AuthFailure(
                403, CALLER_NOT_ALLOWED, f"caller {claims.get('email')!r} has no verified email"
            )
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        """No token lives longer than Google's do, and none is used before its nbf."""
        issued, expires, not_before = (_number(claims, n) for n in ("iat", "exp", "nbf"))
        if issued is None or expires is None:
            raise AuthFailure(401, INVALID_TOKEN, "the token lacks iat or exp")
        lifetime = expires - issued
        if lifetime > MAX_TOKEN_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS:
            raise AuthFailure(
                401,
                INVALID_TOKEN,
                f"token lifetime {lifetime:g} s is over {MAX_TOKEN_LIFETIME_SECONDS} s",
            )
        if not_before is not None and self._clock() + CLOCK_SKEW_SECONDS < not_before:
            raise AuthFailure(401, INVALID_TOKEN, f"token not valid before {not_before:g}")
