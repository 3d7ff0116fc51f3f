"""Per-operation rate limiting: the :class:`RateLimiter` protocol and the in-process limiter.

The protocol is the seam for other backends (a Redis-shared limiter plugs in
here). A limiter instance stands for one scope: one account (or endpoint) in
one region. Share an instance between clients of the same account and region,
and they share its buckets.

:class:`TokenBucketLimiter` keeps, per operation:

**Pacing in absolute time (GCRA).** Each grant is a *send time* on a grid:
the theoretical arrival time ``tat`` advances one interval per grant, and a
request may go at ``tat - (burst - 1) x interval`` or later. Grants follow
the grid, not the moment the previous waiter woke, so a late wake-up never
pushes the later ones back (no drift); the FIFO head wakes early by the
loop's median lateness (at most 2 ms) so grants come on time. At burst 1 a
grid that fell behind (a stall) is caught up at most at the pace of
:meth:`send_gap` (the interval less half the headroom), never with two grants
at once: the service keeps no burst to absorb them. ``acquire`` returns at
the send time and returns it; the client sends at that moment (its
before-send hook also keeps two of its sends of a burst-1 operation at least
``send_gap`` apart).

The interval is ``1 / rate``, where the ceiling rate is the quota less
``headroom`` (2 %); for a burst-1 quota also at least ``1 / quota + margin``,
where ``margin`` is ``jitter_factor`` (1) x the 90th percentile of how late
this limiter's own timers fired over its last 64 waits (the event loop's
jitter, measured as it runs), at most ``max_margin`` (3 %) of ``1/quota``, so
pacing alone never gives away more than 3 % of a quota.

**Start.** The bucket starts full: the first request (up to the burst) goes
at once. ``start_empty=True`` makes the first wait one interval (for many
processes started at the same moment on one quota).

**FIFO and in-flight cap.** Waiters queue in arrival order and only the head
sleeps (one timer per operation); when nobody waits and a send time is due,
``acquire`` takes it without allocating anything. A slot (``max_in_flight``
per operation) is taken before the send time, so a send time is never held
while waiting for a slot.

**Stray 429s versus overload** (``adaptive``). Each answer updates a
throttle score, an exponentially weighted share of 429s (weight 1 /
``throttle_window``). A 429 cuts the rate only when the score reaches
``throttle_threshold`` (about two 429s among the last eight answers):
throttling is sustained. A lone 429 among successes (a stray 429, or
network jitter at burst 1) changes nothing but honours ``Retry-After``.

**Cut and recovery (CUBIC-like).** A cut sets the rate to ``cut`` (0.7) x the
current rate (at least ``floor_rate``), clears the saved burst, and sets the
rate to return to, ``w``:

- *transient* (the first cut, or the rate had ``hold_requests`` clean
  answers since the last one, and it was not rising): ``w`` is the current
  rate, so a burst of jitter 429s or a passing neighbour costs little;
- *overload* (throttled again soon after a cut): while the rate was rising
  (returning, or probing above ``w``), ``w`` is ``plateau`` (0.98) x the rate
  at the last success before the 429s began (the rate that failed is just
  above it); at a flat rate, ``cut`` x the rate. The rate then holds at ``w``
  for ``hold_requests`` intervals, doubling with each overload cut in a row,
  before probing above it.

The rate returns to ``w`` along CUBIC's concave curve ``w - (w - c)(1 -
t/K)^3`` (``c`` the rate right after the cut, ``K`` = ``recovery_requests``
intervals at ``w``: fast at first, flattening near ``w``), holds, then probes
above ``w`` along the convex ``w (1 + (1 - cut)(t/K)^3)``, never above the
ceiling. A cut happens at most once per interval at the new rate (a volley of
429s from requests sent before it counts once).

Operations are independent: a throttle on one never slows another.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio

from async_hi import contract
from async_hi._clock import Clock, SystemClock

__all__ = [
    "Adaptive",
    "LimiterConfig",
    "RateLimiter",
    "RecentQuantile",
    "SendSpacing",
    "ThrottleScore",
    "TokenBucketLimiter",
]

#: An operation the table does not list gets this (generous: reads of other APIs).
_FALLBACK_QUOTA = contract.Quota(rate=10.0, burst=10)
_EPS = 1e-9
_MAX_LEAD = 0.002


@runtime_checkable
class RateLimiter(Protocol):
    """What the client needs from a rate limiter; one instance per (account or endpoint, region).

    The client calls, for every attempt of an operation::

        send_at = await limiter.acquire(op)   # wait for an in-flight slot and a send time
        try:
            ...send (at send_at, on the limiter's clock, if it is not None)...
            await limiter.on_success(op)      # or: await limiter.on_throttle(op, retry_after) on a 429
        finally:
            limiter.release(op)               # give the in-flight slot back
    """

    async def acquire(self, operation: str) -> float | None:
        """Wait (FIFO) until ``operation`` may send one request; takes an in-flight slot.

        Returns the send time it granted (clock seconds, at most now), or None.
        """
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


@runtime_checkable
class SendSpacing(Protocol):
    """A limiter that also says how far apart two sends of an operation must be (burst-1 quotas)."""

    def send_gap(self, operation: str) -> float:
        """Seconds between two sends of ``operation`` at least (0: no constraint)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterConfig:
    """Settings of :class:`TokenBucketLimiter` (see the module docstring for the algorithm).

    Args:
        quotas: operation -> ``Quota`` (ceiling rate and burst); operations
            missing here fall back to ``contract.DEFAULT_QUOTAS``.
        max_in_flight: requests of one operation in flight at once, >= 1.
        headroom: fraction of each quota held back, in [0, 0.5).
        start_empty: the first request waits one interval (default: the burst is there at once).
        jitter_factor: burst-1 sends are at least ``1/quota + jitter_factor x`` (the 90th
            percentile of the limiter's timer lateness) apart, >= 0 (0 turns this off).
        max_margin: that margin is at most this fraction of ``1/quota``, in [0, 0.5).
        adaptive: cut the rate on sustained 429s and recover it.
        throttle_window: answers the throttle score averages over (weight 1/window), >= 1.
        throttle_threshold: score at which 429s count as sustained, in (0, 1].
        cut: factor applied to the rate on a cut, in (0, 1).
        floor_rate: the lowest rate a cut can reach (tps), > 0.
        recovery_requests: the return to the last good rate takes this many
            intervals at that rate, > 0.
        hold_requests: clean answers that make a rate proven (a later cut is
            transient); after an overload cut, intervals to hold before
            probing above (doubling per overload cut in a row), >= 1.
        plateau: after an overload cut, return to this fraction of the rate at
            the last success before the 429s began, in (0, 1].
        max_sleep: the FIFO head re-checks at least this often (picks up rate changes), > 0.
    """

    quotas: Mapping[str, contract.Quota] = field(default_factory=lambda: dict(contract.DEFAULT_QUOTAS))
    max_in_flight: int = 16
    headroom: float = 0.02
    start_empty: bool = False
    jitter_factor: float = 1.0
    max_margin: float = 0.03
    adaptive: bool = True
    throttle_window: int = 8
    throttle_threshold: float = 0.2
    cut: float = 0.7
    floor_rate: float = 0.01
    recovery_requests: float = 8.0
    hold_requests: int = 50
    plateau: float = 0.98
    max_sleep: float = 1.0

    def __post_init__(self) -> None:
        for op, q in self.quotas.items():
            if not isinstance(q, contract.Quota):
                raise ValueError(f"LimiterConfig.quotas[{op!r}] must be a Quota, got {type(q).__name__}")
        if self.max_in_flight < 1:
            raise ValueError(f"LimiterConfig.max_in_flight must be >= 1, got {self.max_in_flight!r}")
        for name in ("headroom", "max_margin"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ValueError(f"LimiterConfig.{name} must be within [0, 0.5), got {getattr(self, name)!r}")
        if not self.jitter_factor >= 0:
            raise ValueError(f"LimiterConfig.jitter_factor must be >= 0, got {self.jitter_factor!r}")
        check_adaptive("LimiterConfig", self)
        if not self.max_sleep > 0:
            raise ValueError(f"LimiterConfig.max_sleep must be > 0, got {self.max_sleep!r}")

    def quota(self, operation: str) -> contract.Quota:
        """The ceiling of ``operation``."""
        return self.quotas.get(operation) or contract.DEFAULT_QUOTAS.get(operation) or _FALLBACK_QUOTA


class _AdaptiveSettings(Protocol):
    @property
    def throttle_window(self) -> int: ...
    @property
    def throttle_threshold(self) -> float: ...
    @property
    def cut(self) -> float: ...
    @property
    def floor_rate(self) -> float: ...
    @property
    def recovery_requests(self) -> float: ...
    @property
    def hold_requests(self) -> int: ...
    @property
    def plateau(self) -> float: ...


def check_adaptive(owner: str, c: _AdaptiveSettings) -> None:
    """Validate the adaptive settings shared by the in-process and the Redis limiter's configs."""
    if c.throttle_window < 1:
        raise ValueError(f"{owner}.throttle_window must be >= 1, got {c.throttle_window!r}")
    if not 0 < c.throttle_threshold <= 1:
        raise ValueError(f"{owner}.throttle_threshold must be within (0, 1], got {c.throttle_threshold!r}")
    if not 0 < c.cut < 1:
        raise ValueError(f"{owner}.cut must be within (0, 1), got {c.cut!r}")
    if not c.floor_rate > 0:
        raise ValueError(f"{owner}.floor_rate must be > 0, got {c.floor_rate!r}")
    if not c.recovery_requests > 0:
        raise ValueError(f"{owner}.recovery_requests must be > 0, got {c.recovery_requests!r}")
    if c.hold_requests < 1:
        raise ValueError(f"{owner}.hold_requests must be >= 1, got {c.hold_requests!r}")
    if not 0 < c.plateau <= 1:
        raise ValueError(f"{owner}.plateau must be within (0, 1], got {c.plateau!r}")


class RecentQuantile:
    """A quantile of the last ``size`` samples, recomputed every ``every`` samples (cheap to read).

    Args:
        q: the quantile, in [0, 1].
        size: samples kept.
        every: samples between recomputations.
    """

    __slots__ = ("_every", "_n", "_q", "_samples", "value")

    def __init__(self, q: float = 0.9, size: int = 64, every: int = 8) -> None:
        self._q = q
        self._every = every
        self._n = 0
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        #: the current estimate (0 until the first recomputation)
        self.value = 0.0

    @property
    def count(self) -> int:
        """Samples seen so far."""
        return self._n

    def add(self, sample: float) -> None:
        self._samples.append(sample)
        self._n += 1
        if self._n % self._every == 0 or self._n <= self._every:
            ordered = sorted(self._samples)
            self.value = ordered[min(len(ordered) - 1, int(self._q * len(ordered)))]


class ThrottleScore:
    """What one process saw of an operation's answers: is the throttling sustained, or stray?

    ``score`` is the exponentially weighted share of 429s (weight 1 / window);
    ``clean`` counts successes since the last cut; ``episode_ok`` is the rate at
    the last success before the current run of 429s began.
    """

    __slots__ = ("clean", "episode_ok", "last_ok", "score", "threshold", "window")

    def __init__(self, rate: float, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self.score = 0.0
        self.clean = 0
        self.last_ok = rate
        self.episode_ok: float | None = None

    def success(self, rate: float) -> None:
        self.score -= self.score / self.window
        self.clean += 1
        self.last_ok = rate
        if self.score < self.threshold / 4:
            self.episode_ok = None  # the last 429s were an isolated few: the next ones start afresh

    def throttle(self) -> bool:
        """Record a 429; True when the throttling is sustained (the score reached the threshold)."""
        if self.episode_ok is None:
            self.episode_ok = self.last_ok
        self.score += (1.0 - self.score) / self.window
        return self.score >= self.threshold - _EPS

    def after_cut(self) -> None:
        self.clean = 0
        self.episode_ok = None
        self.score = self.threshold / 2  # a quick recurrence counts as sustained at once


class Adaptive:
    """The adaptive rate of one operation: sustained-throttle detection, cuts, CUBIC recovery.

    Pure logic on explicit times (no clock, no I/O); the in-process limiter and
    the Redis limiter's local fallback use it (the Redis script has the same
    curve in Lua). ``rate(now)`` is a function of the time since the last cut,
    so recovery needs no bookkeeping per success.
    """

    __slots__ = ("c", "ceiling", "cfg", "guard_until", "hold_end", "k", "seen", "strikes", "t0", "w")

    def __init__(self, ceiling: float, cfg: _AdaptiveSettings) -> None:
        self.cfg = cfg
        self.ceiling = ceiling
        self.seen = ThrottleScore(ceiling, cfg.throttle_window, cfg.throttle_threshold)
        self.t0: float | None = None  # the last cut; None: never cut, the rate is the ceiling
        self.w = ceiling  # the rate to return to
        self.c = ceiling  # the rate right after the last cut
        self.k = 1.0  # seconds the return takes
        self.hold_end = -math.inf  # probing above w starts then
        self.guard_until = -math.inf
        self.strikes = 0  # overload cuts in a row

    def rate(self, now: float) -> float:
        """The rate at ``now``: the ceiling, or on the way back to (or probing above) ``w``."""
        if self.t0 is None:
            return self.ceiling
        t = now - self.t0
        if t < self.k:
            r = self.w - (self.w - self.c) * (1.0 - t / self.k) ** 3
        elif now < self.hold_end:
            r = self.w
        else:
            p = (now - max(self.t0 + self.k, self.hold_end)) / self.k
            r = self.w * (1.0 + (1.0 - self.cfg.cut) * p**3)
        return min(self.ceiling, r)

    def probing(self, now: float) -> bool:
        return self.t0 is not None and now >= self.hold_end and now >= self.t0 + self.k

    def success(self, now: float) -> None:
        self.seen.success(self.rate(now))

    def throttle(self, now: float) -> bool:
        """Record a 429; cut (and return True) when throttling is sustained."""
        if not self.seen.throttle() or now < self.guard_until:
            return False
        cfg = self.cfg
        r = self.rate(now)
        probing_above = self.probing(now) and r > self.w + _EPS
        climbing = self.t0 is not None and (
            (now < self.t0 + self.k and self.c < self.w - _EPS) or probing_above
        )
        if (self.t0 is None or self.seen.clean >= cfg.hold_requests) and not climbing:
            # transient: never cut before, or the rate was proven clean since the last cut, and
            # it was not rising: return to it quickly
            self.w = r
            self.strikes = 0
            hold = 0.0
        else:
            # overload: while the rate rose, it failed just above the last rate that succeeded;
            # at a flat rate, all we know is that this rate fails
            self.strikes += 1
            ok = self.seen.episode_ok if self.seen.episode_ok is not None else r
            self.w = max(cfg.floor_rate, min(r, ok) * cfg.plateau if climbing else r * cfg.cut)
            hold = cfg.hold_requests / self.w * 2.0 ** (self.strikes - 1)
        self.c = max(cfg.floor_rate, min(r * cfg.cut, self.w))
        self.t0 = now
        self.k = cfg.recovery_requests / self.w
        self.hold_end = now + self.k + hold
        self.guard_until = now + 1.0 / self.c
        self.seen.after_cut()
        return True


class _Bucket:
    __slots__ = (
        "adaptive",
        "blocked_until",
        "burst",
        "in_flight",
        "jitter",
        "last_grant",
        "lead",
        "max_margin",
        "queue",
        "quota_interval",
        "reported",
        "slot_waiters",
        "tat",
    )

    def __init__(self, quota: contract.Quota, now: float, config: LimiterConfig) -> None:
        self.adaptive = Adaptive(quota.rate * (1.0 - config.headroom), config)
        self.burst = quota.burst
        self.quota_interval = 1.0 / quota.rate
        self.max_margin = config.max_margin * self.quota_interval if quota.burst == 1 else 0.0
        # full at start: the burst goes at once; empty: the first request waits one interval
        self.tat = now + (quota.burst / self.adaptive.ceiling if config.start_empty else 0.0)
        self.blocked_until = now
        self.last_grant = -math.inf
        self.jitter = RecentQuantile(0.9)
        self.lead = RecentQuantile(0.5)
        self.reported = self.adaptive.ceiling
        self.queue: collections.deque[anyio.Event] = collections.deque()
        self.in_flight = 0
        self.slot_waiters: collections.deque[anyio.Event] = collections.deque()


class TokenBucketLimiter:
    """The in-process adaptive limiter: one FIFO GCRA bucket per operation.

    Args:
        config: quotas and adaptive settings.
        clock: time source (``SystemClock`` by default; ``FakeClock`` in tests).
        scope: what the buckets stand for, e.g. ``"123456789012/us-east-1"`` (shown in the repr).
        on_rate_change: called with (operation, new rate) after every cut, and when a
            recovery reaches the rate it returns to or the ceiling.
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
                self.config.quota(operation), self.clock.now(), self.config
            )
        return b

    # -- the protocol --------------------------------------------------------

    async def acquire(self, operation: str) -> float:
        b = self._buckets.get(operation) or self._bucket(operation)
        if b.in_flight < self.config.max_in_flight and not b.slot_waiters:
            b.in_flight += 1
        else:
            await self._take_slot(b)
        try:
            if not b.queue:  # the fast path: nobody waits and a send time is due
                now = self.clock.now()
                at = self._due(b, now, now)
                if at <= now + _EPS:
                    return at
            return await self._queued(b)
        except BaseException:
            self._give_slot(b)
            raise

    def release(self, operation: str) -> None:
        self._give_slot(self._buckets.get(operation) or self._bucket(operation))

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        b = self._bucket(operation)
        now = self.clock.now()
        if retry_after is not None and retry_after > 0:
            b.blocked_until = max(b.blocked_until, now + retry_after)
        if self.config.adaptive and b.adaptive.throttle(now):
            rate = b.adaptive.c
            # the saved burst is gone: the next send is one interval at the new rate away
            b.tat = max(b.tat, now + b.burst / rate)
            self._changed(operation, b, rate)

    async def on_success(self, operation: str) -> None:
        b = self._buckets.get(operation) or self._bucket(operation)
        a = b.adaptive
        if a.t0 is None and a.seen.score == 0.0:
            a.seen.clean += 1
            return  # never throttled: nothing else to track
        now = self.clock.now()
        a.success(now)
        self._report(operation, b, now)

    def current_rate(self, operation: str) -> float:
        return self._bucket(operation).adaptive.rate(self.clock.now())

    def send_gap(self, operation: str) -> float:
        """The least time between two sends of ``operation`` (0 unless its quota has a burst of 1).

        The grid's interval less half the headroom: a send that went late can be caught up
        (slowly), and two sends are never closer than ``1 / quota`` plus half the headroom.
        """
        b = self._bucket(operation)
        if b.burst != 1:
            return 0.0
        return self._interval(b, self.clock.now()) * (1.0 - self.config.headroom / 2)

    def align(self, operation: str, send_at: float) -> None:
        """Put the next send time of ``operation`` at ``send_at`` (clock seconds); the grid goes on.

        The Redis limiter's local fallback uses it to keep each process on its own slots of the
        shared grid.
        """
        b = self._bucket(operation)
        b.tat = send_at + (b.burst - 1) * self._interval(b, self.clock.now())

    # -- inspection ----------------------------------------------------------

    def waiting(self, operation: str) -> int:
        """Tasks queued for a send time or a slot of ``operation``."""
        b = self._buckets.get(operation)
        return 0 if b is None else len(b.queue) + len(b.slot_waiters)

    def in_flight(self, operation: str) -> int:
        """How many requests of ``operation`` hold an in-flight slot now."""
        b = self._buckets.get(operation)
        return 0 if b is None else b.in_flight

    def jitter(self, operation: str) -> float:
        """The 90th percentile of how late this limiter's timers for ``operation`` fired (seconds)."""
        b = self._buckets.get(operation)
        return 0.0 if b is None else b.jitter.value

    def __repr__(self) -> str:
        now = self.clock.now()
        ops = ", ".join(
            f"{op}: {b.adaptive.rate(now):.3g}/{b.adaptive.ceiling:.3g} tps, {b.in_flight} in flight, "
            f"{len(b.queue)} waiting"
            for op, b in sorted(self._buckets.items())
        )
        return f"TokenBucketLimiter(scope={self.scope!r}, {{{ops}}})"

    # -- internals -----------------------------------------------------------

    def _margin(self, b: _Bucket) -> float:
        return min(b.max_margin, self.config.jitter_factor * b.jitter.value)

    def _interval(self, b: _Bucket, now: float) -> float:
        interval = 1.0 / b.adaptive.rate(now)
        if b.burst == 1:
            interval = max(interval, b.quota_interval + self._margin(b))
        return interval

    def _due(self, b: _Bucket, now: float, arrived: float, early: float = 0.0) -> float:
        """The send time of the next request (which arrived at ``arrived``); takes it if due
        (by ``now + early``).

        At burst 1 a grant also comes at least the grid's interval less half the headroom
        after the previous one in real time: after a late wake-up the grid is caught up
        at that pace, never with two grants at once (the service keeps no burst to absorb them).
        """
        interval = self._interval(b, now)
        grid = max(arrived, b.tat - (b.burst - 1) * interval, b.blocked_until)
        at = grid
        if b.burst == 1:
            at = max(grid, b.last_grant + interval * (1.0 - self.config.headroom / 2))
        if at <= now + early + _EPS:
            b.tat = max(b.tat, grid) + interval
            b.last_grant = max(at, now)  # when it really goes
        return at

    def _changed(self, operation: str, b: _Bucket, rate: float) -> None:
        b.reported = rate
        if self.on_rate_change is not None:
            self.on_rate_change(operation, rate)

    def _report(self, operation: str, b: _Bucket, now: float) -> None:
        """Tell the hook when a recovery reached the rate it returns to, or the ceiling."""
        a = b.adaptive
        rate = a.rate(now)
        target = a.ceiling if a.probing(now) else a.w
        if rate >= target - _EPS and abs(b.reported - rate) > _EPS:
            self._changed(operation, b, rate)

    async def _take_slot(self, b: _Bucket) -> None:
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

    async def _queued(self, b: _Bucket) -> float:
        arrived = self.clock.now()
        me = anyio.Event()
        b.queue.append(me)
        try:
            if b.queue[0] is not me:
                await me.wait()  # the previous head wakes us when it leaves
            while True:
                now = self.clock.now()
                # wake early by the loop's typical (median) lateness, so the grant is on time;
                # at most 2 ms and a tenth of the quota's interval (one stall is not typical)
                lead = min(b.lead.value, _MAX_LEAD, b.quota_interval / 10) if b.lead.count >= 8 else 0.0
                at = self._due(b, now, arrived, lead)
                if at <= now + lead + _EPS:
                    return at
                target = at - lead
                if target - now > self.config.max_sleep:
                    await self.clock.sleep(self.config.max_sleep)  # re-check (rate changes)
                    continue
                await self.clock.sleep(target - now)
                late = max(0.0, self.clock.now() - target)
                b.jitter.add(late)
                b.lead.add(late)
        finally:
            head = b.queue[0] is me
            b.queue.remove(me)
            if head and b.queue:
                b.queue[0].set()
