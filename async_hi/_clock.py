"""The injectable clock every wait in the SDK goes through.

:class:`SystemClock` (the default) reads ``time.monotonic`` and sleeps with
``anyio.sleep``, so it works under asyncio and trio. :class:`FakeClock` is
virtual time for tests: ``sleep()`` returns only when the test moves time on
(``advance``) or when ``autojump()`` jumps to the next sleeper once every task
is blocked, so limiter, backoff and conflict tests never really sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds and a matching sleep."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns at once for zero or less)."""
        ...


class SystemClock:
    """Real time: ``time.monotonic`` and ``anyio.sleep`` (asyncio or trio)."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


_IDLING: set[asyncio.Task[Any]] = set()


async def _wait_idle() -> None:
    """Until every other task is blocked (anyio's asyncio version polls every 0.1 s; this one yields)."""
    try:
        this = asyncio.current_task()
    except RuntimeError:
        this = None
    if this is None:  # trio (or no asyncio task): its own check is exact and quick
        await anyio.wait_all_tasks_blocked()
        return
    _IDLING.add(this)  # two tasks waiting for each other to block count each other as blocked
    try:
        for _ in range(100_000):
            await asyncio.sleep(0)
            if all(
                t in _IDLING or (t._fut_waiter is not None and not t._fut_waiter.done())  # type: ignore[attr-defined]
                for t in asyncio.all_tasks()
            ):
                return
    finally:
        _IDLING.discard(this)
    await anyio.wait_all_tasks_blocked()


class FakeClock:
    """Virtual time for tests: nothing sleeps for real.

    Args:
        start: the initial reading of ``now()``.

    Example::

        clock = FakeClock()
        async with clock.autojump():
            await code_that_sleeps(clock)  # completes instantly, clock.now() moved on
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._new_sleeper: anyio.Event | None = None
        #: every sleep requested, in order (seconds), for assertions
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._now + seconds, next(self._seq), event)
        heapq.heappush(self._sleepers, entry)
        if self._new_sleeper is not None:
            self._new_sleeper.set()
        try:
            await event.wait()
        finally:
            if not event.is_set():  # cancelled: forget the entry
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock."""
        return len(self._sleepers)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()

    async def settle(self) -> None:
        """Let every task run until it blocks (time does not move)."""
        await _wait_idle()

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, waking sleepers in deadline order and letting them run."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds!r}")
        target = self._now + seconds
        await _wait_idle()
        while self._sleepers and self._sleepers[0][0] <= target:
            self._now = max(self._now, self._sleepers[0][0])
            self._wake_due()
            await _wait_idle()
        self._now = target
        await _wait_idle()

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[FakeClock]:
        """Within the block, whenever every task is blocked, jump to the next sleeper's deadline."""

        async def jumper() -> None:
            while True:
                await _wait_idle()
                if self._sleepers:
                    self._now = max(self._now, self._sleepers[0][0])
                    self._wake_due()
                    continue
                self._new_sleeper = anyio.Event()
                await self._new_sleeper.wait()
                self._new_sleeper = None

        async with anyio.create_task_group() as tg:
            tg.start_soon(jumper)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, sleepers={len(self._sleepers)})"
