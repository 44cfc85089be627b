"""Shutdown signal for in-flight tasks.

Cloud Run sends SIGTERM and kills the container about 10 s later. gunicorn stops accepting
and waits for running requests (graceful timeout 8 s). A task whose work cannot finish in
that window stops early and answers 503: the attempt is not acknowledged, and Cloud Tasks
delivers the task again later, to a live instance.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_shutting_down = threading.Event()


def request_shutdown() -> None:
    """Tell in-flight tasks to stop their work and answer 503."""
    _shutting_down.set()


def wait_for_shutdown(seconds: float) -> bool:
    """Sleep up to ``seconds``; True when a shutdown was requested meanwhile."""
    return _shutting_down.wait(timeout=seconds)


def shutting_down() -> bool:
    return _shutting_down.is_set()


def install_sigterm_hook() -> None:
    """Chain request_shutdown in front of the process' current SIGTERM handler."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> Any:
        request_shutdown()
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_DFL:
            raise SystemExit(128 + signum)
        return None

    signal.signal(signal.SIGTERM, on_sigterm)
    # signal.signal makes SIGTERM interrupt system calls again; gunicorn turned that off so
    # that the signal does not break requests in the middle of a socket read.
    signal.siginterrupt(signal.SIGTERM, False)
