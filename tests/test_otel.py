"""async_hi.otel against the real emulator: the SDK's in-memory exporter and reader, judged by the emulator.

The emulator's request log (operation, status, error code, request id) and its
version history are the oracle; the spans and metric points must agree with
them, and no DICOM value may reach either.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from async_hi import (
    DEFAULT_QUOTAS,
    HealthImagingClient,
    LimiterConfig,
    MetadataUpdate,
    Quota,
    RateChanged,
    RetryPolicy,
    UpdateBuilder,
    UpdateFinished,
)
from async_hi._events import Event
from async_hi.emulator import Emulator, FaultConfig
from async_hi.otel import instrument

pytestmark = pytest.mark.anyio

UPD = "UpdateImageSetMetadata"
RATE = 200.0
FAST = LimiterConfig(quotas={op: Quota(rate=RATE, burst=5) for op in DEFAULT_QUOTAS}, headroom=0.0)
QUICK = RetryPolicy(base_delay=0.02, max_delay=0.2, poll_base=0.01, poll_max=0.05, max_attempts=30)
SECRET = "OTEL-PHI-7319"  # a DICOM value: must reach no span and no metric


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def client(self, emu: Emulator, **kw: Any) -> HealthImagingClient:
        hi = HealthImagingClient(
            endpoint_url=emu.endpoint_url,
            region=emu.region,
            aws_access_key_id=emu.access_key_id,
            aws_secret_access_key=emu.secret_access_key,
            limiter_config=FAST,
            **kw,
        )
        instrument(hi, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        return hi

    def points(self, name: str) -> list[Any]:
        data: MetricsData | None = self.reader.get_metrics_data()
        assert data is not None
        return [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]


def sums(points: list[Any], *keys: str) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for p in points:
        out[tuple(p.attributes.get(k) for k in keys)] += p.value
    return +out


def study(d: str, i: str, desc: str, version: str | None = None) -> MetadataUpdate:
    return UpdateBuilder(d, i, latest_version_id=version).study(StudyDescription=desc).build()


async def test_spans_and_metrics_of_a_run_with_conflicts_and_throttles(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    # seed 3: the 1st and 4th update requests draw a 429, then about 3 in 10
    emulator.reconfigure(faults=FaultConfig(seed=3, throttle_rate=0.3, operations=frozenset({UPD})))
    tel = Telemetry()
    heard: list[list[Event]] = [[], [], []]
    clients = [tel.client(emulator, retry=QUICK, on_event=heard[n].append) for n in range(3)]

    def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate:
        return update  # the same change on top of the new version

    async def writer(hi: HealthImagingClient, n: int) -> None:
        async with hi:
            # the first writes go at version 1 without a read: all three meet, two are refused (409)
            first = study(d, i, f"{SECRET}-{n}-a")
            await hi.update_image_set_metadata(first, rebase=rebase, version_hint="1")
            await hi.update_image_set_metadata(study(d, i, f"{SECRET}-{n}-b"), rebase=rebase)

    job = tel.tracer_provider.get_tracer("test").start_span("job")
    with trace.use_span(job, end_on_exit=True):
        async with anyio.create_task_group() as tg:
            for n, hi in enumerate(clients):
                tg.start_soon(writer, hi, n)

    log = emulator.requests
    spans = tel.spans.get_finished_spans()
    requests = [s for s in spans if s.kind == SpanKind.CLIENT]
    updates = [s for s in spans if s.name == "update_image_set_metadata"]
    statuses = Counter(r.status for r in log)
    assert statuses[409] >= 2, statuses  # the run really had conflicts...
    assert statuses[429] >= 1, statuses  # ...and throttles

    # one CLIENT span per request the emulator saw, with its operation, status, error code and request id
    def attrs(s: ReadableSpan) -> Mapping[str, Any]:
        assert s.attributes is not None
        return s.attributes

    assert Counter(
        (
            attrs(s)["rpc.method"],
            attrs(s).get("http.response.status_code"),
            attrs(s).get("error.type"),
            attrs(s).get("aws.request_id"),
        )
        for s in requests
    ) == Counter((r.operation, r.status, r.error_code, r.request_id) for r in log)
    for s in requests:
        a = attrs(s)
        assert (s.name, a["rpc.system"], a["rpc.service"]) == (
            f"Medical Imaging.{a['rpc.method']}",
            "aws-api",
            "Medical Imaging",
        )
        assert a["async_hi.image_set_id"] == i
        assert (s.status.status_code == StatusCode.ERROR) == (a["http.response.status_code"] != 200)

    # one span per update, under the caller's span; every request under its update, in one trace
    assert len(updates) == 6
    job_id = job.get_span_context().span_id
    assert all(u.parent is not None and u.parent.span_id == job_id for u in updates)
    by_id = {u.context.span_id: u for u in updates}
    children: dict[int, list[ReadableSpan]] = {sid: [] for sid in by_id}
    for s in requests:
        assert s.parent is not None
        children[s.parent.span_id].append(s)
        assert s.context.trace_id == job.get_span_context().trace_id
    for sid, u in by_id.items():
        a, kids = attrs(u), children[sid]
        codes = Counter(attrs(k)["http.response.status_code"] for k in kids)
        assert a["async_hi.update.attempts"] == sum(attrs(k)["rpc.method"] == UPD for k in kids)
        assert a["async_hi.update.requests"] == len(kids)
        assert (a["async_hi.update.conflicts"], a["async_hi.update.throttles"]) == (codes[409], codes[429])
        assert a["async_hi.update.outcome"] == "applied"
        assert a["async_hi.update.version_id"] in {v["versionId"] for v in emulator.history(d, i)}
    made = [v for v in emulator.history(d, i) if v["origin"] == "update"]
    assert len(made) == 6  # each update applied once: the six "applied" spans are true

    # metrics agree with the emulator's log
    tally = Counter((r.operation, r.status, r.error_code) for r in log)
    assert sums(
        tel.points("async_hi.client.requests"), "rpc.method", "http.response.status_code", "error.type"
    ) == (tally)
    per_op = {op: Counter(r.status for r in log if r.operation == op) for op in {r.operation for r in log}}
    assert sums(tel.points("async_hi.client.throttles"), "rpc.method") == +Counter(
        {(op,): c[429] for op, c in per_op.items()}
    )
    assert sums(tel.points("async_hi.client.conflicts"), "rpc.method") == +Counter(
        {(op,): c[409] for op, c in per_op.items()}
    )
    assert all(p.value == 0 for p in tel.points("async_hi.client.active_requests"))
    waits = {p.attributes["rpc.method"]: p for p in tel.points("async_hi.limiter.wait.duration")}
    assert {op: w.count for op, w in waits.items()} == {op: c.total() for op, c in per_op.items()}
    assert all(w.min >= 0 for w in waits.values())
    assert sums(tel.points("async_hi.client.updates"), "async_hi.update.outcome") == Counter(
        {("applied",): 6}
    )

    # the limiter rate of each client (told apart by scope), as the last RateChanged said, else the ceiling
    rates = {
        (p.attributes["async_hi.limiter.scope"], p.attributes["rpc.method"]): p.value
        for p in tel.points("async_hi.limiter.rate")
    }
    scopes = sorted({scope for scope, _ in rates}, key=lambda s: (len(s), s))  # instrumented in order
    assert len(scopes) == 3
    for scope, events in zip(scopes, heard, strict=True):
        changes = [e.rate for e in events if isinstance(e, RateChanged) and e.operation == UPD]
        assert rates[(scope, UPD)] == (changes[-1] if changes else RATE)
        assert rates[(scope, "ListImageSetVersions")] == RATE
        # the client's own hook still hears everything
        assert sum(isinstance(e, UpdateFinished) for e in events) == 2

    # no DICOM value anywhere
    assert all(SECRET not in s.to_json() for s in spans)
    data = tel.reader.get_metrics_data()
    assert data is not None
    assert SECRET not in data.to_json()


async def test_a_cancelled_update_ends_its_spans_and_leaves_nothing_in_flight(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.reconfigure(
        faults=FaultConfig(slow_rate=1.0, slow_seconds=1.0, operations=frozenset({"GetImageSet"}))
    )
    tel = Telemetry()
    async with tel.client(emulator) as hi:
        with pytest.raises(ValueError, match="already instrumented"):
            instrument(hi, tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider)
        with anyio.move_on_after(0.2):
            await hi.update_image_set_metadata(study(d, i, SECRET))
        stats = hi.stats()
    spans = {s.name: s for s in tel.spans.get_finished_spans()}
    assert spans.keys() == {"update_image_set_metadata", "Medical Imaging.GetImageSet"}
    upd = spans["update_image_set_metadata"].attributes
    assert upd is not None
    a = dict(upd)
    assert a.pop("async_hi.update.limiter_wait_seconds") >= 0
    assert a == {
        "async_hi.image_set_id": i,
        "async_hi.update.outcome": "cancelled",
        "async_hi.update.attempts": 0,
        "async_hi.update.requests": 1,
        "async_hi.update.conflicts": 0,
        "async_hi.update.throttles": 0,
        "async_hi.update.retries": 0,
        "async_hi.update.waits": 0,
    }
    read = spans["Medical Imaging.GetImageSet"]
    assert read.attributes is not None
    assert read.attributes["error.type"] == "cancelled"
    assert "http.response.status_code" not in read.attributes
    assert all(p.value == 0 for p in tel.points("async_hi.client.active_requests"))
    assert stats["GetImageSet"].calls == 0  # a cancelled request is not counted


def test_without_the_extra_the_package_works_and_the_module_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the extra were not installed
        "import async_hi\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry') and sys.modules[m]]\n"
        "try:\n"
        "    import async_hi.otel\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "pip install 'async-hi[otel]'" in out.stdout
