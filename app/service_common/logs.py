"""Structured JSON logs for Cloud Logging, with the request's trace attached.

google-cloud-logging's StructuredLogHandler writes one JSON object per line with
``severity`` and, inside a Flask request, ``logging.googleapis.com/trace`` built from the
``X-Cloud-Trace-Context`` (or W3C ``traceparent``) header. The trace field is only a link
in Cloud Logging when it carries the project id, so the caller passes it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from google.cloud.logging_v2.handlers import StructuredLogHandler

from service_common import contract
from service_common.config import parse_queue_path


def project_id_for_traces(environ: Mapping[str, str]) -> str | None:
    """The project that owns the traces: from QUEUE's path, else GOOGLE_CLOUD_PROJECT."""
    queue = contract.QUEUE.read(environ)
    if queue:
        try:
            return parse_queue_path(contract.QUEUE.name, queue)[0]
        except ValueError:
            pass  # settings validation reports a bad QUEUE; logging must still work
    return contract.GOOGLE_CLOUD_PROJECT.read(environ)


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write.

    A handler bound to the stdout object of start-up time keeps writing to it even after
    the process swaps it (a supervisor redirecting output, a test capturing it).
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def structured_handler(service: str, project_id: str | None) -> logging.Handler:
    """The handler writing one JSON line per record to stdout, labelled with ``service``."""
    handler = StructuredLogHandler(
        labels={"service": service}, project_id=project_id, stream=_CurrentStdout()
    )
    return handler


def configure_logging(service: str, project_id: str | None, level: int = logging.INFO) -> None:
    """Send every log record of the process to stdout as one structured JSON line."""
    handler = structured_handler(service, project_id)
    root = logging.getLogger()
    # Replace, not add: create_app may run more than once in a process.
    for existing in list(root.handlers):
        if isinstance(existing, StructuredLogHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # The library announces itself once through its own logger and handler; without this the
    # announcement would be printed a second time through the root logger.
    logging.getLogger("google.cloud.logging_v2.handlers.structured_log").propagate = False
