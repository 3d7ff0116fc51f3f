"""The ``async_hi.limiter.rate`` gauge: one observable instrument per meter, reading every limiter.

An SDK meter keeps the first callback registered under an instrument name and
drops later ones, so instrumenting a second client must not create a second
gauge: each meter gets one, and each :func:`async_hi.otel.instrument` adds its
client's limiter to it. Limiters are told apart by ``async_hi.limiter.scope``
(their ``scope``, with ``#2``, ``#3``... for a repeat) and held weakly.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

from opentelemetry import metrics

from async_hi._limiter import RateLimiter
from async_hi.contract import OPERATIONS

__all__ = ["rate_gauge"]


class _RateGauge:
    """The gauge of one meter and the limiters it reads (see the module docstring)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()  # collections run on the exporter's thread
        self._limiters: list[tuple[Callable[[], RateLimiter | None], str]] = []
        meter.create_observable_gauge(
            "async_hi.limiter.rate",
            [self._observe],
            "{request}/s",
            "The rate the limiter holds each operation to now",
        )

    def add(self, limiter: RateLimiter) -> None:
        with self._lock:
            live = [(ref, scope) for ref, scope in self._limiters if ref() is not None]
            if any(ref() is limiter for ref, _ in live):
                self._limiters = live
                return
            scope = str(getattr(limiter, "scope", type(limiter).__name__))
            taken = {s for _, s in live}
            label, n = scope, 1
            while label in taken:
                n += 1
                label = f"{scope}#{n}"
            try:
                ref: Callable[[], RateLimiter | None] = weakref.ref(limiter)
            except TypeError:  # a limiter without __weakref__ is kept
                ref = lambda: limiter  # noqa: E731
            self._limiters = [*live, (ref, label)]

    def _observe(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self._lock:
            limiters = [(ref(), scope) for ref, scope in self._limiters]
        return [
            metrics.Observation(lim.current_rate(op), {"rpc.method": op, "async_hi.limiter.scope": scope})
            for lim, scope in limiters
            if lim is not None
            for op in OPERATIONS
        ]


_GAUGES: weakref.WeakKeyDictionary[metrics.Meter, _RateGauge] = weakref.WeakKeyDictionary()
_GAUGES_LOCK = threading.Lock()


def rate_gauge(meter: metrics.Meter) -> _RateGauge:
    """The gauge of ``meter``, made on first use."""
    with _GAUGES_LOCK:
        gauge = _GAUGES.get(meter)
        if gauge is None:
            gauge = _GAUGES[meter] = _RateGauge(meter)
        return gauge
