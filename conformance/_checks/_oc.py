"""OC: optimistic concurrency. Stale or racing writes are refused, and change nothing.

A stale ``latestVersion`` may be refused two ways, and both pass: 404
ResourceNotFoundException "Requested version(s) of ImageSet(s) is not the latest."
(what the real service answers: healthimaging-semantics.md, evidence E1) or 409
ConflictException (what the API reference documents). OC01 reports which one it
saw. A 404 must say "not the latest": without it a client cannot tell a stale
version from a missing image set. OC07 accepts what the real service answers
while an update is applied: the old content, the new one, or 409 "not
consistent yet" (E2).
"""

from __future__ import annotations

import copy
from typing import Any

import anyio

from async_hi.contract import NOT_CONSISTENT_MESSAGE, STALE_VERSION_MESSAGE
from conformance._checks._common import MUST, SHOULD, codes_with_status
from conformance._context import (
    CONFLICT,
    HARMLESS_ATTRIBUTE,
    NOT_FOUND,
    VALIDATION,
    Abort,
    Context,
    Skip,
    digest,
)
from conformance._http import Exchange, Probe
from conformance._registry import Phase, check
from conformance._session import SETTLING

#: the stale-version refusals a client must take as "the version moved"
STALE_STATUSES = (404, 409)
STALE_CODES = NOT_FOUND + CONFLICT
_NOT_LATEST = "not the latest"
_NOT_CONSISTENT = "not consistent"
_IDS = ("DatastoreID", "ImageSetID", "SchemaVersion")


def _message(ex: Exchange) -> str:
    body = ex.json_or_none()
    msg = body.get("message", body.get("Message")) if isinstance(body, dict) else None
    return msg if isinstance(msg, str) else ""


def _answer(ex: Exchange) -> str:
    """How a stale-version refusal was answered, for the report."""
    if ex.status == 404:
        return '404 ResourceNotFoundException "not the latest" (as the real service answers, E1)'
    if ex.status == 409:
        return "409 ConflictException (as the API reference documents)"
    return f"{ex.status} {ex.error_code() or ''}".strip()


def _says_not_latest(ctx: Context, ex: Exchange) -> bool:
    """A 404 refusing a stale version must say so (E1's text); a failure is recorded if not."""
    if ex.status == 404 and _NOT_LATEST not in _message(ex).lower():
        ctx.fail(
            f'{ex.label}: 404 without "{_NOT_LATEST}" in its message (the real service says '
            f'"{STALE_VERSION_MESSAGE}"): a client cannot tell it from a missing image set',
            ex,
        )
        return False
    return True


@check("OC01", MUST, 'latestVersion = current - 1 -> 404 "not the latest" or 409, and which one')
async def oc01(ctx: Context) -> None:
    v = (await ctx.snapshot()).version
    stale = str(int(v) - 1)
    probe = ctx.update_probe(f"stale latestVersion {stale} (current {v})", ctx.marker_update(), version=stale)
    ex = await ctx.refused(probe, STALE_STATUSES, STALE_CODES, basis="semantics")
    if ex is not None and ex.status in STALE_STATUSES and _says_not_latest(ctx, ex):
        ctx.note(f"stale version refused with {_answer(ex)}")


@check("OC02", MUST, "latestVersion > current -> refused (404, 409 or 400), nothing changes")
async def oc02(ctx: Context) -> None:
    v = (await ctx.snapshot()).version
    ahead = str(int(v) + 1)
    probe = ctx.update_probe(
        f"latestVersion {ahead} ahead of current {v}", ctx.marker_update(), version=ahead
    )
    ex = await ctx.refused(probe, (*STALE_STATUSES, 400), STALE_CODES + VALIDATION, basis="semantics")
    if ex is None:
        return
    if ex.status in STALE_STATUSES:
        _says_not_latest(ctx, ex)
    after = (await ctx.snapshot()).version
    if after != v:
        ctx.fail(f"{probe.label}: the version moved from {v} to {after}", ex)
    elif ex.status is not None and ex.status >= 400:
        ctx.note(f"refused with {_answer(ex)}")


