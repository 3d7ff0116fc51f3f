"""AU: authentication. Unsigned, tampered, mis-scoped or stale requests get 403 and change nothing."""

from __future__ import annotations

from conformance._checks._common import AUTH_CODES, MUST, current_version
from conformance._context import Context, digest
from conformance._http import Probe, Signing
from conformance._registry import check

READS = (
    ("GetImageSet", "getImageSet"),
    ("GetImageSetMetadata", "getImageSetMetadata"),
    ("ListImageSetVersions", "listImageSetVersions"),
)


async def _refused(ctx: Context, *modes: Signing) -> None:
    v = await current_version(ctx)
    for mode in modes:
        probe = ctx.update_probe(f"update, {mode.value}", ctx.marker_update(), version=v, signing=mode)
        await ctx.refused(probe, {403}, AUTH_CODES, basis="semantics")


@check("AU01", MUST, "no Authorization header -> 403 (the update and the three reads)")
async def au01(ctx: Context) -> None:
    await _refused(ctx, Signing.UNSIGNED)
    for operation, route in READS:
        probe = Probe(
            operation=operation,
            label=f"{operation}, unsigned",
            path=ctx.path(route),
            signing=Signing.UNSIGNED,
        )
        await ctx.refused(probe, {403}, AUTH_CODES, basis="semantics")


@check("AU02", MUST, "tampered signature -> 403")
async def au02(ctx: Context) -> None:
    await _refused(ctx, Signing.TAMPERED)


@check("AU03", MUST, "signed for the wrong service or region -> 403")
async def au03(ctx: Context) -> None:
    await _refused(ctx, Signing.WRONG_SERVICE, Signing.WRONG_REGION)


@check("AU04", MUST, "X-Amz-Date older than 15 minutes -> 403 (credential expiry)")
async def au04(ctx: Context) -> None:
    await _refused(ctx, Signing.EXPIRED)


@check("AU05", MUST, "body changed after signing -> 403")
async def au05(ctx: Context) -> None:
    await _refused(ctx, Signing.BODY_CHANGED)


@check("AU06", MUST, "a refused (unsigned or badly signed) update changes nothing")
async def au06(ctx: Context) -> None:
    before = await ctx.snapshot()
    doc_before = digest(await ctx.metadata(before.version))
    for mode in (Signing.UNSIGNED, Signing.TAMPERED, Signing.WRONG_REGION):
        probe = ctx.update_probe(
            f"update, {mode.value}", ctx.marker_update(), version=before.version, signing=mode
        )
        if ctx.vet(probe, "semantics"):
            await ctx.send(probe)
    after = await ctx.settled()
    if after.version != before.version:
        ctx.fail(f"refused updates moved the version from {before.version} to {after.version}")
    elif digest(await ctx.metadata(after.version)) != doc_before:
        ctx.fail(f"refused updates changed the metadata of version {before.version}")
