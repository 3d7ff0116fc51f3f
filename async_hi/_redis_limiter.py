"""A rate limiter shared by many processes and machines through Redis.

Several processes (or replicas) updating one account must share that
account's quota: each with its own in-process bucket overruns it N-fold.
:class:`RedisLimiter` keeps one GCRA state per (scope, operation) in Redis,
where scope is the account or endpoint and the region, under the key
``async-hi:{scope}:{operation}``. Every decision is one atomic Lua script
that reads the Redis server's clock (``TIME``), so the clocks of the client
machines never matter:

- ``acquire``: reserve the next emission time (GCRA: theoretical arrival time
  ``tat``, interval ``1/rate``, burst tolerance ``(burst - 1)/rate``) and return
  how long to wait for it; the caller sleeps that long locally. Reservations
  are handed out in the order they reach Redis, so waiting is FIFO across
  processes. A new key starts **empty** (the first request waits one
  interval), as the in-process limiter does.
- ``on_throttle`` (a 429): cut the *shared* rate by ``cut`` (once per interval
  at the new rate, down to ``floor_rate``), drop any saved-up burst, and pause
  every process for ``Retry-After`` seconds.
- ``on_success``: after ``recovery_interval`` (and ``recovery_requests``
  intervals) without a cut, raise the shared rate by ``recovery_step`` x the
  ceiling, never above it.

The cap on requests in flight (``max_in_flight``) is per process.

When Redis is unreachable (connection refused, timeout), ``on_unavailable``
decides, explicitly:

- ``"fail"`` (the default): ``acquire`` raises :class:`RedisUnavailableError`.
  Nothing is sent that the shared quota has not granted. A bulk run stops
  sending on it (unsent requests stay unsent, not failed). A lost
  ``on_throttle``/``on_success`` adjustment is logged once per outage.
- ``"local"``: fall back to an in-process GCRA at ``rate / fallback_share`` (a
  conservative slice: set ``fallback_share`` to the number of processes that
  share the account), log a warning, and try Redis again after
  ``retry_redis_after`` seconds; each switch is logged once.

The limiter satisfies the client's ``RateLimiter`` protocol (``acquire``,
``release``, ``on_throttle``, ``on_success``, ``current_rate``). It needs the
optional ``redis`` dependency (``pip install 'async-hi[redis]'``) and runs on
asyncio only (redis-py's client is asyncio-based).
"""

from __future__ import annotations

import logging
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

__all__ = ["RedisLimiter", "RedisLimiterConfig", "RedisUnavailableError"]

log = logging.getLogger("async_hi.redis_limiter")

_FALLBACK_QUOTA = contract.Quota(rate=10.0, burst=10)

# One script, three modes. Times are integer microseconds of the Redis clock,
# formatted with %.0f / %.17g because Lua's tostring keeps only 14 digits.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]
local ceiling = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local cut = tonumber(ARGV[5])
local step = tonumber(ARGV[6])
local clean_us = tonumber(ARGV[7])
local clean_requests = tonumber(ARGV[8])
local retry_us = tonumber(ARGV[9])
local ttl_ms = tonumber(ARGV[10])
local h = redis.call('HMGET', KEYS[1], 'tat', 'rate', 'blocked', 'changed', 'cut')
local rate = tonumber(h[2]) or ceiling
if rate > ceiling then rate = ceiling end
local interval = 1000000 / rate
local tau = (burst - 1) * interval
local tat = tonumber(h[1]) or (now + tau + interval)
local blocked = tonumber(h[3]) or 0
local changed = tonumber(h[4]) or now
local lastcut = tonumber(h[5]) or 0
local wait = 0
if mode == 'acquire' then
  local start = math.max(tat, now, blocked + tau)
  wait = math.max(0, start - tau - now)
  tat = start + interval
elseif mode == 'throttle' then
  if retry_us > 0 then blocked = math.max(blocked, now + retry_us) end
  if cut < 1 and now - lastcut >= interval then
    rate = math.max(floor, rate * cut)
    interval = 1000000 / rate
    tau = (burst - 1) * interval
    tat = math.max(tat, now + tau + interval)
    lastcut = now
    changed = now
  end
