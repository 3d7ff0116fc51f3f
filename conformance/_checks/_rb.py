"""RB: robustness. Garbage in gets a prompt 4xx, never a 5xx or a hang."""

from __future__ import annotations

import base64

from conformance._checks._common import MUST, SHOULD, codes_with_status, current_version
from conformance._context import MALFORMED, VALIDATION, Context
from conformance._http import Probe
from conformance._registry import Phase, check


@check("RB01", MUST, "invalid JSON (unclosed, trailing comma, comments, single quotes, garbage) -> 400")
async def rb01(ctx: Context) -> None:
    v = await current_version(ctx)
    bodies = {
        "unclosed JSON": b'{"revertToVersionId": "1"',
        "JSON {[": b"{[",
        "trailing comma": b'{"revertToVersionId": "1",}',
        "JSON with a comment": b'/* c */ {"revertToVersionId": "1"}',
        "single quotes": b"{'revertToVersionId': '1'}",
        "trailing garbage": b'{"revertToVersionId": "1"} x',
        "NaN value": b'{"revertToVersionId": NaN}',
        "not UTF-8": b'{"revertToVersionId": "\xff"}',
    }
    for label, body in bodies.items():
        await ctx.refused(ctx.update_probe(label, body, version=v), {400}, MALFORMED)


@check("RB02", MUST, 'JSON of the wrong type ([], 10, null, "x", true) -> 400')
async def rb02(ctx: Context) -> None:
    v = await current_version(ctx)
    for body in (b"[]", b"10", b"null", b'"x"', b"true"):
        await ctx.refused(ctx.update_probe(f"body {body.decode()}", body, version=v), {400}, MALFORMED)


@check("RB03", MUST, "empty body -> 400")
async def rb03(ctx: Context) -> None:
    v = await current_version(ctx)
    await ctx.refused(ctx.update_probe("empty body", b"", version=v), {400}, MALFORMED)


@check("RB04", MUST, "a body over 10 MB -> 400 or 413, promptly, never 5xx")
async def rb04(ctx: Context) -> None:
    v = await current_version(ctx)
    pad = base64.b64encode(b"\0" * 7_900_000).decode()
    body = ('{"DICOMUpdates":{"updatableAttributes":"' + pad + '"}}').encode()
    codes = MALFORMED + codes_with_status(413)
    ex = await ctx.refused(ctx.update_probe(f"{len(body)} byte body", body, version=v), {400, 413}, codes)
    bound = 3 * ctx.settings.time_bound
    if ex is not None and ex.status is not None and ex.elapsed > bound:
        ctx.fail(f"{ex.label}: answered after {ex.elapsed:.1f} s (bound {bound:g} s)", ex)


@check("RB05", MUST, "GET / PUT / DELETE on the update route -> 403/404/405, never 2xx or 5xx")
async def rb05(ctx: Context) -> None:
    v = await current_version(ctx)
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        probe = Probe(
            operation="UpdateImageSetMetadata",
            label=f"{method} on the update route",
            method=method,
            path=ctx.path("updateImageSetMetadata"),
            query=(("latestVersion", v),),
            content_type=None,
        )
        await ctx.refused(probe, {403, 404, 405}, codes_with_status(403, 404, 405))


@check("RB06", SHOULD, "JSON nested 10,000 levels deep -> 400, not 5xx")
async def rb06(ctx: Context) -> None:
    v = await current_version(ctx)
    body = b'{"revertToVersionId":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    await ctx.refused(ctx.update_probe("10,000 nested arrays", body, version=v), {400}, MALFORMED)


@check("RB07", SHOULD, "very long id strings -> a prompt 400")
async def rb07(ctx: Context) -> None:
    v = await current_version(ctx)
    long_id = "a" * 3000
    for label, d, i in (
        ("3000-character datastoreId", long_id, None),
        ("3000-character imageSetId", None, long_id),
    ):
        ex = await ctx.refused(
            ctx.update_probe(label, ctx.marker_update(), version=v, d=d, i=i), {400}, VALIDATION
        )
        if ex is not None and ex.elapsed > ctx.settings.time_bound:
            ctx.fail(f"{label}: answered after {ex.elapsed:.1f} s", ex)


@check("RB09", SHOULD, "every answer arrives within the time bound (--time-bound)", phase=Phase.JUDGE)
async def rb09(ctx: Context) -> None:
    bound = ctx.settings.time_bound
    slow = [ex for ex in ctx.session.exchanges if ex.status is None or ex.elapsed > bound]
    for ex in slow:
        if ex.status is None:
            ctx.fail(f"{ex.label}: no answer ({ex.error})", ex)
        else:
            ctx.fail(f"{ex.label}: answered after {ex.elapsed:.2f} s (bound {bound:g} s)", ex)
    if not slow:
        worst = max((ex.elapsed for ex in ctx.session.exchanges), default=0.0)
        ctx.note(f"{len(ctx.session.exchanges)} answers, slowest {worst * 1000:.0f} ms")
