"""Bounded retries: the policy (full jitter, attempts and a deadline) and one attempt through the limiter.

:class:`Caller` is where every request goes: it takes the limiter's slot and
token, calls, records the outcome (counters, events), tells the limiter about
429s and successes, and gives the slot back. :meth:`Caller.with_retries`
retries idempotent reads on 429, 5xx, transport errors and 409 (on a read, a
409 means "not consistent yet": evidence E2 of healthimaging-semantics.md);
writes are retried by the conflict resolver (``_conflict``), which must first
rule out that an earlier attempt was applied.

Bounds: attempts and the policy's deadline per call, and, inside
:func:`retries_until`, an absolute clock time as well (the conflict resolver
uses it so that the reads of one update stay within that update's budget).
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio

from async_hi._clock import Clock
from async_hi._errors import (
    ConflictError,
    HealthImagingError,
    InternalServerError,
    ServiceError,
    ThrottlingError,
    TransportError,
)
from async_hi._events import Recorder, RequestFinished, RequestStarted, Retrying, answer_request_id
from async_hi._limiter import RateLimiter

__all__ = ["SEND_AT", "Caller", "RetryPolicy", "is_retryable", "is_retryable_read", "retries_until"]

T = TypeVar("T")

#: (operation, send time) of the request this task is sending: the client's before-send hook
#: reads it to send at the time the limiter granted
SEND_AT: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "async_hi_send_at", default=None
)
#: the clock time by which every :meth:`Caller.with_retries` in this context must give up
_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar("async_hi_retries_until", default=None)


@contextmanager
def retries_until(until: float) -> Iterator[None]:
    """Within the block, read retries also stop at clock time ``until`` (the earlier bound wins)."""
    current = _UNTIL.get()
    token = _UNTIL.set(until if current is None else min(current, until))
    try:
        yield
    finally:
        _UNTIL.reset(token)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long and how often to keep trying.

    Args:
        max_attempts: requests per call (reads) or write attempts per update, >= 1.
        deadline: seconds one call or update may take in total, > 0.
        base_delay: first backoff ceiling in seconds (full jitter: ``rand(0, min(max_delay, base * 2**n))``).
        max_delay: the largest backoff ceiling.
        max_conflicts: stale-version or LOCKED refusals (409, or 404 "not the
            latest") one update may receive, >= 0.
        poll_base: first delay ceiling while polling a LOCKED or applying image set.
        poll_max: the largest polling delay ceiling.
        read_before_write: read the current version (GetImageSet) before the first
            write even when the update names its ``latest_version_id``. On (the
            default), a stale version costs a read (1/100 of a write's quota at the
            documented defaults) instead of a 409; off, an update that names its
            version is written at once (one request instead of two: faster when
            quotas are not the limit and versions are known), and a 409 leads to the
            read. Updates that name no version are always read first.
    """

    max_attempts: int = 12
    deadline: float = 900.0
    base_delay: float = 0.2
    max_delay: float = 20.0
    max_conflicts: int = 10
    poll_base: float = 0.1
    poll_max: float = 5.0
    read_before_write: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.max_conflicts < 0:
            raise ValueError(f"RetryPolicy.max_conflicts must be >= 0, got {self.max_conflicts!r}")
        for name in ("deadline", "base_delay", "max_delay", "poll_base", "poll_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RetryPolicy.{name} must be > 0, got {getattr(self, name)!r}")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``retry`` (1 for the first retry)."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0 ** (retry - 1)))

    def poll_delay(self, poll: int, rng: random.Random) -> float:
        """Delay before poll number ``poll`` of a LOCKED or applying image set.

        Half fixed, half jittered: polls spread out but never hammer the endpoint.
        """
        ceiling = min(self.poll_max, self.poll_base * 2.0 ** (poll - 1))
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx and transport errors are worth another attempt; nothing else is."""
    return isinstance(exc, (ThrottlingError, InternalServerError, TransportError))


def is_retryable_read(exc: BaseException) -> bool:
    """What a *read* retries: :func:`is_retryable`, and 409.

    A read has no version precondition, so a 409 on it can only mean "not
    ready": GetImageSetMetadata answers 409 ConflictException "Requested
    ImageSet metadata is not consistent yet. Please retry after a few seconds."
    right after an import or update (E2). Only GetImageSetMetadata is known to
    do so; retrying a 409 on GetImageSet or ListImageSetVersions too costs
    nothing but read quota, and a read cannot be applied twice.
    """
    return is_retryable(exc) or isinstance(exc, ConflictError)


class Caller:
    """Sends single attempts through a limiter, recording each outcome.

    Args:
        limiter: the rate limiter.
        clock: time source for backoff and durations.
        recorder: counters and the event hook.
        policy: bounds of :meth:`with_retries`.
        rng: random source for jitter (seed it in tests).
    """

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        clock: Clock,
        recorder: Recorder,
        policy: RetryPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.limiter = limiter
        self.clock = clock
        self.recorder = recorder
        self.policy = policy
        self.rng = rng or random.Random()

    async def send(
        self,
        operation: str,
        image_set_id: str | None,
        fn: Callable[[], Awaitable[T]],
        *,
        queued_since: float | None = None,
    ) -> T:
        """One request (the caller holds the slot): record it, and tell the limiter how it went.

        ``queued_since`` is when the caller began waiting for the slot (for ``RequestStarted.queued``).
        """
        t0 = self.clock.now()
        listening = self.recorder.hook is not None  # else RequestStarted is not even built
        if listening:
            queued = 0.0 if queued_since is None else t0 - queued_since
            self.recorder.emit(RequestStarted(operation, image_set_id, queued))
            answer_request_id.set(None)
        try:
            result = await fn()
        except HealthImagingError as exc:
            if isinstance(exc, ServiceError):
                status, outcome, rid = exc.status, exc.code, exc.request_id
            else:
                status, outcome, rid = None, type(exc).__name__, None
            self.recorder.emit(
                RequestFinished(operation, image_set_id, outcome, status, self.clock.now() - t0, rid)
            )
            if isinstance(exc, ThrottlingError):
                await self.limiter.on_throttle(operation, exc.retry_after)
            raise
        except BaseException as exc:  # cancelled, or an answer that could not be read
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            outcome = "cancelled" if cancelled else type(exc).__name__
            self.recorder.emit(RequestFinished(operation, image_set_id, outcome, None, self.clock.now() - t0))
            raise
        rid = answer_request_id.get() if listening else None
        self.recorder.emit(RequestFinished(operation, image_set_id, "ok", 200, self.clock.now() - t0, rid))
        await self.limiter.on_success(operation)
        return result

    async def once(self, operation: str, image_set_id: str | None, fn: Callable[[], Awaitable[T]]) -> T:
        """Take a slot and a send time, then :meth:`send` (at that time)."""
        queued_since = self.clock.now() if self.recorder.hook is not None else None
        at = await self.limiter.acquire(operation)
        try:
            if at is None:
                return await self.send(operation, image_set_id, fn, queued_since=queued_since)
            token = SEND_AT.set((operation, at))
            try:
                return await self.send(operation, image_set_id, fn, queued_since=queued_since)
            finally:
                SEND_AT.reset(token)
        finally:
            self.limiter.release(operation)

    async def with_retries(
        self, operation: str, image_set_id: str | None, fn: Callable[[], Awaitable[T]]
    ) -> T:
        """:meth:`once`, retried on 429, 5xx, transport errors and 409 within the bounds.

        Only for idempotent requests (see :func:`is_retryable_read`). A 429 is
        retried without extra delay: the limiter (cut rate, drained bucket,
        Retry-After) paces the next attempt; the others back off with full jitter.
        Bounds: the policy's attempts and deadline, and the time set by an
        enclosing :func:`retries_until`.

        Raises:
            HealthImagingError: the last error, when it is not retryable or the bounds ran out.
        """
        start = self.clock.now()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.once(operation, image_set_id, fn)
            except HealthImagingError as exc:
                now = self.clock.now()
                remaining = self.policy.deadline - (now - start)
                until = _UNTIL.get()
                if until is not None:
                    remaining = min(remaining, until - now)
                if not is_retryable_read(exc) or attempt >= self.policy.max_attempts or remaining <= 0:
                    raise
                delay = 0.0 if isinstance(exc, ThrottlingError) else self.policy.backoff(attempt, self.rng)
                delay = min(delay, remaining)
                self.recorder.emit(Retrying(operation, image_set_id, attempt + 1, delay, _reason(exc)))
                await self.clock.sleep(delay)


def _reason(exc: BaseException) -> str:
    return exc.code if isinstance(exc, ServiceError) else type(exc).__name__
