"""Counters per operation and the event hook (for metrics, tracing, progress).

Every event is a frozen slotted dataclass carrying ids, operation names,
numbers and codes, never attribute values. Attach a hook with
``HealthImagingClient(on_event=...)``; read the counters with
``client.stats()``. ``RequestStarted``/``RequestFinished`` and
``UpdateStarted``/``UpdateFinished`` come in pairs, emitted in the task that
does the work (so a hook can keep per-task state in a ``ContextVar``:
``async_hi.otel`` turns the pairs into spans).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "Event",
    "EventHook",
    "OperationStats",
    "RateChanged",
    "RequestFinished",
    "RequestStarted",
    "Retrying",
    "UpdateFinished",
    "UpdateStarted",
    "Waiting",
]

log = logging.getLogger("async_hi")

#: The request id of the answer just received in this task: set by the client's error boundary
#: when a hook listens, read by ``Caller.send`` for :class:`RequestFinished`.
answer_request_id: ContextVar[str | None] = ContextVar("async_hi_answer_request_id", default=None)


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A request (attempt) leaves, holding the limiter's slot and token; ``queued`` is the
    seconds it waited for them. Emitted only when a hook listens; always followed by a
    :class:`RequestFinished` in the same task."""

    operation: str
    image_set_id: str | None
    queued: float


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """One request (attempt) got an answer or failed.

    ``outcome`` is ``"ok"``, an error code (``"ThrottlingException"``, ...),
    ``"ConnectError"`` / ``"ResponseLostError"``, ``"cancelled"`` (the caller
    was cancelled while the request was out: not counted in ``stats()``), or the
    exception's type name when an answer could not be read.
    ``request_id`` is the service's request id, when an answer carried one.
    """

    operation: str
    image_set_id: str | None
    outcome: str
    status: int | None
    seconds: float
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Retrying:
    """An operation will be tried again after ``delay`` seconds; ``reason`` is what went wrong."""

    operation: str
    image_set_id: str | None
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """Polling an image set: ``reason`` is ``"locked"`` (conflict) or ``"applying"`` (wait=True)."""

    image_set_id: str
    version_id: str | None
    reason: str
    delay: float


@dataclass(frozen=True, slots=True)
class RateChanged:
    """The limiter moved an operation's rate (a cut after 429, or a recovery step)."""

    operation: str
    rate: float


@dataclass(frozen=True, slots=True)
class UpdateStarted:
    """An update begins (``update_image_set_metadata``, after this client's per-image-set
    write lock); always followed by an :class:`UpdateFinished` in the same task."""

    image_set_id: str


@dataclass(frozen=True, slots=True)
class UpdateFinished:
    """An update came to an end: ``outcome`` is ``"applied"``, ``"already-applied"``, ``"dropped"``
    (the rebase function returned None), ``"update-failed"``, ``"error"`` (it raised) or
    ``"cancelled"`` (the caller was cancelled)."""

    image_set_id: str
    version_id: str | None
    outcome: str
    attempts: int
    seconds: float


Event = RequestStarted | RequestFinished | Retrying | Waiting | RateChanged | UpdateStarted | UpdateFinished
"""Any event the client emits (a union of the frozen event classes)."""
EventHook = Callable[[Event], None]
"""The type of ``on_event=``: called synchronously with each event; keep it quick, never raise."""


@dataclass(frozen=True, slots=True)
class OperationStats:
    """A snapshot of one operation's counters.

    Attributes:
        calls: requests sent (every attempt counts).
        successes: requests answered without error.
        throttles: 429 answers.
        conflicts: 409 answers.
        server_errors: 5xx answers.
        transport_errors: no answer (connect failures, lost responses).
        retries: attempts made again after a failure.
        waits: polls of a LOCKED or applying image set.
        rate: the limiter's current rate for the operation (tps).
    """

    calls: int = 0
    successes: int = 0
    throttles: int = 0
    conflicts: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    retries: int = 0
    waits: int = 0
    rate: float = 0.0


_FIELDS = ("calls", "successes", "throttles", "conflicts", "server_errors", "transport_errors", "retries")


class Recorder:
    """Counts per operation and forwards events to the user's hook (a failing hook is logged, not raised)."""

    def __init__(self, hook: EventHook | None = None) -> None:
        self.hook = hook
        self._counts: dict[str, dict[str, int]] = {}

    def _c(self, operation: str) -> dict[str, int]:
        c = self._counts.get(operation)
        if c is None:
            c = self._counts[operation] = dict.fromkeys((*_FIELDS, "waits"), 0)
        return c

    def count(self, operation: str, name: str, n: int = 1) -> None:
        self._c(operation)[name] += n

    @property
    def listening(self) -> bool:
        """Whether a hook listens (events only a hook needs are not even built otherwise)."""
        return self.hook is not None

    def emit(self, event: Event) -> None:
        if isinstance(event, RequestFinished) and event.outcome != "cancelled":
            c = self._c(event.operation)
            c["calls"] += 1
            if event.outcome == "ok":
                c["successes"] += 1
            elif event.status == 429:
                c["throttles"] += 1
            elif event.status == 409:
                c["conflicts"] += 1
            elif event.status is not None and event.status >= 500:
                c["server_errors"] += 1
            elif event.status is None:
                c["transport_errors"] += 1
            log.debug(
                "%s %s -> %s in %.3f s", event.operation, event.image_set_id, event.outcome, event.seconds
            )
        elif isinstance(event, Retrying):
            self._c(event.operation)["retries"] += 1
            log.debug("%s %s: retry %d in %.3f s (%s)", *_retry_args(event))
        elif isinstance(event, Waiting):
            self._c("GetImageSet")["waits"] += 1
        elif isinstance(event, RateChanged):
            log.info("rate of %s now %.4g tps", event.operation, event.rate)
        if self.hook is not None:
            try:
                self.hook(event)
            except Exception:  # a metrics hook must never break an update
                log.exception("the on_event hook raised")

    def snapshot(self, rates: Mapping[str, float]) -> dict[str, OperationStats]:
        out = {}
        for op in sorted(set(self._counts) | set(rates)):
            c = self._c(op)
            out[op] = OperationStats(**{k: c[k] for k in (*_FIELDS, "waits")}, rate=rates.get(op, 0.0))
        return out


def _retry_args(e: Retrying) -> tuple[str, str | None, int, float, str]:
    return (e.operation, e.image_set_id, e.attempt, e.delay, e.reason)