elseif mode == 'success' then
  if rate < ceiling and now - changed >= math.max(clean_us, clean_requests * interval) then
    rate = math.min(ceiling, rate + step * ceiling)
    changed = now
  end
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'rate', string.format('%.17g', rate),
  'blocked', string.format('%.0f', blocked), 'changed', string.format('%.0f', changed),
  'cut', string.format('%.0f', lastcut))
redis.call('PEXPIRE', KEYS[1], math.floor(ttl_ms + math.max(0, tat - now, blocked - now) / 1000))
return {string.format('%.0f', wait), string.format('%.17g', rate)}
"""


class RedisUnavailableError(LimiterUnavailableError):
    """Redis could not be reached, and ``on_unavailable="fail"``: no request may be sent.

    ``update_many`` (and ``async-hi update``) stop sending on it; see
    :class:`~async_hi._errors.LimiterUnavailableError`.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisLimiterConfig:
    """Settings of :class:`RedisLimiter`.

    Args:
        scope: what the shared buckets stand for: the account (or endpoint) and
            region, e.g. ``"123456789012:us-east-1"``. Every process sharing a
            quota must use the same scope.
        quotas: operation -> ceiling ``Quota``; missing operations use ``contract.DEFAULT_QUOTAS``.
        key_prefix: Redis key prefix.
        max_in_flight: requests of one operation in flight at once in this process, >= 1.
        adaptive: cut the shared rate on 429 and recover it slowly.
        cut: factor applied to the rate on a 429, in (0, 1).
        floor_rate: the lowest rate a cut can reach (tps), > 0.
        recovery_step: fraction of the ceiling added per clean interval, in (0, 1].
        recovery_interval: seconds without a cut before each increase, >= 0.
        recovery_requests: the clean interval is also at least this many intervals at the current rate.
        on_unavailable: ``"fail"`` (raise) or ``"local"`` (fall back to a local slice) when Redis is down.
        fallback_share: with ``"local"``, the local rate is the ceiling divided by this, >= 1.
        retry_redis_after: with ``"local"``, seconds before trying Redis again, > 0.
        key_ttl: seconds an idle key lives (its rate cut is forgotten after that), > 0.
    """

    scope: str
    quotas: Mapping[str, contract.Quota] = field(default_factory=lambda: dict(contract.DEFAULT_QUOTAS))
    key_prefix: str = "async-hi"
    max_in_flight: int = 16
    adaptive: bool = True
    cut: float = 0.7
    floor_rate: float = 0.01
    recovery_step: float = 0.05
    recovery_interval: float = 2.0
    recovery_requests: int = 5
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
        if not 0 < self.cut < 1:
            raise ValueError(f"RedisLimiterConfig.cut must be within (0, 1), got {self.cut!r}")
        if not self.floor_rate > 0:
            raise ValueError(f"RedisLimiterConfig.floor_rate must be > 0, got {self.floor_rate!r}")
        if not 0 < self.recovery_step <= 1:
            raise ValueError(
                f"RedisLimiterConfig.recovery_step must be within (0, 1], got {self.recovery_step!r}"
            )
        if self.recovery_interval < 0:
            raise ValueError(
                f"RedisLimiterConfig.recovery_interval must be >= 0, got {self.recovery_interval!r}"
            )
        if self.recovery_requests < 0:
            raise ValueError(
                f"RedisLimiterConfig.recovery_requests must be >= 0, got {self.recovery_requests!r}"
            )
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


