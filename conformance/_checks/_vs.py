"""VS: versions and effects. Updates make new versions, old versions stay, revert restores content."""

from __future__ import annotations

from typing import Any

from conformance._checks._common import MUST, SHOULD
from conformance._context import HARMLESS_ATTRIBUTE, NOT_FOUND, VALIDATION, Abort, Context, blob, digest
from conformance._http import Probe
from conformance._registry import Phase, check


def _attribute(doc: dict[str, Any]) -> object:
    study = doc.get("Study")
    dicom = study.get("DICOM") if isinstance(study, dict) else None
    return dicom.get(HARMLESS_ATTRIBUTE, None) if isinstance(dicom, dict) else None


def _new_version(ctx: Context, body: Any) -> str:
    value = body.get("latestVersionId") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.isdigit():
        raise Abort("the accepted update did not return a decimal latestVersionId")
    return value


@check("VS01", MUST, "an accepted update returns latestVersionId = previous + 1", writes=True)
async def vs01(ctx: Context) -> None:
    first = await ctx.first_write()
    new = _new_version(ctx, first.exchange.json_or_none())
    want = str(int(first.before.version) + 1)
    if new != want:
        ctx.fail(
            f"update of version {first.before.version} returned latestVersionId {new}, expected {want}",
            first.exchange,
        )


@check(
    "VS02",
    MUST,
    "the update shows in the new version (set, then removed); old versions unchanged",
    writes=True,
)
async def vs02(ctx: Context) -> None:
    first = await ctx.first_write()
    new = _new_version(ctx, first.exchange.json_or_none())
    await ctx.settled()
    if _attribute(await ctx.metadata(new)) != first.marker:
        ctx.fail(f"version {new} does not carry the {HARMLESS_ATTRIBUTE} the update set")
    if digest(await ctx.metadata(first.before.version)) != first.before_digest:
        ctx.fail(f"version {first.before.version} changed after a later update")
    current = await ctx.settled()
    # a removal names the stored value (healthimaging-semantics.md E4); other checks may have
    # written the attribute since the first write
    stored = _attribute(await ctx.metadata(current.version))
    value = first.marker if stored is None else stored
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {HARMLESS_ATTRIBUTE: value}}}
    ex = await ctx.write(
        f"removal of {HARMLESS_ATTRIBUTE}",
        {"DICOMUpdates": {"removableAttributes": blob(doc)}},
        current.version,
    )
    if ex.status != 200:
        ctx.fail(f"a valid removal was not accepted ({ex.status})", ex)
        return
    removed = _new_version(ctx, ex.json_or_none())
    await ctx.settled()
    if _attribute(await ctx.metadata(removed)) is not None:
        ctx.fail(f"version {removed} still has the {HARMLESS_ATTRIBUTE} the update removed")
    if _attribute(await ctx.metadata(current.version)) is None:
        ctx.fail(f"version {current.version} lost its {HARMLESS_ATTRIBUTE} after a later removal")


@check(
    "VS03", MUST, "revert to an older version -> 200, a new higher version with the old content", writes=True
)
async def vs03(ctx: Context) -> None:
    found = ctx.session.found
    if found is None or ctx.session.found_digest is None:
        raise Abort("the image set's starting version is unknown")
    current = await ctx.settled()
    if current.version == found.version:
        await ctx.first_write()
        current = await ctx.settled()
        if current.version == found.version:
            raise Abort("an accepted update did not change the current version")
    ex = await ctx.write(
        f"revert to version {found.version}", {"revertToVersionId": found.version}, current.version
    )
    if not ctx.expect(ex, {200}, None):
        return
    new = _new_version(ctx, ex.json_or_none())
    if int(new) <= int(current.version):
        ctx.fail(f"the revert returned version {new}, not higher than {current.version}", ex)
        return
    await ctx.settled()
    if digest(await ctx.metadata(new)) != ctx.session.found_digest:
        ctx.fail(f"version {new} (revert to {found.version}) differs from version {found.version}")


@check("VS04", MUST, "revert to a version that does not exist -> 400 or 404")
async def vs04(ctx: Context) -> None:
    v = (await ctx.snapshot()).version
    missing = str(int(v) + 100)
    probe = ctx.update_probe(
        f"revert to missing version {missing}", {"revertToVersionId": missing}, version=v
    )
    await ctx.refused(probe, {400, 404}, VALIDATION + NOT_FOUND, basis="semantics")


@check("VS05", SHOULD, "ListImageSetVersions lists every version, newest first", phase=Phase.REVIEW)
async def vs05(ctx: Context) -> None:
    current = await ctx.snapshot()
    seen: list[str] = []
    token: str | None = None
    for _ in range(100):
        query = (("maxResults", "50"),) + ((("nextToken", token),) if token else ())
        probe = Probe(
            operation="ListImageSetVersions",
            label="ListImageSetVersions",
            path=ctx.path("listImageSetVersions"),
            query=query,
        )
        ex = await ctx.send(probe)
        body = ex.json_or_none()
        items = body.get("imageSetPropertiesList") if isinstance(body, dict) else None
        if ex.status != 200 or not isinstance(items, list):
            raise Abort(f"ListImageSetVersions answered {ex.status} without imageSetPropertiesList", ex)
        seen += [str(item.get("versionId")) for item in items if isinstance(item, dict)]
        token = body.get("nextToken") if isinstance(body, dict) else None
        if not token:
            break
    want = [str(n) for n in range(int(current.version), 0, -1)]
    if seen != want:
        head = ", ".join(seen[:6]) + (" ..." if len(seen) > 6 else "")
        ctx.fail(
            f"listed versions [{head}] ({len(seen)}), expected {current.version} down to 1 ({len(want)})"
        )
