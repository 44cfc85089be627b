"""The time source of the emulator's engine.

Everything that happens at a time (a task becoming due, a token arriving in a queue's
bucket, a dispatch deadline passing) is a callback registered with ``call_at`` on a Clock,
and every HTTP attempt in flight is registered with ``track``. The engine never reads the
time or sleeps any other way, so the same engine runs on:

- ``RealClock``: wall-clock time on the running event loop;
- ``VirtualClock``: time that only moves when ``await clock.advance(seconds)`` is called,
  which fires every due callback in time order and waits for the attempts they start, so
  a schedule spanning days is checked in milliseconds, deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...

    def track(self, work: asyncio.Future[Any]) -> None:
        """Registers work in flight (an attempt), so a virtual clock can wait for it."""
        ...

    async def cancel_all(self) -> None: ...


MIN_TIMER_DELAY = 0.001


class _TaskSet:
    """Keeps the attempts in flight, to wait for them or cancel them at stop."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Future[Any]] = set()

    def track(self, work: asyncio.Future[Any]) -> None:
        self.tasks.add(work)
        work.add_done_callback(self.tasks.discard)

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class RealClock(_TaskSet):
    """Wall-clock time; callbacks run on the event loop that is running when they are
    registered."""

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        delay = when - time.time()
        if delay > 0:
            # uvloop's timers count whole milliseconds and may fire up to ~1 ms early;
            # the engine then waits again for the rest, which must not round to "now"
            # (a busy loop until the time comes).
            delay = max(delay, MIN_TIMER_DELAY)
        return loop.call_later(max(0.0, delay), callback)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock(_TaskSet):
    """Time that moves only when told to.

    ``io_grace`` is how long (real seconds) ``advance`` waits for an attempt in flight
    that makes no progress before it lets virtual time move on: a worker that hangs is
    then cut off by its dispatch deadline in virtual time, like on the real clock.
    """

    def __init__(self, start: float | None = None, io_grace: float = 1.0) -> None:
        super().__init__()
        self._now = time.time() if start is None else float(start)
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._sequence = itertools.count()
        self.io_grace = io_grace

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _VirtualTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    async def advance(self, seconds: float) -> None:
        """Moves time forward by ``seconds``, firing every callback due on the way in
        time order, each after the attempts started by the earlier ones have finished."""
        if seconds < 0:
            raise ValueError(f"cannot move time backwards (seconds={seconds})")
        target = self._now + seconds
        await self.settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            await self.settle()
        self._now = target
        await self.settle()

    async def settle(self) -> None:
        """Waits until every attempt in flight has finished and been accounted for, or
        has made no progress for ``io_grace`` seconds (a hung worker)."""
        await asyncio.sleep(0)
        # An attempt leaves ``tasks`` only after its own done-callbacks (the engine's
        # bookkeeping) ran, so an empty set means the outcome is recorded.
        while self.tasks:
            pending = {task for task in self.tasks if not task.done()}
            if not pending:
                await asyncio.sleep(0)
                continue
            done, _ = await asyncio.wait(pending, timeout=self.io_grace)
            if not done:
                return
