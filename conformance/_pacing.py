"""Pacing the suite's own requests, so a run never overruns an account's quotas.

The suite paces through the SDK's own limiter (``async_hi``'s
``TokenBucketLimiter``, one token bucket per operation at the documented
quotas), the same one the client uses: one pacer, not a second copy.
:class:`Pacer` is the part of the SDK's ``RateLimiter`` protocol the suite
calls; :class:`NoPacing` is for our in-process emulator, which runs with
quotas off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from async_hi._limiter import LimiterConfig, TokenBucketLimiter
from async_hi.contract import DEFAULT_QUOTAS, Quota

__all__ = ["NoPacing", "Pacer", "default_pacer"]


@runtime_checkable
class Pacer(Protocol):
    """What the suite needs from a rate limiter (structurally the SDK's ``RateLimiter``)."""

    async def acquire(self, operation: str) -> float | None:
        """Wait until ``operation`` may send one request (the SDK limiter returns its send time)."""
        ...

    def release(self, operation: str) -> None:
        """The request taken by :meth:`acquire` is done (answered or failed)."""
        ...

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        """A request of ``operation`` got 429; ``retry_after`` is the server's hint in seconds, if any."""
        ...

    async def on_success(self, operation: str) -> None:
        """A request of ``operation`` was answered without throttling."""
        ...


class NoPacing:
    """No waiting at all (our in-process emulator runs with quotas off)."""

    async def acquire(self, operation: str) -> float | None:
        return None

    def release(self, operation: str) -> None:
        return None

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        return None

    async def on_success(self, operation: str) -> None:
        return None

    def __repr__(self) -> str:
        return "NoPacing()"


def default_pacer(quotas: Mapping[str, Quota] | None = None) -> Pacer:
    """The pacer for a real account: the SDK's token-bucket limiter at ``quotas``.

    Args:
        quotas: operation -> quota; the documented defaults when None.
    """
    table = dict(DEFAULT_QUOTAS if quotas is None else quotas)
    return TokenBucketLimiter(LimiterConfig(quotas=table))
