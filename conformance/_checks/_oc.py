"""OC: optimistic concurrency. Stale or racing writes are refused with 409, and change nothing."""

from __future__ import annotations

import anyio

from conformance._checks._common import MUST, SHOULD, codes_with_status
from conformance._context import CONFLICT, VALIDATION, Abort, Context, Skip
from conformance._http import Exchange
from conformance._registry import Phase, check


@check("OC01", MUST, "latestVersion = current - 1 -> 409 ConflictException")
async def oc01(ctx: Context) -> None:
    v = (await ctx.snapshot()).version
    stale = str(int(v) - 1)
    probe = ctx.update_probe(f"stale latestVersion {stale} (current {v})", ctx.marker_update(), version=stale)
    await ctx.refused(probe, {409}, CONFLICT, basis="semantics")


@check("OC02", MUST, "latestVersion > current -> 409 (or 400)")
async def oc02(ctx: Context) -> None:
    v = (await ctx.snapshot()).version
    ahead = str(int(v) + 1)
    probe = ctx.update_probe(
        f"latestVersion {ahead} ahead of current {v}", ctx.marker_update(), version=ahead
    )
    await ctx.refused(probe, {409, 400}, CONFLICT + VALIDATION, basis="semantics")


@check(
    "OC03",
    MUST,
    "parallel updates with the same latestVersion -> exactly one 200, the rest 409/429",
    writes=True,
)
async def oc03(ctx: Context) -> None:
    before = await ctx.settled()
    n = ctx.settings.writers
    results: list[Exchange] = []

    async def one(k: int) -> None:
        probe = ctx.update_probe(f"parallel writer {k + 1}/{n}", ctx.marker_update(), version=before.version)
        results.append(await ctx.send(probe))

    async with anyio.create_task_group() as tg:
        for k in range(n):
            tg.start_soon(one, k)
    accepted = [ex for ex in results if ex.status == 200]
    if len(accepted) > 1:
        ctx.fail(
            f"{len(accepted)} of {n} parallel updates with latestVersion {before.version} were accepted "
            "(updates lost)",
            accepted[1],
        )
    elif not accepted:
        ctx.fail(f"none of {n} parallel updates with latestVersion {before.version} was accepted", results[0])
    allowed = codes_with_status(409, 429)
    for ex in results:
        if ex.status != 200:
            ctx.expect(ex, {409, 429}, allowed)
    after = await ctx.settled()
    if accepted and int(after.version) != int(before.version) + 1:
        ctx.fail(f"after one accepted update the version went from {before.version} to {after.version}")


@check("OC04", MUST, "a write while the image set is LOCKED -> 409", writes=True)
async def oc04(ctx: Context) -> None:
    before = await ctx.settled()
    first = await ctx.write("update that locks the image set", ctx.marker_update(), before.version)
    if first.status != 200:
        raise Abort(f"a valid update was not accepted ({first.status})", first)
    body = first.json_or_none()
    new = body.get("latestVersionId") if isinstance(body, dict) else None
    new = new if isinstance(new, str) and new.isdigit() else str(int(before.version) + 1)
    seen: list[str] = []

    async def still_locked() -> None:
        # checked after the pacer's wait, right before the write: at 0.25 tps the window may be over
        snap = await ctx.snapshot()
        if snap.state != "LOCKED" and snap.workflow not in ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY"):
            raise Skip("the image set was no longer LOCKED when the next write could be sent")
        seen.append(snap.state)

    probe = ctx.update_probe(f"update while LOCKED (latestVersion {new})", ctx.marker_update(), version=new)
    ex = await ctx.send(probe, gate=still_locked)
    if ex.status == 200:
        ctx.fail(f"{probe.label}: accepted although GetImageSet said {seen[-1]} just before", ex)
    else:
        ctx.expect(ex, {409}, CONFLICT)


@check(
    "OC05", SHOULD, "an accepted update reaches ACTIVE + UPDATED within the settle timeout", phase=Phase.WRITE
)
async def oc05(ctx: Context) -> None:
    ctx.require_writes()
    if ctx.session.stalled:
        ctx.fail(ctx.session.stalled)
        return
    first = await ctx.first_write()
    body = first.exchange.json_or_none()
    new = body.get("latestVersionId") if isinstance(body, dict) else None
    await ctx.settled()
    if not isinstance(new, str):
        raise Abort("the accepted update did not say its new version", first.exchange)
    snap = await ctx.snapshot(new)
    if snap.workflow != "UPDATED":
        ctx.fail(f"version {new} ended {snap.state}/{snap.workflow}, expected ACTIVE/UPDATED")
