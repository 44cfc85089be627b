"""Reading settings from environment variables, with errors that name the variable.

Each reader takes a ``contract.Variable``, so a variable is read under its one name (and
its earlier names, see ``service_common.contract``)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from service_common.contract import Variable

_QUEUE_PATH = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/queues/(?P<queue>[A-Za-z0-9-]+)$"
)


class ConfigError(ValueError):
    """A required environment variable is missing or holds a value the service cannot use."""


def required(environ: Mapping[str, str], variable: Variable, what: str) -> str:
    """Return the non-blank value of ``variable`` or fail with a message naming it."""
    value = variable.read(environ)
    if value is None:
        raise ConfigError(f"{variable.name} is not set: it must hold {what}")
    return value


def optional(environ: Mapping[str, str], variable: Variable) -> str | None:
    """Return the non-blank value of ``variable``, or None when it is unset or blank."""
    return variable.read(environ)


def bounded_int(
    environ: Mapping[str, str], variable: Variable, default: int, minimum: int, maximum: int
) -> int:
    """Read an integer setting within [minimum, maximum]; unset means ``default``."""
    name = variable.name
    raw = variable.read(environ)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an integer: it must be between {minimum} and {maximum}"
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"{name}={value} is out of range: it must be between {minimum} and {maximum}"
        )
    return value


def bounded_float(
    environ: Mapping[str, str], variable: Variable, default: float, minimum: float, maximum: float
) -> float:
    """Read a number setting within [minimum, maximum]; unset means ``default``."""
    name = variable.name
    raw = variable.read(environ)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number: it must be between {minimum} and {maximum}"
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"{name}={value} is out of range: it must be between {minimum} and {maximum}"
        )
    return value


def parse_queue_path(name: str, value: str) -> tuple[str, str, str]:
    """Split a full queue id into (project, location, queue) or fail naming the variable."""
    match = _QUEUE_PATH.match(value)
    if match is None:
        raise ConfigError(
            f"{name}={value!r} is not a full queue id: expected "
            "projects/PROJECT/locations/LOCATION/queues/QUEUE"
        )
    return match["project"], match["location"], match["queue"]


def http_url(name: str, value: str) -> str:
    """Check that ``value`` is an absolute http(s) URL without query or fragment."""
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
        raise ConfigError(
            f"{name}={value!r} is not a base URL: expected http(s)://host[:port][/path], "
            "without query or fragment"
        )
    # The URL doubles as the OIDC audience, which must match the worker's base URL exactly.
    return value.rstrip("/")


# Simulated work stops this long before the dispatch deadline, so the worker answers before
# Cloud Tasks gives up on the attempt (which would retry a task that in fact succeeded).
WORK_DEADLINE_MARGIN_SECONDS = 5


def max_work_seconds(dispatch_deadline_seconds: int) -> float:
    """The longest simulated work that still answers before the dispatch deadline."""
    return float(max(0, dispatch_deadline_seconds - WORK_DEADLINE_MARGIN_SECONDS))


LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def audience_urls(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of token audiences, each an https:// base URL (http:// only
    for a loopback host, as a local run serves plain HTTP on 127.0.0.1)."""
    audiences = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        url = http_url(name, item)
        if urlsplit(url).scheme != "https" and not _is_loopback(urlsplit(url).hostname or ""):
            raise ConfigError(
                f"{name} holds {item!r}: an audience must be an https:// URL (http:// only "
                "for a loopback host: localhost, 127.0.0.1, [::1])"
            )
        audiences.append(url)
    return tuple(audiences)
