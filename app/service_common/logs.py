"""Structured JSON logs for Cloud Logging, with the request's trace attached.

Cloud Run hands every line a container writes to stdout to Cloud Logging, which reads a
line that is one JSON object as a structured entry
(https://cloud.google.com/logging/docs/structured-logging): ``severity``, ``message``,
``time``, ``httpRequest``, ``logging.googleapis.com/labels``, ``logging.googleapis.com/trace``
(a link to the request's trace only when it reads ``projects/PROJECT/traces/TRACE_ID``),
``logging.googleapis.com/spanId``, ``logging.googleapis.com/trace_sampled`` and
``logging.googleapis.com/sourceLocation``; every other field stays in the entry's
``jsonPayload``. The line format is that of google-cloud-logging's StructuredLogHandler,
written here with the standard library: importing that package costs a service about a
second of its cold start.

Inside a Flask request the trace comes from the W3C ``traceparent`` header or, failing
that, from Google's ``X-Cloud-Trace-Context`` (https://cloud.google.com/trace/docs/trace-context).
A record's ``extra={"json_fields": {...}}`` adds fields to its line.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

from service_common import contract
from service_common.config import parse_queue_path

# Fields Cloud Logging reads itself: a record's own fields may not overwrite them.
RESERVED_FIELDS = frozenset(
    {
        "severity",
        "httpRequest",
        "time",
        "timestamp",
        "timestampSeconds",
        "timestampNanos",
        "logging.googleapis.com/insertId",
        "logging.googleapis.com/labels",
        "logging.googleapis.com/operation",
        "logging.googleapis.com/sourceLocation",
        "logging.googleapis.com/spanId",
        "logging.googleapis.com/trace",
        "logging.googleapis.com/trace_sampled",
    }
)
# version-traceid-parentid-flags; an all-zero trace or parent id is invalid, version ff too.
_TRACEPARENT = re.compile(
    r"^\s?(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s?$"
)
# TRACE_ID[/SPAN_ID][;o=OPTIONS], the span id in decimal.
_CLOUD_TRACE = re.compile(r"^([0-9A-Za-z-]+)(?:/(\d+))?(?:;o=(\d))?")


def project_id_for_traces(environ: Mapping[str, str]) -> str | None:
    """The project that owns the traces: from QUEUE's path, else GOOGLE_CLOUD_PROJECT."""
    queue = contract.QUEUE.read(environ)
    if queue:
        try:
            return parse_queue_path(contract.QUEUE.name, queue)[0]
        except ValueError:
            pass  # settings validation reports a bad QUEUE; logging must still work
    return contract.GOOGLE_CLOUD_PROJECT.read(environ)


def parse_trace_headers(traceparent: str | None, cloud_trace: str | None) -> tuple[str, str, bool]:
    """(trace id, span id as 16 hex digits, sampled) from a request's trace headers; empty
    strings when neither header holds one. ``traceparent`` wins, as in Google's library."""
    match = _TRACEPARENT.match(traceparent or "")
    if match is not None:
        return match[1], match[2], bool(int(match[3], 16) & 1)
    match = _CLOUD_TRACE.match(cloud_trace or "")
    if match is None:
        return "", "", False
    span = int(match[2]) if match[2] else 0
    span_id = f"{span:016x}" if 0 < span < 2**64 else ""
    return match[1], span_id, match[3] == "1"


def _request_fields() -> tuple[dict[str, Any], str, str, bool]:
    """(httpRequest, trace id, span id, sampled) of the Flask request being served, if any."""
    flask = sys.modules.get("flask")  # no Flask loaded: no request to describe
    if flask is None or not flask.has_request_context():
        return {}, "", "", False
    request = flask.request
    http_request = {
        "requestMethod": request.method,
        "requestUrl": request.url,
        "userAgent": request.user_agent.string,
        "protocol": request.environ.get("SERVER_PROTOCOL"),
    }
    trace, span, sampled = parse_trace_headers(
        request.headers.get("traceparent"), request.headers.get("X-Cloud-Trace-Context")
    )
    return http_request, trace, span, sampled


class StructuredFormatter(logging.Formatter):
    """One record as one line of Cloud Logging's structured JSON."""

    def __init__(self, labels: Mapping[str, str], project_id: str | None) -> None:
        super().__init__()
        self._labels = dict(labels)
        self._project_id = project_id

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if isinstance(record.msg, Mapping):
            fields.update(record.msg)
        else:
            # The message with the traceback of a logged exception, if any.
            fields["message"] = super().format(record)
        extra = getattr(record, "json_fields", None)
        if isinstance(extra, Mapping):
            fields = {**extra, **fields}
        for name in RESERVED_FIELDS & fields.keys():
            del fields[name]
        http_request, trace, span, sampled = _request_fields()
        if trace and self._project_id:
            trace = f"projects/{self._project_id}/traces/{trace}"
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line = {
            **fields,
            "severity": record.levelname,
            "time": created.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "logging.googleapis.com/labels": {"python_logger": record.name, **self._labels},
            "logging.googleapis.com/trace": trace,
            "logging.googleapis.com/spanId": span,
            "logging.googleapis.com/trace_sampled": sampled,
            "logging.googleapis.com/sourceLocation": {
                "line": record.lineno,
                "file": record.pathname,
                "function": record.funcName,
            },
            "httpRequest": http_request,
        }
        # A value JSON cannot hold is written as its text rather than losing the line.
        return json.dumps(line, ensure_ascii=False, default=str)


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write.

    A handler bound to the stdout object of start-up time keeps writing to it even after
    the process swaps it (a supervisor redirecting output, a test capturing it).
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class StructuredHandler(logging.StreamHandler[_CurrentStdout]):
    """Writes each record to stdout as one structured JSON line (one write per line)."""


def structured_handler(service: str, project_id: str | None) -> logging.Handler:
    """The handler writing one JSON line per record to stdout, labelled with ``service``."""
    handler = StructuredHandler(stream=_CurrentStdout())
    handler.setFormatter(StructuredFormatter({"service": service}, project_id))
    return handler


def configure_logging(service: str, project_id: str | None, level: int = logging.INFO) -> None:
    """Send every log record of the process to stdout as one structured JSON line."""
    handler = structured_handler(service, project_id)
    root = logging.getLogger()
    # Replace, not add: create_app may run more than once in a process.
    for existing in list(root.handlers):
        if isinstance(existing, StructuredHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
