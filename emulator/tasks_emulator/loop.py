"""The event loop the emulator runs on: uvloop's where it is installed (Linux, macOS),
asyncio's own otherwise. Every way of starting the emulator (the command line, the
in-process thread, the tests) goes through here, so they all run on the same loop."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if importlib.util.find_spec("uvloop") is None:  # Windows, where uvloop does not exist
        return asyncio.new_event_loop
    import uvloop  # noqa: PLC0415 - only where it is installed

    return uvloop.new_event_loop


new_event_loop = _loop_factory()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the emulator's loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)
