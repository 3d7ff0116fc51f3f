"""OpenTelemetry spans and metrics from the client's events (the ``async-hi[otel]`` extra).

Usage::

    from async_hi.otel import instrument
    instrument(client)  # the global providers, or tracer_provider= / meter_provider=

How events become telemetry. Each Started/Finished pair is emitted in the task
that does the work, so the open span of a task is kept in a ``ContextVar``:

- ``UpdateStarted`` opens the span ``update_image_set_metadata`` (INTERNAL,
  a child of the span current in that task) and makes it current (so spans
  your rebase function or another instrumentation opens nest under it);
  ``UpdateFinished`` sets the outcome, write attempts, version and what was
  counted in between (requests, 409s, 429s, retries, polls, limiter wait), then
  ends it. ``Retrying``, ``Waiting`` and ``RateChanged`` become events on it.
- ``RequestStarted`` opens a CLIENT span per HTTP request, named and
  attributed as the AWS SDK convention says (``Medical Imaging.GetImageSet``;
  ``rpc.system=aws-api``, ``rpc.service``, ``rpc.method``), a child of the open
  update span, and records the limiter wait; ``RequestFinished`` sets
  ``http.response.status_code``, ``error.type`` (the AWS error code) and
  ``aws.request_id``, then ends it.
- Metrics (attribute ``rpc.method``): ``async_hi.client.requests`` (also by
  ``http.response.status_code`` and ``error.type``), ``async_hi.client.throttles``
  (429s), ``async_hi.client.conflicts`` (409s), ``async_hi.client.active_requests``
  (in flight), ``async_hi.limiter.wait.duration`` (seconds from asking the
  limiter to sending), ``async_hi.limiter.rate`` (the limiter's current rate,
  read at each collection, one series per limiter: ``async_hi.limiter.scope``)
  and ``async_hi.client.updates`` (by ``async_hi.update.outcome``).

:func:`instrument` is the entry point: it chains an :class:`Instrumentation`
(itself an ``on_event`` hook) before the client's own hook and hands it the
client's limiter for the rate gauge.

Only ids, operation names, numbers and codes reach the telemetry, never a
DICOM attribute value (the events carry none). Our choices where the
conventions are silent: ``rpc.service`` is botocore's service id, as
opentelemetry-instrumentation-botocore sets it (the AWS SDK span convention:
https://opentelemetry.io/docs/specs/semconv/cloud-providers/aws-sdk/); HTTP
status and errors use the stable ``http.response.status_code`` and
``error.type``; a cancelled request is ``error.type=cancelled`` without an
error status; our own attributes and metrics are under ``async_hi.``.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover (the test runs it in a subprocess)
    raise ImportError(
        "async_hi.otel needs OpenTelemetry: install the extra with pip install 'async-hi[otel]'"
    ) from exc

from async_hi._events import (
    Event,
    EventHook,
    RateChanged,
    RequestFinished,
    RequestStarted,
    Retrying,
    UpdateFinished,
    UpdateStarted,
    Waiting,
)
from async_hi._limiter import RateLimiter
from async_hi._otel_gauge import rate_gauge

if TYPE_CHECKING:
    from async_hi._client import HealthImagingClient

__all__ = ["Instrumentation", "instrument"]

SERVICE = "Medical Imaging"  # botocore's serviceId of medical-imaging
UPDATE_SPAN = "update_image_set_metadata"
_FAILED_OUTCOMES = frozenset({"error", "update-failed"})
#: seconds: a token is usually free (0) or a few intervals away (4 s each at the default update quota)
_WAIT_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(slots=True)
class _Update:
    span: trace.Span
    token: Token[otel_context.Context] | None  # None: a span made after the fact, never current
    requests: int = 0
    conflicts: int = 0
    throttles: int = 0
    retries: int = 0
    waits: int = 0
    limiter_wait: float = 0.0


@dataclass(slots=True)
class _Request:
    operation: str
    span: trace.Span
    token: Token[otel_context.Context]
    attrs: dict[str, AttributeValue] = field(default_factory=dict)


class Instrumentation:
    """The event hook that turns a client's events into spans and metrics (see the module docstring).

    Made by :func:`instrument`; calling it with an event is all it does.

    Args:
        limiter: read for the ``async_hi.limiter.rate`` gauge (at each collection).
        tracer_provider: spans go here (default: the global provider).
        meter_provider: metrics go here (default: the global provider).
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("async_hi", _version(), tracer_provider=tracer_provider)
        meter = metrics.get_meter("async_hi", _version(), meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "async_hi.client.requests", "{request}", "Requests sent (every attempt), by operation and status"
        )
        self._throttles = meter.create_counter(
            "async_hi.client.throttles", "{request}", "Requests answered 429 (ThrottlingException)"
        )
        self._conflicts = meter.create_counter(
            "async_hi.client.conflicts", "{request}", "Requests answered 409 (ConflictException)"
        )
        self._active = meter.create_up_down_counter(
            "async_hi.client.active_requests", "{request}", "Requests sent and not yet answered"
        )
        self._wait = meter.create_histogram(
            "async_hi.limiter.wait.duration",
            "s",
            "Time from asking the limiter for a slot and a token to sending",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )
        self._updates = meter.create_counter(
            "async_hi.client.updates", "{update}", "Updates brought to an end, by outcome"
        )
        rate_gauge(meter).add(limiter)
        self._update: ContextVar[_Update | None] = ContextVar("async_hi_otel_update", default=None)
        self._request: ContextVar[_Request | None] = ContextVar("async_hi_otel_request", default=None)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestStarted):
            self._request_started(event)
        elif isinstance(event, RequestFinished):
            self._request_finished(event)
        elif isinstance(event, UpdateStarted):
            self._update_started(event)
        elif isinstance(event, UpdateFinished):
            self._update_finished(event)
        else:
            self._span_event(event)

    # -- updates ---------------------------------------------------------------

    def _update_started(self, e: UpdateStarted) -> None:
        span = self._tracer.start_span(UPDATE_SPAN, attributes={"async_hi.image_set_id": e.image_set_id})
        token = otel_context.attach(trace.set_span_in_context(span))
        self._update.set(_Update(span, token))

    def _update_finished(self, e: UpdateFinished) -> None:
        u = self._update.get()
        if u is None:  # hooked in while the update ran: a span from what the event knows
            u = _Update(self._retro_span(UPDATE_SPAN, e.seconds, trace.SpanKind.INTERNAL), None)
            u.span.set_attribute("async_hi.image_set_id", e.image_set_id)
        elif u.token is not None:
            self._update.set(None)
            otel_context.detach(u.token)
        span = u.span
        span.set_attributes(
            {
                "async_hi.update.outcome": e.outcome,
                "async_hi.update.attempts": e.attempts,
                "async_hi.update.requests": u.requests,
                "async_hi.update.conflicts": u.conflicts,
                "async_hi.update.throttles": u.throttles,
                "async_hi.update.retries": u.retries,
                "async_hi.update.waits": u.waits,
                "async_hi.update.limiter_wait_seconds": u.limiter_wait,
            }
        )
        if e.version_id is not None:
            span.set_attribute("async_hi.update.version_id", e.version_id)
        if e.outcome in _FAILED_OUTCOMES:
            span.set_status(trace.StatusCode.ERROR, e.outcome)
        span.end()
        self._updates.add(1, {"async_hi.update.outcome": e.outcome})

    # -- requests --------------------------------------------------------------

    def _request_started(self, e: RequestStarted) -> None:
        attrs: dict[str, AttributeValue] = {"rpc.method": e.operation}
        span = self._tracer.start_span(
            f"{SERVICE}.{e.operation}", kind=trace.SpanKind.CLIENT, attributes=_rpc_attributes(e, e.queued)
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._request.set(_Request(e.operation, span, token, attrs))
        self._active.add(1, attrs)
        self._wait.record(e.queued, attrs)
        u = self._update.get()
        if u is not None:
            u.limiter_wait += e.queued

    def _request_finished(self, e: RequestFinished) -> None:
        r = self._request.get()
        if r is not None:
            self._request.set(None)
            otel_context.detach(r.token)
            self._active.add(-1, r.attrs)
            span = r.span
        else:  # hooked in while the request was out
            span = self._retro_span(f"{SERVICE}.{e.operation}", e.seconds, trace.SpanKind.CLIENT)
            span.set_attributes(_rpc_attributes(e, None))
        metric: dict[str, AttributeValue] = {"rpc.method": e.operation}
        if e.status is not None:
            span.set_attribute("http.response.status_code", e.status)
            metric["http.response.status_code"] = e.status
        if e.request_id is not None:
            span.set_attribute("aws.request_id", e.request_id)
        if e.outcome != "ok":
            span.set_attribute("error.type", e.outcome)
            metric["error.type"] = e.outcome
            if e.outcome != "cancelled":
                span.set_status(trace.StatusCode.ERROR, e.outcome)
        span.end()
        self._requests.add(1, metric)
        u = self._update.get()
        if u is not None:
            u.requests += 1
        attrs: dict[str, AttributeValue] = {"rpc.method": e.operation}
        if e.status == 429:
            self._throttles.add(1, attrs)
            if u is not None:
                u.throttles += 1
        elif e.status == 409:
            self._conflicts.add(1, attrs)
            if u is not None:
                u.conflicts += 1

    # -- the rest --------------------------------------------------------------

    def _span_event(self, e: Event) -> None:
        u = self._update.get()
        if u is None:
            return
        if isinstance(e, Retrying):
            u.retries += 1
            u.span.add_event(
                "retry",
                {
                    "rpc.method": e.operation,
                    "attempt": e.attempt,
                    "delay_seconds": e.delay,
                    "reason": e.reason,
                },
            )
        elif isinstance(e, Waiting):
            u.waits += 1
            attrs: dict[str, AttributeValue] = {"reason": e.reason, "delay_seconds": e.delay}
            if e.version_id is not None:
                attrs["version_id"] = e.version_id
            u.span.add_event("wait", attrs)
        elif isinstance(e, RateChanged):
            u.span.add_event("rate_changed", {"rpc.method": e.operation, "rate": e.rate})

    def _retro_span(self, name: str, seconds: float, kind: trace.SpanKind) -> trace.Span:
        start = time.time_ns() - int(seconds * 1e9)
        return self._tracer.start_span(name, kind=kind, start_time=start)


def instrument(
    client: HealthImagingClient,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Instrumentation:
    """Send ``client``'s spans and metrics to OpenTelemetry (before or after it is opened).

    The client's own ``on_event`` hook keeps receiving every event. Instrument a
    client once; instrument each client you make.

    Args:
        client: the client.
        tracer_provider: spans go here (default: the global tracer provider).
        meter_provider: metrics go here (default: the global meter provider).

    Raises:
        ValueError: the client is already instrumented.
    """
    recorder = client._recorder
    hook = recorder.hook
    if isinstance(hook, Instrumentation) or (
        isinstance(hook, _Both) and isinstance(hook.first, Instrumentation)
    ):
        raise ValueError("this client is already instrumented")
    inst = Instrumentation(client.limiter, tracer_provider=tracer_provider, meter_provider=meter_provider)
    recorder.hook = inst if hook is None else _Both(inst, hook)
    return inst


class _Both:
    """Two hooks as one: the second sees every event even when the first raised."""

    def __init__(self, first: EventHook, second: EventHook) -> None:
        self.first = first
        self.second = second

    def __call__(self, event: Event) -> None:
        try:
            self.first(event)
        finally:
            self.second(event)


def _rpc_attributes(e: RequestStarted | RequestFinished, queued: float | None) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "rpc.system": "aws-api",
        "rpc.service": SERVICE,
        "rpc.method": e.operation,
    }
    if e.image_set_id is not None:
        attrs["async_hi.image_set_id"] = e.image_set_id
    if queued is not None:
        attrs["async_hi.limiter.wait_seconds"] = queued
    return attrs


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("async-hi")
    except PackageNotFoundError:  # pragma: no cover (run from a checkout without installing)
        return ""
