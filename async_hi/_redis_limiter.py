"""A rate limiter shared by many processes and machines through Redis.

Several processes (or replicas) updating one account must share that
account's quota: each with its own in-process bucket overruns it N-fold.
:class:`RedisLimiter` keeps one shared state per (scope, operation) in Redis,
where scope is the account or endpoint and the region, under the key
``async-hi:{scope}:{operation}``. Every decision is one atomic Lua script
that reads the Redis server's clock (``TIME``), so the clocks of the client
machines never matter:

- ``acquire``: reserve the next *send time* on the shared GCRA grid
  (theoretical arrival time ``tat``, interval ``1/rate``, burst tolerance
  ``(burst - 1)/rate``) and return it; the process converts it to its own
  clock (the script's time is taken as the middle of the round trip), sleeps
  until then, and the client sends at that time (see
  ``HealthImagingClient``'s before-send hook), so sends from different
  processes keep the grid's spacing. Reservations are handed out in the
  order they reach Redis: FIFO across processes. A new key starts full (the
  first request goes at once; the key stands for the account, whose quota is
  full when idle); ``start_empty`` makes it wait one interval. The ceiling is
  the quota less ``headroom``; at burst 1 the interval is also at least
  ``1/quota + margin``, the margin sized from this process's measured timer
  lateness, as in the in-process limiter.
- ``on_throttle`` (a 429) first goes to this process's own throttle score
  (``ThrottleScore``: an exponentially weighted share of 429s). A lone 429,
  such as one caused by two processes' sends jittering together at burst 1,
  never reaches Redis. Sustained throttling runs the script's cut: the shared
  rate drops to ``cut`` x the rate (once per interval at the new rate), the
  saved burst is dropped, ``Retry-After`` pauses every process, and the rate
  then comes back along the same CUBIC-like curve as the in-process limiter
  (``async_hi._limiter``): quickly to the rate it had, when this process saw
  that rate proven; else to just below the last rate that succeeded, holding
  there before probing above. The rate is a function of the time since the
  cut, so ``on_success`` needs no Redis call.

The cap on requests in flight (``max_in_flight``) is per process.

When Redis is unreachable (connection refused, timeout), ``on_unavailable``
decides, explicitly:

- ``"fail"`` (the default): ``acquire`` raises :class:`RedisUnavailableError`.
  Nothing is sent that the shared quota has not granted. A bulk run stops
  sending on it (unsent requests stay unsent, not failed). A lost
  ``on_throttle`` adjustment is logged once per outage.
- ``"local"``: fall back to an in-process :class:`~async_hi._limiter.TokenBucketLimiter`
  at ``quota / fallback_share`` (set ``fallback_share`` to the number of
  processes that share the account), with the same stray-429 tolerance and
  recovery, so it keeps its share; log a warning, and try Redis again after
  ``retry_redis_after`` seconds; each switch is logged once. At burst 1 the
  slices would collide (uncoordinated processes' sends closer than 1/quota),
  so each process keeps to its own slots of the shared grid: slots ``k x T``
  of the Redis clock (``T`` the interval at the shared ceiling), ``k =
  member (mod fallback_share)``, where ``member`` is a number the process took
  from Redis (``INCR`` of ``{prefix}:{scope}:members``) while it was up, and
  the Redis clock is converted with the offset measured at the last reply.

The limiter satisfies the client's ``RateLimiter`` protocol (``acquire``,
``release``, ``on_throttle``, ``on_success``, ``current_rate``) and
``send_gap``. It needs the optional ``redis`` dependency (``pip install
'async-hi[redis]'``) and runs on asyncio only (redis-py's client is asyncio-based).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from async_hi import contract
from async_hi._errors import LimiterUnavailableError
from async_hi._limiter import LimiterConfig, RecentQuantile, ThrottleScore, TokenBucketLimiter, check_adaptive

__all__ = ["RedisLimiter", "RedisLimiterConfig", "RedisUnavailableError"]

log = logging.getLogger("async_hi.redis_limiter")

_FALLBACK_QUOTA = contract.Quota(rate=10.0, burst=10)

# One script, two modes. Times are integer microseconds of the Redis clock, rates are tps;
# numbers go back as %.0f / %.17g strings because Lua's tostring keeps only 14 digits.
# The rate curve is _limiter.Adaptive.rate in Lua.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]
local ceiling = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local min_interval = tonumber(ARGV[4])
local start_empty = ARGV[5] == '1'
local ttl_ms = tonumber(ARGV[6])
local retry_us = tonumber(ARGV[7])
local clean_ok = ARGV[8] == '1'
local episode_ok = tonumber(ARGV[9])
local cut = tonumber(ARGV[10])
local floor = tonumber(ARGV[11])
local plateau = tonumber(ARGV[12])
local recovery = tonumber(ARGV[13])
local hold_requests = tonumber(ARGV[14])
local h = redis.call('HMGET', KEYS[1], 'tat', 'blocked', 't0', 'w', 'c', 'k', 'hold', 'strikes')
local tat = tonumber(h[1])
local blocked = tonumber(h[2]) or 0
local t0 = tonumber(h[3])
local w = tonumber(h[4]) or ceiling
local c = tonumber(h[5]) or ceiling
local k = tonumber(h[6]) or 1000000
local hold_end = tonumber(h[7]) or 0
local strikes = tonumber(h[8]) or 0

local function rate_at(at)
  if t0 == nil then return ceiling end
  local r
  if at - t0 < k then
    r = w - (w - c) * (1 - (at - t0) / k) ^ 3
  elseif at < hold_end then
    r = w
  else
    local p = (at - math.max(t0 + k, hold_end)) / k
    r = w * (1 + (1 - cut) * p ^ 3)
  end
  return math.min(ceiling, r)
end

local function interval_at(rate)
  return math.max(1000000 / rate, min_interval)
end

local rate = rate_at(now)
local wait = 0
if mode == 'acquire' then
  local interval = interval_at(rate)
  local tau = (burst - 1) * interval
  if tat == nil then
    if start_empty then tat = now + burst * interval else tat = now end
  end
  local start = math.max(tat - tau, now, blocked)
  tat = math.max(tat, start) + interval
  wait = start - now
elseif mode == 'throttle' then
  if retry_us > 0 then blocked = math.max(blocked, now + retry_us) end
  if cut < 1 and (t0 == nil or now - t0 >= 1000000 / c) then
    local probing = t0 ~= nil and now >= hold_end and now >= t0 + k
    local above = probing and rate > w
    local climbing = t0 ~= nil and ((now - t0 < k and c < w) or above)
    local hold = 0
    if (t0 == nil or clean_ok) and not climbing then
      w = rate
      strikes = 0
    else
      strikes = strikes + 1
      if climbing then w = math.min(rate, episode_ok) * plateau else w = rate * cut end
      w = math.max(floor, w)
      hold = hold_requests / w * 2 ^ (strikes - 1) * 1000000
    end
    c = math.max(floor, math.min(rate * cut, w))
    t0 = now
    k = recovery / w * 1000000
    hold_end = now + k + hold
    rate = c
    local interval = interval_at(c)
    tat = math.max(tat or now, now + burst * interval)
  end
end
if tat == nil then tat = now end
local fields = {'tat', string.format('%.0f', tat), 'blocked', string.format('%.0f', blocked),
  'w', string.format('%.17g', w), 'c', string.format('%.17g', c), 'k', string.format('%.0f', k),
  'hold', string.format('%.0f', hold_end), 'strikes', tostring(strikes)}
if t0 ~= nil then
  table.insert(fields, 't0')
  table.insert(fields, string.format('%.0f', t0))
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], math.floor(ttl_ms + math.max(0, tat - now, blocked - now) / 1000))
return {string.format('%.0f', wait), string.format('%.17g', rate), string.format('%.0f', now),
  string.format('%.0f', t0 or -1)}
"""


