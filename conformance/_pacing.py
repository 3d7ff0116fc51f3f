"""Pacing the suite's own requests, so a run never overruns an account's quotas.

The suite talks to the limiter through :class:`Pacer`, the subset of the
SDK's ``RateLimiter`` protocol it needs (``acquire``/``release``/
``on_throttle``/``on_success``), so the SDK's token-bucket limiter plugs in
as it is. :class:`IntervalPacer` is the minimal stand-in used when the SDK's
limiter is not available: per operation, requests at least ``1/rate`` apart,
the first at once, and a throttle pushes the next request back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import anyio

from async_hi.contract import DEFAULT_QUOTAS, Quota

__all__ = ["IntervalPacer", "NoPacing", "Pacer", "default_pacer"]


@runtime_checkable
class Pacer(Protocol):
    """What the suite needs from a rate limiter (structurally the SDK's ``RateLimiter``)."""

    async def acquire(self, operation: str) -> None: ...

    def release(self, operation: str) -> None: ...

    async def on_throttle(self, operation: str, retry_after: float | None) -> None: ...

    async def on_success(self, operation: str) -> None: ...


class NoPacing:
    """No waiting at all (our in-process emulator runs with quotas off)."""

    async def acquire(self, operation: str) -> None:
        return None

    def release(self, operation: str) -> None:
        return None

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        return None

    async def on_success(self, operation: str) -> None:
        return None

    def __repr__(self) -> str:
        return "NoPacing()"


class IntervalPacer:
    """Requests of one operation at least ``1 / rate`` seconds apart (FIFO per operation).

    Args:
        quotas: operation -> quota; operations not listed are not paced.
        clock: monotonic seconds (injectable for tests).
        sleep: an async sleep (injectable for tests).
    """

    def __init__(
        self,
        quotas: Mapping[str, Quota],
        *,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], object] = anyio.sleep,
    ) -> None:
        self._quotas = dict(quotas)
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def acquire(self, operation: str) -> None:
        quota = self._quotas.get(operation)
        if quota is None:
            return
        lock = self._locks.setdefault(operation, anyio.Lock())
        async with lock:
            now = self._clock()
            at = self._next.get(operation, now)
            if at > now:
                await self._sleep(at - now)  # type: ignore[misc]
                now = self._clock()
            self._next[operation] = max(at, now) + 1.0 / quota.rate

    def release(self, operation: str) -> None:
        return None

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        quota = self._quotas.get(operation)
        wait = retry_after if retry_after is not None else (2.0 / quota.rate if quota else 1.0)
        self._next[operation] = max(self._next.get(operation, 0.0), self._clock() + wait)

    async def on_success(self, operation: str) -> None:
        return None

    def __repr__(self) -> str:
        rates = ", ".join(f"{op}={q.rate:g}/s" for op, q in sorted(self._quotas.items()))
        return f"IntervalPacer({rates})"


def default_pacer(quotas: Mapping[str, Quota] | None = None) -> Pacer:
    """The pacer for a real account: the SDK's limiter when installed, else :class:`IntervalPacer`.

    Args:
        quotas: operation -> quota; the documented defaults when None.
    """
    table = dict(DEFAULT_QUOTAS if quotas is None else quotas)
    try:
        # looked up by name: the SDK's limiter is optional here and this keeps mypy quiet either way
        sdk = importlib.import_module("async_hi._limiter")
    except ImportError:
        return IntervalPacer(table)
    limiter: Pacer = sdk.TokenBucketLimiter(sdk.LimiterConfig(quotas=table))
    return limiter