@check(
    "OC03",
    MUST,
    'parallel updates with the same latestVersion -> one 200, the rest 409, 404 "not the latest" or 429',
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
    allowed = codes_with_status(409, 429) + NOT_FOUND
    seen: dict[str, int] = {}
    for ex in results:
        if ex.status != 200 and ctx.expect(ex, {404, 409, 429}, allowed) and _says_not_latest(ctx, ex):
            key = f"{ex.status} {ex.error_code()}"
            seen[key] = seen.get(key, 0) + 1
    after = await ctx.settled()
    if accepted and int(after.version) != int(before.version) + 1:
        ctx.fail(f"after one accepted update the version went from {before.version} to {after.version}")
    if seen:
        ctx.note("the others: " + ", ".join(f"{count} x {key}" for key, count in sorted(seen.items())))


@check(
    "OC04", MUST, 'a write while LOCKED -> 409 (404 "not the latest" accepted), nothing changes', writes=True
)
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
        if snap.state != "LOCKED" and snap.workflow not in SETTLING:
            raise Skip("the image set was no longer LOCKED when the next write could be sent")
        seen.append(snap.state)

    probe = ctx.update_probe(f"update while LOCKED (latestVersion {new})", ctx.marker_update(), version=new)
    ex = await ctx.send(probe, gate=still_locked)
    if ex.status == 200:
        ctx.fail(f"{probe.label}: accepted although GetImageSet said {seen[-1]} just before", ex)
        return
    refused = ctx.expect(ex, STALE_STATUSES, STALE_CODES) and _says_not_latest(ctx, ex)
    after = await ctx.settled()
    if after.version != new:
        ctx.fail(f"{probe.label}: refused, yet the image set went on to version {after.version}, not {new}")
    elif refused:
        ctx.note(f"refused with {ex.status} {ex.error_code()}")


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


@check(
    "OC07",
    SHOULD,
    'GetImageSetMetadata right after an update -> old or new content, or 409 "not consistent yet"',
    writes=True,
)
async def oc07(ctx: Context) -> None:
    before = await ctx.settled()
    old = await ctx.metadata(before.version)
    marker = ctx.session.next_marker()
    first = await ctx.write(f"update of {HARMLESS_ATTRIBUTE}", ctx.marker_update(marker), before.version)
    if first.status != 200:
        raise Abort(f"a valid update was not accepted ({first.status})", first)
    body = first.json_or_none()
    new = body.get("latestVersionId") if isinstance(body, dict) else None
    new = new if isinstance(new, str) and new.isdigit() else str(int(before.version) + 1)
    # the documents that may come back, compared without the ids (digests only: no values kept)
    contents = {_content(old): "the previous content", _content(_with_marker(old, marker)): "the new content"}
    seen: list[str] = []
    for version in (None, new):
        what = "latest" if version is None else f"version {version}"
        probe = Probe(
            operation="GetImageSetMetadata",
            label=f"GetImageSetMetadata ({what}) right after the update",
            path=ctx.path("getImageSetMetadata"),
            query=(("version", version),) if version else (),
        )
        ex = await ctx.send(probe, sensitive=True)
        if ex.status == 200:
            found = contents.get(_content(ex.json_or_none()))
            if found is None:
                ctx.fail(f"{probe.label}: 200 with neither the previous nor the new content (a mix?)", ex)
            else:
                seen.append(f"{what}: 200 with {found}")
        elif ex.status == 409 and ex.error_code() in CONFLICT:
            if _NOT_CONSISTENT not in _message(ex).lower():
                ctx.note(f'{probe.label}: 409 without "{_NOT_CONSISTENT}" (E2: "{NOT_CONSISTENT_MESSAGE}")')
            seen.append(f"{what}: 409 not consistent yet")
        else:
            ctx.expect(ex, {200, 409}, CONFLICT)
    await ctx.settled()
    if seen:
        ctx.note("; ".join(seen))


def _with_marker(doc: dict[str, Any], marker: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.setdefault("Study", {}).setdefault("DICOM", {})[HARMLESS_ATTRIBUTE] = marker
    return out


def _content(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    return digest({k: v for k, v in doc.items() if k not in _IDS})
