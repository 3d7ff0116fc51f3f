"""PD: protocol details. Content types, unknown keys, request ids, booleans and query parameters."""

from __future__ import annotations

import collections

from conformance._checks._common import MUST, SHOULD, codes_with_status, current_version
from conformance._context import MALFORMED, VALIDATION, Context
from conformance._http import Exchange
from conformance._registry import Phase, check


@check("PD01", MUST, "a body without a JSON Content-Type -> 400 or 415")
async def pd01(ctx: Context) -> None:
    v = await current_version(ctx)
    codes = MALFORMED + codes_with_status(415)
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded"):
        label = f"Content-Type {ctype}" if ctype else "no Content-Type"
        probe = ctx.update_probe(label, ctx.marker_update(), version=v, content_type=ctype)
        await ctx.refused(probe, {400, 415}, codes, basis="semantics")


@check("PD02", SHOULD, "Content-Type: application/json; charset=utf-8 is accepted", writes=True)
async def pd02(ctx: Context) -> None:
    v = (await ctx.settled()).version
    ex = await ctx.write(
        "update with charset=utf-8", ctx.marker_update(), v, content_type="application/json; charset=utf-8"
    )
    ctx.expect(ex, {200}, None)


@check("PD03", SHOULD, "an unknown top-level key beside a valid union member -> 400")
async def pd03(ctx: Context) -> None:
    v = await current_version(ctx)
    body = {**ctx.marker_update(), "comment": "x"}
    await ctx.refused(ctx.update_probe("unknown key beside DICOMUpdates", body, version=v), {400}, VALIDATION)


async def _answered(ctx: Context) -> list[Exchange]:
    statuses = [ex.status for ex in ctx.session.exchanges if ex.status is not None]
    if not any(s < 300 for s in statuses):
        await ctx.get_image_set()
    if not any(s >= 400 for s in statuses):
        probe = ctx.update_probe("latestVersion=abc", ctx.marker_update(), version="abc")
        if ctx.vet(probe, "model"):
            await ctx.send(probe)
    return [ex for ex in ctx.session.exchanges if ex.status is not None]


@check("PD04", MUST, "a non-empty x-amzn-RequestId on every answer, success and error", phase=Phase.JUDGE)
async def pd04(ctx: Context) -> None:
    answered = await _answered(ctx)
    for ex in answered:
        if not (ex.header("x-amzn-requestid") or "").strip():
            ctx.fail(f"{ex.label}: the {ex.status} answer has no x-amzn-RequestId", ex)
    if not ctx.failures:
        ctx.note(f"{len(answered)} answers examined")


@check("PD05", SHOULD, "request ids are unique", phase=Phase.JUDGE)
async def pd05(ctx: Context) -> None:
    answered = await _answered(ctx)
    ids = collections.Counter(
        ex.header("x-amzn-requestid") for ex in answered if ex.header("x-amzn-requestid")
    )
    repeated = {rid: n for rid, n in ids.items() if n > 1}
    if repeated:
        _rid, n = max(repeated.items(), key=lambda kv: kv[1])
        ctx.fail(f"{len(repeated)} request ids repeat (one of them {n} times among {len(answered)} answers)")


@check("PD06", MUST, "force=true and force=false are accepted", writes=True)
async def pd06(ctx: Context) -> None:
    for value in ("false", "true"):
        v = (await ctx.settled()).version
        ex = await ctx.write(f"update with force={value}", ctx.marker_update(), v, query=[("force", value)])
        ctx.expect(ex, {200}, None)


@check("PD07", SHOULD, "query order is irrelevant; a repeated latestVersion -> 400", phase=Phase.WRITE)
async def pd07(ctx: Context) -> None:
    v = await current_version(ctx)
    probe = ctx.update_probe(
        "latestVersion given twice", ctx.marker_update(), version=None, query=[("latestVersion", v)] * 2
    )
    await ctx.refused(probe, {400}, VALIDATION)
    if not ctx.target.allow_writes:
        ctx.note("query order not tried: needs --allow-writes")
        return
    v = (await ctx.settled()).version
    ex = await ctx.send(
        ctx.update_probe(
            "force before latestVersion",
            ctx.marker_update(),
            version=None,
            query=[("force", "false"), ("latestVersion", v)],
        )
    )
    ctx.expect(ex, {200}, None)
    await ctx.settled()