class _LocalGcra:
    """The fallback: the same GCRA in process memory, on the local monotonic clock."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.interval = 1.0 / rate
        self.tau = (burst - 1) * self.interval
        self.tat = now + self.tau + self.interval  # starts empty, like the shared one

    def reserve(self, now: float) -> float:
        start = max(self.tat, now)
        self.tat = start + self.interval
        return max(0.0, start - self.tau - now)


class RedisLimiter:
    """The shared limiter (an async context manager when it owns its Redis connection).

    Args:
        redis: a ``redis.asyncio.Redis`` client, or a URL such as ``"redis://127.0.0.1:6379/0"``
            (then the limiter owns the connection, with short timeouts and no retries).
        config: scope, quotas and policies; see :class:`RedisLimiterConfig`.
        now: local monotonic seconds (fallback bucket, retry timer); injectable for tests.
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
        self._rates: dict[str, float] = {}
        self._slots: dict[str, anyio.Semaphore] = {}
        self._local: dict[str, _LocalGcra] = {}
        self._down_until: float | None = None
        self._adjust_lost = False  # a lost adjustment was logged in this outage

    def __repr__(self) -> str:
        rates = ", ".join(f"{op}: {r:.3g} tps" for op, r in sorted(self._rates.items()))
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

    async def acquire(self, operation: str) -> None:
        slot = self._slot(operation)
        await slot.acquire()
        try:
            wait = await self._reserve(operation)
            if wait > 0:
                await self._sleep(wait)
        except BaseException:
            slot.release()
            raise

    def release(self, operation: str) -> None:
        self._slot(operation).release()

    async def on_throttle(self, operation: str, retry_after: float | None) -> None:
        retry_us = max(0.0, retry_after or 0.0) * 1e6
        await self._adjust(operation, "throttle", retry_us)

    async def on_success(self, operation: str) -> None:
        if self.config.adaptive and self.current_rate(operation) < self.config.quota(operation).rate:
            await self._adjust(operation, "success", 0.0)

    def current_rate(self, operation: str) -> float:
        """The shared rate of ``operation`` as last seen from Redis (the ceiling before any call)."""
        return self._rates.get(operation, self.config.quota(operation).rate)

    # -- internals -----------------------------------------------------------------

    def _slot(self, operation: str) -> anyio.Semaphore:
        slot = self._slots.get(operation)
        if slot is None:
            slot = self._slots[operation] = anyio.Semaphore(self.config.max_in_flight)
        return slot

    def _args(self, operation: str, mode: str, retry_us: float) -> list[str]:
        c = self.config
        q = c.quota(operation)
        cut = c.cut if c.adaptive else 1.0
        return [
            mode,
            repr(q.rate),
            str(q.burst),
            repr(c.floor_rate),
            repr(cut),
            repr(c.recovery_step),
            repr(c.recovery_interval * 1e6),
            str(c.recovery_requests),
            repr(retry_us),
            repr(c.key_ttl * 1000),
        ]

    async def _run(self, operation: str, mode: str, retry_us: float) -> float | None:
        """Run the script; returns the wait in seconds, or None when Redis is down (fallback)."""
        if self._down_until is not None and self._now() < self._down_until:
            return None
        try:
            wait_us, rate = await self._script(
                keys=[self.key(operation)], args=self._args(operation, mode, retry_us)
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
            return None
        self._adjust_lost = False
        if self._down_until is not None:
            log.warning("Redis reachable again: scope %r shares its quota through Redis", self.config.scope)
            self._down_until = None
            self._local.clear()
        self._rates[operation] = float(rate)
        return float(wait_us) / 1e6

    async def _reserve(self, operation: str) -> float:
        wait = await self._run(operation, "acquire", 0.0)
        if wait is not None:
            return wait
        local = self._local.get(operation)
        if local is None:
            q = self.config.quota(operation)
            local = self._local[operation] = _LocalGcra(
                q.rate / self.config.fallback_share, q.burst, self._now()
            )
        return local.reserve(self._now())

    async def _adjust(self, operation: str, mode: str, retry_us: float) -> None:
        try:
            shared = await self._run(operation, mode, retry_us)
        except RedisUnavailableError:
            # a lost adjustment is not worth failing the request over; acquire still fails closed.
            # Said once per outage: every call in flight when Redis went away ends up here.
            if not self._adjust_lost:
                self._adjust_lost = True
                log.warning(
                    "Redis unreachable: could not record %s for %s (further lost adjustments not logged)",
                    mode,
                    operation,
                )
            return
        local = self._local.get(operation)
        if shared is None and local is not None and mode == "throttle":
            # falling back: the local slice obeys 429s too (cut and Retry-After), never recovers
            now = self._now()
            if self.config.adaptive:
                local.interval = min(local.interval / self.config.cut, 1.0 / self.config.floor_rate)
            local.tat = max(local.tat, now + retry_us / 1e6 + local.tau + local.interval)