class RedisUnavailableError(LimiterUnavailableError):
    """Redis could not be reached, and ``on_unavailable="fail"``: no request may be sent.

    ``update_many`` (and ``async-hi update``) stop sending on it; see
    :class:`~async_hi._errors.LimiterUnavailableError`.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisLimiterConfig:
    """Settings of :class:`RedisLimiter` (the adaptive ones mean what they mean in ``LimiterConfig``).

    Args:
        scope: what the shared buckets stand for: the account (or endpoint) and
            region, e.g. ``"123456789012:us-east-1"``. Every process sharing a
            quota must use the same scope.
        quotas: operation -> ceiling ``Quota``; missing operations use ``contract.DEFAULT_QUOTAS``.
        key_prefix: Redis key prefix.
        max_in_flight: requests of one operation in flight at once in this process, >= 1.
        headroom: fraction of each quota held back, in [0, 0.5).
        start_empty: a new key makes its first request wait one interval (default: at once).
        jitter_factor: burst-1 sends at least ``1/quota + jitter_factor x`` (the 90th percentile
            of this process's timer lateness) apart, >= 0.
        max_margin: that margin is at most this fraction of ``1/quota``, in [0, 0.5).
        adaptive: cut the shared rate on sustained 429s and recover it.
        throttle_window: answers this process's throttle score averages over, >= 1.
        throttle_threshold: score at which 429s count as sustained, in (0, 1].
        cut: factor applied to the rate on a cut, in (0, 1).
        floor_rate: the lowest rate a cut can reach (tps), > 0.
        recovery_requests: the return to the last good rate takes this many intervals, > 0.
        hold_requests: clean answers that make a rate proven; intervals to hold after an overload cut.
        plateau: after an overload cut, return to this fraction of the last rate that succeeded.
        on_unavailable: ``"fail"`` (raise) or ``"local"`` (fall back to a local slice) when Redis is down.
        fallback_share: with ``"local"``, the local rate is the quota divided by this, >= 1.
        retry_redis_after: with ``"local"``, seconds before trying Redis again, > 0.
        key_ttl: seconds an idle key lives (its rate cut is forgotten after that), > 0.
    """

    scope: str
    quotas: Mapping[str, contract.Quota] = field(default_factory=lambda: dict(contract.DEFAULT_QUOTAS))
    key_prefix: str = "async-hi"
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
    on_unavailable: Literal["fail", "local"] = "fail"
    fallback_share: int = 4
    retry_redis_after: float = 5.0
    key_ttl: float = 3600.0

    def __post_init__(self) -> None:
        if not self.scope or not isinstance(self.scope, str):
            raise ValueError(
                "RedisLimiterConfig.scope must be a non-empty string (account or endpoint, region)"
            )
        for op, q in self.quotas.items():
            if not isinstance(q, contract.Quota):
                raise ValueError(f"RedisLimiterConfig.quotas[{op!r}] must be a Quota, got {type(q).__name__}")
        if self.max_in_flight < 1:
            raise ValueError(f"RedisLimiterConfig.max_in_flight must be >= 1, got {self.max_in_flight!r}")
        for name in ("headroom", "max_margin"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ValueError(
                    f"RedisLimiterConfig.{name} must be within [0, 0.5), got {getattr(self, name)!r}"
                )
        if not self.jitter_factor >= 0:
            raise ValueError(f"RedisLimiterConfig.jitter_factor must be >= 0, got {self.jitter_factor!r}")
        check_adaptive("RedisLimiterConfig", self)
        if self.on_unavailable not in ("fail", "local"):
            raise ValueError(
                f"RedisLimiterConfig.on_unavailable must be 'fail' or 'local', got {self.on_unavailable!r}"
            )
        if self.fallback_share < 1:
            raise ValueError(f"RedisLimiterConfig.fallback_share must be >= 1, got {self.fallback_share!r}")
        if not self.retry_redis_after > 0:
            raise ValueError(
                f"RedisLimiterConfig.retry_redis_after must be > 0, got {self.retry_redis_after!r}"
            )
        if not self.key_ttl > 0:
            raise ValueError(f"RedisLimiterConfig.key_ttl must be > 0, got {self.key_ttl!r}")

    def quota(self, operation: str) -> contract.Quota:
        """The ceiling of ``operation``."""
        return self.quotas.get(operation) or contract.DEFAULT_QUOTAS.get(operation) or _FALLBACK_QUOTA

    def fallback(self) -> LimiterConfig:
        """The in-process limiter used while Redis is unreachable (``on_unavailable="local"``)."""
        share = {op: self.quota(op) for op in {*contract.DEFAULT_QUOTAS, *self.quotas}}
        return LimiterConfig(
            quotas={
                op: contract.Quota(rate=q.rate / self.fallback_share, burst=q.burst)
                for op, q in share.items()
            },
            max_in_flight=1_000_000,  # the slots are the RedisLimiter's own
            headroom=self.headroom,
            jitter_factor=0.0,  # the slice keeps the shared grid's slots (see RedisLimiter._fallback)
            max_margin=self.max_margin,
            adaptive=self.adaptive,
            throttle_window=self.throttle_window,
            throttle_threshold=self.throttle_threshold,
            cut=self.cut,
            floor_rate=self.floor_rate,
            recovery_requests=self.recovery_requests,
            hold_requests=self.hold_requests,
            plateau=self.plateau,
        )


class _FunctionClock:
    """A ``Clock`` from a ``now`` and a ``sleep`` function (the fallback limiter's time)."""

    def __init__(self, now: Callable[[], float], sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._now = now
        self._sleep = sleep

    def now(self) -> float:
        return self._now()

    async def sleep(self, seconds: float) -> None:
        await self._sleep(max(0.0, seconds))


class _Op:
    """This process's view of one operation's shared state."""

    __slots__ = ("best_rtt", "jitter", "offset", "rate", "score", "slot", "t0")

    def __init__(self, rate: float, config: RedisLimiterConfig) -> None:
        self.slot = anyio.Semaphore(config.max_in_flight)
        self.rate = rate
        self.score = ThrottleScore(rate, config.throttle_window, config.throttle_threshold)
        self.jitter = RecentQuantile(0.9)
        self.t0 = -1.0  # the shared cut time last seen (-1: none)
        self.offset: float | None = None  # Redis clock minus this process's clock, seconds
        self.best_rtt = math.inf


class RedisLimiter:
    """The shared limiter (an async context manager when it owns its Redis connection).

    Args:
        redis: a ``redis.asyncio.Redis`` client, or a URL such as ``"redis://127.0.0.1:6379/0"``
            (then the limiter owns the connection, with short timeouts and no retries).
        config: scope, quotas and policies; see :class:`RedisLimiterConfig`.
        now: local monotonic seconds (send times, fallback bucket, retry timer); injectable for tests.
        sleep: the matching sleep; injectable for tests.
    """

    def __init__(
        self,
        redis: aioredis.Redis | str,
        config: RedisLimiterConfig,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        self.config = config
        self._owns = isinstance(redis, str)
        if isinstance(redis, str):
            redis = aioredis.Redis.from_url(
                redis, socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0)
            )
        self.redis: aioredis.Redis = redis
        self._script = self.redis.register_script(_SCRIPT)
        self._now = now
        self._sleep = sleep
        self._ops: dict[str, _Op] = {}
        self._local: TokenBucketLimiter | None = None
        self._down_until: float | None = None
        self._member: int | None = None
        self._adjust_lost = False  # a lost adjustment was logged in this outage

    def __repr__(self) -> str:
        rates = ", ".join(f"{op}: {s.rate:.3g} tps" for op, s in sorted(self._ops.items()))
        mode = "local fallback" if self._down_until is not None else "redis"
        return f"RedisLimiter(scope={self.config.scope!r}, {mode}, {{{rates}}})"

    async def __aenter__(self) -> RedisLimiter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis connection if the limiter opened it."""
        if self._owns:
            await self.redis.aclose()

    def key(self, operation: str) -> str:
        """The Redis key of ``operation``'s shared state."""
        return f"{self.config.key_prefix}:{self.config.scope}:{operation}"

    # -- the RateLimiter protocol ------------------------------------------------

    async def acquire(self, operation: str) -> float:
        op = self._op(operation)
        await op.slot.acquire()
        try:
            return await self._reserve(operation, op)
        except BaseException:
            op.slot.release()
            raise

    def release(self, operation: str) -> None:
        self._op(operation).slot.release()

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        op = self._op(operation)
        retry_us = max(0.0, retry_after or 0.0) * 1e6
        if self._local is not None and self._down_until is not None:
            await self._local.on_throttle(operation, retry_after)
        sustained = op.score.throttle() and self.config.adaptive
        if not sustained and retry_us <= 0:
            return  # a lone 429 (jitter between processes, a stray one): the shared rate stays
        try:
            await self._run(operation, op, "throttle", retry_us if retry_us > 0 else 0.0, cut=sustained)
        except RedisUnavailableError:
            # a lost adjustment is not worth failing the request over; acquire still fails closed.
            # Said once per outage: every call in flight when Redis went away ends up here.
            if not self._adjust_lost:
                self._adjust_lost = True
                log.warning(
                    "Redis unreachable: could not record a throttle for %s "
                    "(further lost adjustments not logged)",
                    operation,
                )

    async def on_success(self, operation: str) -> None:
        op = self._op(operation)
        op.score.success(op.rate)
        if self._local is not None and self._down_until is not None:
            await self._local.on_success(operation)

    def current_rate(self, operation: str) -> float:
        """The shared rate of ``operation`` as last seen from Redis (the local slice while falling back)."""
        if self._local is not None and self._down_until is not None:
            return self._local.current_rate(operation)
        return self._op(operation).rate

    def send_gap(self, operation: str) -> float:
        """The least time between two of this process's sends of ``operation`` (burst-1 quotas only):
        the shared interval less half the headroom."""
        q = self.config.quota(operation)
        if q.burst != 1:
            return 0.0
        if self._local is not None and self._down_until is not None:
            return self._local.send_gap(operation)
        op = self._op(operation)
        interval = max(1.0 / op.rate, 1.0 / q.rate + self._margin(q, op))
        return interval * (1.0 - self.config.headroom / 2)

    # -- internals -----------------------------------------------------------------

    def _op(self, operation: str) -> _Op:
        op = self._ops.get(operation)
        if op is None:
            q = self.config.quota(operation)
            op = self._ops[operation] = _Op(q.rate * (1.0 - self.config.headroom), self.config)
        return op

    def _margin(self, q: contract.Quota, op: _Op) -> float:
        if q.burst != 1:
            return 0.0
        return min(self.config.max_margin / q.rate, self.config.jitter_factor * op.jitter.value)

    def _args(self, operation: str, op: _Op, mode: str, retry_us: float, cut: bool) -> list[str]:
        c = self.config
        q = c.quota(operation)
        min_interval = (1.0 / q.rate + self._margin(q, op)) * 1e6 if q.burst == 1 else 0.0
        episode = op.score.episode_ok if op.score.episode_ok is not None else op.rate
        return [
            mode,
            repr(q.rate * (1.0 - c.headroom)),
            str(q.burst),
            repr(min_interval),
            "1" if c.start_empty else "0",
            repr(c.key_ttl * 1000),
            repr(retry_us),
            "1" if op.score.clean >= c.hold_requests else "0",
            repr(episode),
            repr(c.cut if cut else 1.0),
            repr(c.floor_rate),
            repr(c.plateau),
            repr(c.recovery_requests),
            str(c.hold_requests),
        ]

    async def _run(self, operation: str, op: _Op, mode: str, retry_us: float, *, cut: bool) -> float | None:
        """Run the script; returns the local send time, or None when Redis is down (fallback)."""
        if self._down_until is not None and self._now() < self._down_until:
            return None
        sent = self._now()
        try:
            wait_us, rate, redis_now, t0 = await self._script(
                keys=[self.key(operation)], args=self._args(operation, op, mode, retry_us, cut)
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if self.config.on_unavailable == "fail":
                raise RedisUnavailableError(
                    f"Redis is unreachable ({type(exc).__name__}); the shared quota for scope "
                    f"{self.config.scope!r} cannot be enforced, so no request is sent "
                    "(on_unavailable='local' falls back to a local slice of the quota)"
                ) from exc
            if self._down_until is None:
                log.warning(
                    "Redis unreachable (%s): limiting scope %r locally at 1/%d of each quota",
                    type(exc).__name__,
                    self.config.scope,
                    self.config.fallback_share,
                )
            self._down_until = self._now() + self.config.retry_redis_after
            if self._local is None:
                self._local = self._fallback()
            return None
        received = self._now()
        self._adjust_lost = False
        # the clock offset, NTP-like: from the reply with the shortest round trip lately (a long one
        # was delayed on one leg or the other, so its middle is not when the script ran)
        rtt = received - sent
        op.best_rtt *= 1.05
        if rtt <= op.best_rtt:
            op.best_rtt = rtt
            op.offset = float(redis_now) / 1e6 - (sent + received) / 2
        if self._member is None:
            await self._join()
        if self._down_until is not None:
            log.warning("Redis reachable again: scope %r shares its quota through Redis", self.config.scope)
            self._down_until = None
            self._local = None
        op.rate = float(rate)
        cut_at = float(t0)
        if cut_at != op.t0:  # a cut (by any process): what this process saw before it is history
            op.t0 = cut_at
            op.score.after_cut()
        # the script ran at about the middle of the round trip
        return (sent + received) / 2 + float(wait_us) / 1e6

    async def _join(self) -> None:
        """Take a member number (``INCR`` of ``{prefix}:{scope}:members``): its slots in a fallback."""
        try:
            self._member = int(await self.redis.incr(f"{self.config.key_prefix}:{self.config.scope}:members"))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return  # asked again at the next reply

    def _fallback(self) -> TokenBucketLimiter:
        """The local slice, its burst-1 grids laid on the shared one so the processes' slices interleave.

        The shared grid is slots ``k x T`` of the Redis clock, ``T`` the interval at the shared
        ceiling. This process takes the slots with ``k = member (mod fallback_share)`` (its local
        interval is ``fallback_share x T``), converted to its own clock with the offset measured
        at its last reply; so processes with different member numbers never send into the same
        slot. Processes without a reply yet, or numbers equal modulo the share (restarts), start
        where they are.
        """
        local = TokenBucketLimiter(
            self.config.fallback(),
            clock=_FunctionClock(self._now, self._sleep),
            scope=f"{self.config.scope} (local fallback)",
        )
        share = self.config.fallback_share
        if self._member is None:
            return local
        now = self._now()
        for name, op in self._ops.items():
            q = self.config.quota(name)
            if q.burst != 1 or op.offset is None:
                continue
            interval = 1.0 / (q.rate * (1.0 - self.config.headroom))
            k = math.ceil((now + op.offset) / interval)
            k += (self._member - k) % share
            local.align(name, k * interval - op.offset)
        return local

    async def _reserve(self, operation: str, op: _Op) -> float:
        at = await self._run(operation, op, "acquire", 0.0, cut=False)
        if at is None:
            assert self._local is not None
            local_at = await self._local.acquire(operation)
            self._local.release(operation)  # the in-flight slot is ours (op.slot), not the fallback's
            return local_at
        wait = at - self._now()
        if wait > 0:
            await self._sleep(wait)
            op.jitter.add(max(0.0, self._now() - at))
        return at
