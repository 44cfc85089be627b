"""A local Cloud Tasks: the ``google.cloud.tasks.v2.CloudTasks`` gRPC API with the real
service's retry schedule, counters, headers, rate limits and OIDC tokens, on a real or a
virtual clock. It knows nothing of the applications it dispatches to.

The names below are imported on first use, so that the gRPC front process
(``tasks_emulator.front``) loads only what it needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import Clock, RealClock, VirtualClock
    from .retry import RetryPolicy
    from .server import Emulator, EmulatorThread

__all__ = ["Clock", "Emulator", "EmulatorThread", "RealClock", "RetryPolicy", "VirtualClock"]
_WHERE = {
    "Clock": "clock", "RealClock": "clock", "VirtualClock": "clock",
    "RetryPolicy": "retry", "Emulator": "server", "EmulatorThread": "server",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
