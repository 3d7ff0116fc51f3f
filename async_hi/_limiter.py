"""Per-operation rate limiting: the :class:`RateLimiter` protocol and the in-process limiter.

The protocol is the seam for other backends (a Redis-shared limiter plugs in
here). A limiter instance stands for one scope: one account (or endpoint) in
one region. Share an instance between clients of the same account and region,
and they share its buckets.

:class:`TokenBucketLimiter` keeps one token bucket per operation:

- seeded from the documented quota table (``contract.DEFAULT_QUOTAS``) or a
  :class:`LimiterConfig`, less a small ``headroom`` (2 %) so that jitter between
  the token and the request's arrival does not turn into 429s at burst 1; the
  bucket starts **empty**, so there is no start-up
  burst that another process may already have spent;
- FIFO-fair: waiters queue in arrival order and only the head sleeps (one
  timer per operation);
- a cap on requests in flight per operation (a slot is taken before the token,
  so a token is never held while waiting for a slot);
- adaptive on 429: the operation's rate is multiplied by ``cut`` (0.7) down to
  ``floor_rate`` (0.01 tps), the bucket is drained, and ``Retry-After`` pauses
  the operation; a cut happens at most once per interval at the new rate, so a
  volley of 429s from requests sent before the cut counts once; after
  ``recovery_interval`` without a throttle each success adds
  ``recovery_step`` x ceiling (a quarter of that near the rate that last
  failed), never above the ceiling;
- operations are independent: a throttle on one never slows another.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio

from async_hi import contract
from async_hi._clock import Clock, SystemClock

__all__ = ["LimiterConfig", "RateLimiter", "TokenBucketLimiter"]

#: An operation the table does not list gets this (generous: reads of other APIs).
_FALLBACK_QUOTA = contract.Quota(rate=10.0, burst=10)


@runtime_checkable
class RateLimiter(Protocol):
    """What the client needs from a rate limiter; one instance per (account or endpoint, region).

    The client calls, for every attempt of an operation::

        await limiter.acquire(op)          # wait for an in-flight slot and a token
        try:
            ...send...
            await limiter.on_success(op)   # or: await limiter.on_throttle(op, retry_after) on a 429
        finally:
            limiter.release(op)            # give the in-flight slot back
    """

    async def acquire(self, operation: str) -> None:
        """Wait (FIFO) until ``operation`` may send one request; takes an in-flight slot."""
        ...

    def release(self, operation: str) -> None:
        """Give back the in-flight slot taken by :meth:`acquire` (called exactly once per acquire)."""
        ...

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        """A request of ``operation`` got 429; ``retry_after`` is the server's hint in seconds, if any."""
        ...

    async def on_success(self, operation: str) -> None:
        """A request of ``operation`` was answered without throttling."""
        ...

    def current_rate(self, operation: str) -> float:
        """The rate (requests per second) ``operation`` is held to right now."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterConfig:
    """Settings of :class:`TokenBucketLimiter`.

    Args:
        quotas: operation -> ``Quota`` (ceiling rate and burst); operations
            missing here fall back to ``contract.DEFAULT_QUOTAS``.
        max_in_flight: requests of one operation in flight at once, >= 1.
        headroom: fraction of each quota held back, in [0, 0.5): with a burst of 1 the
            service refuses any two requests that *arrive* closer than 1/rate, so pacing
            at exactly the quota turns a millisecond of network jitter into a 429.
        adaptive: cut the rate on 429 and recover it slowly.
        cut: factor applied to the rate on a 429, in (0, 1).
        floor_rate: the lowest rate a cut can reach (tps), > 0.
        recovery_step: fraction of the ceiling added per clean interval, in (0, 1].
        plateau: above this fraction of the rate at the last 429, recovery slows to
            ``plateau_step`` x ``recovery_step`` (CUBIC's idea: linger near the rate that
            last failed instead of overshooting it again), in (0, 1].
        plateau_step: the slow-down factor near the last failing rate, in (0, 1].
        recovery_interval: seconds without a throttle before each increase, > 0.
        recovery_requests: the clean interval is also at least this many
            requests at the current rate (slow operations recover per request, not per second).
        max_sleep: the FIFO head re-checks at least this often (picks up rate changes), > 0.
    """

    quotas: Mapping[str, contract.Quota] = field(default_factory=lambda: dict(contract.DEFAULT_QUOTAS))
    max_in_flight: int = 16
    headroom: float = 0.02
    adaptive: bool = True
    cut: float = 0.7
    floor_rate: float = 0.01
    recovery_step: float = 0.05
    plateau: float = 0.9
    plateau_step: float = 0.25
    recovery_interval: float = 2.0
    recovery_requests: int = 5
    max_sleep: float = 1.0

    def __post_init__(self) -> None:
        for op, q in self.quotas.items():
            if not isinstance(q, contract.Quota):
                raise ValueError(f"LimiterConfig.quotas[{op!r}] must be a Quota, got {type(q).__name__}")
        if self.max_in_flight < 1:
            raise ValueError(f"LimiterConfig.max_in_flight must be >= 1, got {self.max_in_flight!r}")
        if not 0 <= self.headroom < 0.5:
            raise ValueError(f"LimiterConfig.headroom must be within [0, 0.5), got {self.headroom!r}")
        if not 0 < self.cut < 1:
            raise ValueError(f"LimiterConfig.cut must be within (0, 1), got {self.cut!r}")
        if not self.floor_rate > 0:
            raise ValueError(f"LimiterConfig.floor_rate must be > 0, got {self.floor_rate!r}")
        if not 0 < self.recovery_step <= 1:
            raise ValueError(f"LimiterConfig.recovery_step must be within (0, 1], got {self.recovery_step!r}")
        for name in ("plateau", "plateau_step"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"LimiterConfig.{name} must be within (0, 1], got {getattr(self, name)!r}")
        if not self.recovery_interval > 0:
            raise ValueError(f"LimiterConfig.recovery_interval must be > 0, got {self.recovery_interval!r}")
        if self.recovery_requests < 0:
            raise ValueError(f"LimiterConfig.recovery_requests must be >= 0, got {self.recovery_requests!r}")
        if not self.max_sleep > 0:
            raise ValueError(f"LimiterConfig.max_sleep must be > 0, got {self.max_sleep!r}")

    def quota(self, operation: str) -> contract.Quota:
        """The ceiling of ``operation``."""
        return self.quotas.get(operation) or contract.DEFAULT_QUOTAS.get(operation) or _FALLBACK_QUOTA


class _Bucket:
    __slots__ = (
        "blocked_until",
        "burst",
        "ceiling",
        "in_flight",
        "last_change",
        "last_cut",
        "last_throttle_rate",
        "queue",
        "rate",
        "slot_waiters",
        "stamp",
        "tokens",
    )

    def __init__(self, quota: contract.Quota, now: float, headroom: float) -> None:
        self.ceiling = quota.rate * (1.0 - headroom)
        self.rate = self.ceiling
        self.burst = float(quota.burst)
        self.tokens = 0.0  # empty at start: no surprise burst
        self.stamp = now
        self.blocked_until = now
        self.last_cut = float("-inf")
        self.last_throttle_rate = float("inf")
        self.last_change = now
        self.queue: collections.deque[anyio.Event] = collections.deque()
        self.in_flight = 0
        self.slot_waiters: collections.deque[anyio.Event] = collections.deque()

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


class TokenBucketLimiter:
    """The in-process adaptive limiter: one FIFO token bucket per operation.

    Args:
        config: quotas and adaptive settings.
        clock: time source (``SystemClock`` by default; ``FakeClock`` in tests).
        scope: what the buckets stand for, e.g. ``"123456789012/us-east-1"`` (shown in the repr).
        on_rate_change: called with (operation, new rate) after every cut or recovery step.
    """

    def __init__(
        self,
        config: LimiterConfig | None = None,
        *,
        clock: Clock | None = None,
        scope: str = "default",
        on_rate_change: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config or LimiterConfig()
        self.clock: Clock = clock or SystemClock()
        self.scope = scope
        self.on_rate_change = on_rate_change
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, operation: str) -> _Bucket:
        b = self._buckets.get(operation)
        if b is None:
            b = self._buckets[operation] = _Bucket(
                self.config.quota(operation), self.clock.now(), self.config.headroom
            )
        return b

    # -- the protocol --------------------------------------------------------

    async def acquire(self, operation: str) -> None:
        b = self._bucket(operation)
        await self._take_slot(b)
        try:
            await self._take_token(b)
        except BaseException:
            self._give_slot(b)
            raise

    def release(self, operation: str) -> None:
        self._give_slot(self._bucket(operation))

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        b = self._bucket(operation)
        now = self.clock.now()
        b.refill(now)
        if retry_after is not None and retry_after > 0:
            b.blocked_until = max(b.blocked_until, now + retry_after)
        if not self.config.adaptive:
            return
        # 429s from requests sent before the last cut say nothing about the new rate
        if now - b.last_cut < 1.0 / b.rate:
            return
        b.last_throttle_rate = b.rate
        b.rate = max(self.config.floor_rate, min(b.rate, b.ceiling) * self.config.cut)
        b.tokens = min(b.tokens, 0.0)
        b.last_cut = b.last_change = now
        self._changed(operation, b)

    async def on_success(self, operation: str) -> None:
        b = self._bucket(operation)
        if not self.config.adaptive or b.rate >= b.ceiling:
            return
        now = self.clock.now()
        clean = max(self.config.recovery_interval, self.config.recovery_requests / b.rate)
        if now - b.last_change < clean:
            return
        b.refill(now)
        step = self.config.recovery_step * b.ceiling
        boundary = self.config.plateau * b.last_throttle_rate
        # full steps up to the plateau, then small ones: a burst-1 quota fails at once above its rate
        below = b.rate < boundary
        new = min(b.rate + step, boundary) if below else b.rate + step * self.config.plateau_step
        b.rate = min(b.ceiling, new)
        b.last_change = now
        self._changed(operation, b)

    def current_rate(self, operation: str) -> float:
        return self._bucket(operation).rate

    # -- inspection ----------------------------------------------------------

    def waiting(self, operation: str) -> int:
        """Tasks queued for a token or a slot of ``operation``."""
        b = self._buckets.get(operation)
        return 0 if b is None else len(b.queue) + len(b.slot_waiters)

    def in_flight(self, operation: str) -> int:
        """How many requests of ``operation`` hold an in-flight slot now."""
        b = self._buckets.get(operation)
        return 0 if b is None else b.in_flight

    def __repr__(self) -> str:
        ops = ", ".join(
            f"{op}: {b.rate:.3g}/{b.ceiling:.3g} tps, {b.in_flight} in flight, {len(b.queue)} waiting"
            for op, b in sorted(self._buckets.items())
        )
        return f"TokenBucketLimiter(scope={self.scope!r}, {{{ops}}})"

    # -- internals -----------------------------------------------------------

    def _changed(self, operation: str, b: _Bucket) -> None:
        if self.on_rate_change is not None:
            self.on_rate_change(operation, b.rate)

    async def _take_slot(self, b: _Bucket) -> None:
        if b.in_flight < self.config.max_in_flight and not b.slot_waiters:
            b.in_flight += 1
            return
        me = anyio.Event()
        b.slot_waiters.append(me)
        try:
            await me.wait()  # _give_slot hands its slot straight to us
        except BaseException:
            if me.is_set():
                self._give_slot(b)
            else:
                b.slot_waiters.remove(me)
            raise

    def _give_slot(self, b: _Bucket) -> None:
        if b.slot_waiters:
            b.slot_waiters.popleft().set()  # the slot passes on; in_flight unchanged
        else:
            b.in_flight -= 1

    async def _take_token(self, b: _Bucket) -> None:
        me = anyio.Event()
        b.queue.append(me)
        try:
            if b.queue[0] is not me:
                await me.wait()  # the previous head wakes us when it leaves
            while True:
                now = self.clock.now()
                b.refill(now)
                # the epsilon keeps float rounding from spinning on sub-nanosecond sleeps
                if now >= b.blocked_until and b.tokens >= 1.0 - 1e-9:
                    b.tokens = max(0.0, b.tokens - 1.0)
                    return
                wait = max(b.blocked_until - now, (1.0 - b.tokens) / b.rate)
                await self.clock.sleep(min(wait, self.config.max_sleep))
        finally:
            head = b.queue[0] is me
            b.queue.remove(me)
            if head and b.queue:
                b.queue[0].set()
