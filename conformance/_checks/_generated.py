"""RB08: property-based. Requests of a valid shape, generated from the model, never get a 5xx.

Hypothesis draws requests from strategies built by walking the operation's
input shape in botocore's model (patterns become ``from_regex``, unions one of
their members, blobs bytes within the model's lengths, or documents shaped
like image set metadata). Every request is checked valid against the model
before it is sent. ``latestVersion`` is never the current version, so no
generated request can be accepted as a write by a conformant endpoint.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.from_thread
from botocore.model import Shape

from async_hi import contract
from async_hi.levels import Level, levels_table
from conformance import _model
from conformance._checks._common import MUST, other_id
from conformance._context import Context, blob
from conformance._http import Exchange, Probe
from conformance._registry import check

try:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dependency; keep a readable skip anyway
    st = None  # type: ignore[assignment]

_BLOB_CAP = 4096  # bytes of random blob content (the model allows 30000; larger adds time, not coverage)


def _text_for(shp: Shape) -> Any:
    meta = shp.metadata
    enum: list[str] = list(getattr(shp, "enum", None) or [])
    if enum:
        return st.sampled_from(enum)
    lo, hi = int(meta.get("min", 0)), int(meta.get("max", 64))
    if "pattern" in meta:
        base = st.from_regex(contract.compiled_pattern(meta["pattern"]), fullmatch=True)
        return base.filter(lambda s: lo <= len(s) <= hi)
    return st.text(min_size=lo, max_size=min(hi, 64))


def _documents() -> Any:
    """Update documents shaped like image set metadata, from the level table's keywords."""
    table = levels_table()
    patient = sorted(k for k, lv in table.items() if lv is Level.PATIENT)
    study = sorted(k for k, lv in table.items() if lv is Level.STUDY)
    values = st.text(alphabet="ABCDEFGHIJ 0123456789^", max_size=16)
    return st.fixed_dictionaries(
        {"SchemaVersion": st.sampled_from([1.1, "1.1"])},
        optional={
            "Patient": st.fixed_dictionaries(
                {"DICOM": st.dictionaries(st.sampled_from(patient), values, max_size=3)}
            ),
            "Study": st.fixed_dictionaries(
                {"DICOM": st.dictionaries(st.sampled_from(study), values, max_size=3)}
            ),
        },
    )


def _blob_for(shp: Shape) -> Any:
    lo = int(shp.metadata.get("min", 0))
    hi = min(int(shp.metadata.get("max", _BLOB_CAP)), _BLOB_CAP)
    raw = st.binary(min_size=lo, max_size=hi)
    docs = _documents().map(lambda d: json.dumps(d).encode()).filter(lambda b: lo <= len(b) <= hi)
    return st.one_of(raw, docs).map(blob)


def strategy_for(shp: Shape) -> Any:
    """A Hypothesis strategy of JSON values valid for ``shp`` (structures, unions, strings, blobs...)."""
    kind = shp.type_name
    if kind == "structure":
        members = shp.members  # type: ignore[attr-defined]
        if shp.metadata.get("union"):
            return st.one_of([strategy_for(m).map(lambda v, n=name: {n: v}) for name, m in members.items()])
        required = {n: strategy_for(members[n]) for n in shp.required_members}
        optional = {n: strategy_for(m) for n, m in members.items() if n not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "string":
        return _text_for(shp)
    if kind == "blob":
        return _blob_for(shp)
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "long"):
        return st.integers(int(shp.metadata.get("min", 0)), int(shp.metadata.get("max", 2**31 - 1)))
    raise NotImplementedError(f"no strategy for {kind} shapes")


def request_strategy(ctx: Context, current: str) -> Any:
    """UpdateImageSetMetadata probes of a valid shape, on the target's ids or fresh ones."""
    op = contract.operation(_model.UPDATE)
    shape = op.input_shape
    assert shape is not None
    members = shape.members
    ids = {
        "datastoreId": st.one_of(st.just(ctx.d), st.just(other_id(ctx.d))),
        "imageSetId": st.one_of(st.just(ctx.i), strategy_for(members["imageSetId"])),
    }
    version = strategy_for(members["latestVersionId"]).filter(lambda s: int(s) != int(current))
    flags = {
        m.serialization["name"]: st.one_of(st.none(), st.booleans())
        for m in members.values()
        if m.serialization.get("location") == "querystring" and m.type_name == "boolean"
    }
    payload = strategy_for(members[shape.serialization["payload"]])

    @st.composite
    def probes(draw: Any) -> Probe:
        d, i, v = draw(ids["datastoreId"]), draw(ids["imageSetId"]), draw(version)
        query = [("latestVersion", v)]
        for name, strat in flags.items():
            flag = draw(strat)
            if flag is not None:
                query.append((name, "true" if flag else "false"))
        body = draw(payload)
        return ctx.update_probe("generated request", body, version=None, query=query, d=d, i=i)

    return probes()


@check("RB08", MUST, "no generated valid-shape request (property-based, from the model) gets a 5xx")
async def rb08(ctx: Context) -> None:
    if st is None:  # pragma: no cover
        ctx.note("hypothesis is not installed")
        return
    current = (await ctx.snapshot()).version
    strategy = request_strategy(ctx, current)
    sent: list[Exchange] = []
    n = ctx.settings.examples

    def explore() -> None:
        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def one(probe: Probe) -> None:
            if not ctx.vet(probe, "semantics"):
                return
            sent.append(anyio.from_thread.run(ctx.send, probe))

        if ctx.settings.seed is not None:
            one = seed(ctx.settings.seed)(one)
        one()

    if n:
        await anyio.to_thread.run_sync(explore)
    for k, ex in enumerate(sent, 1):
        label = f"generated request {k}/{len(sent)}"
        if ex.status is None:
            ctx.fail(f"{label}: no answer ({ex.error})", ex)
        elif ex.status >= 500:
            ctx.fail(f"{label}: {ex.status} {ex.error_code() or ''}".rstrip(), ex)
        elif ex.status < 300:
            ctx.note(f"{label}: accepted although its latestVersion is not current ({ex.status})")
    if not ctx.failures:
        statuses = sorted({ex.status for ex in sent if ex.status is not None})
        ctx.note(f"{len(sent)} generated requests, statuses {', '.join(map(str, statuses))}")
