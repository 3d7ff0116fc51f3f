"""VS: versions and effects. Updates make new versions, old versions stay, revert restores content.

Also the parameters' effects (``version``, ``maxResults``/``nextToken``,
``force``) and the state every accepted update ends in: ACTIVE + UPDATED, or
UPDATE_FAILED with a message, with ``updatedAt`` moving forward.
"""

from __future__ import annotations

import itertools
from typing import Any

from conformance._checks._common import MUST, SHOULD
from conformance._context import (
    HARMLESS_ATTRIBUTE,
    NOT_FOUND,
    VALIDATION,
    Abort,
    Context,
    FirstWrite,
    Skip,
    Snapshot,
    blob,
    digest,
)
from conformance._http import Exchange, Probe
from conformance._registry import Phase, check

#: The force-only attribute VS08 changes (study level; the API reference lists StudyID among the
#: attributes that need ``force``). Reverted with the rest by the run's restore.
FORCE_ONLY_ATTRIBUTE = "StudyID"


def _attribute(doc: dict[str, Any], name: str = HARMLESS_ATTRIBUTE) -> object:
    study = doc.get("Study")
    dicom = study.get("DICOM") if isinstance(study, dict) else None
    return dicom.get(name, None) if isinstance(dicom, dict) else None


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


@check("VS05", MUST, "ListImageSetVersions lists every version, newest first", phase=Phase.REVIEW)
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


def _list_probe(ctx: Context, page: int, token: str | None) -> Probe:
    query = (("maxResults", str(page)),) + ((("nextToken", token),) if token else ())
    return Probe(
        operation="ListImageSetVersions",
        label=f"ListImageSetVersions maxResults={page}" + (" (next page)" if token else ""),
        path=ctx.path("listImageSetVersions"),
        query=query,
    )


def _read_answers(ctx: Context) -> list[Exchange]:
    """Every GetImageSet and ListImageSetVersions answer of the run so far."""
    wanted = ("GetImageSet", "ListImageSetVersions")
    return [ex for ex in ctx.session.exchanges if ex.status == 200 and ex.probe.operation in wanted]


def _judge_own(ctx: Context, rule: str, exchanges: list[Exchange]) -> None:
    for ex in exchanges:
        for problem in ctx.session.problems(ex):
            if problem.rule == rule:
                ctx.fail(f"{ex.label}: {problem.message}", ex)


@check(
    "VS06",
    MUST,
    "version=N on GetImageSet and GetImageSetMetadata answers version N; without it, the latest",
    phase=Phase.REVIEW,
)
async def vs06(ctx: Context) -> None:
    current = await ctx.ensure_versions(2)
    first = ctx.session.first_write
    found, found_digest = ctx.session.found, ctx.session.found_digest
    versions = sorted({"1", current.version} | ({found.version} if found else set()), key=int)
    asked: list[Exchange] = []
    for v in versions:
        await ctx.snapshot(v)
        asked.append(ctx.session.exchanges[-1])
    _judge_own(ctx, "VS06", asked)
    moved = found is not None and found_digest is not None and found.version != current.version
    if found is not None and moved and digest(await ctx.metadata(found.version)) != found_digest:
        ctx.fail(
            f"GetImageSetMetadata version={found.version} is not the content version {found.version} had"
        )
    if isinstance(first, FirstWrite):
        made = _new_version(ctx, first.exchange.json_or_none())
        if made != current.version and _attribute(await ctx.metadata(made)) != first.marker:
            ctx.fail(
                f"GetImageSetMetadata version={made} does not carry what the update to version {made} set"
            )
    # and without version=: the latest
    if digest(await ctx.metadata()) != digest(await ctx.metadata(current.version)):
        ctx.fail(f"GetImageSetMetadata without version= is not version {current.version}, the current one")
    newest = await ctx.send(_list_probe(ctx, 1, None))
    body = newest.json_or_none()
    items = body.get("imageSetPropertiesList") if isinstance(body, dict) else None
    top = (
        items[0].get("versionId")
        if isinstance(items, list) and items and isinstance(items[0], dict)
        else None
    )
    if isinstance(top, str) and top != current.version:
        ctx.fail(f"GetImageSet without version= says {current.version}, the newest listed is {top}", newest)
    if len(versions) == 1:
        ctx.note("one version only: version=N could only be asked for the current one")


@check(
    "VS07",
    MUST,
    "maxResults/nextToken page through every version once, newest first, no page over maxResults",
    phase=Phase.REVIEW,
)
async def vs07(ctx: Context) -> None:
    current = int((await ctx.ensure_versions(3)).version)
    if current < 2:
        raise Skip("needs an image set with more versions than a page holds (it has 1); pass --allow-writes")
    page = 2 if current >= 3 else 1
    seen: list[str] = []
    tokens: set[str] = set()
    token: str | None = None
    pages: list[Exchange] = []
    for _ in range(current + 3):  # pages may be short (even empty): at most one per version, and slack
        ex = await ctx.send(_list_probe(ctx, page, token))
        pages.append(ex)
        body = ex.json_or_none()
        items = body.get("imageSetPropertiesList") if isinstance(body, dict) else None
        if ex.status != 200 or not isinstance(items, list):
            raise Abort(f"ListImageSetVersions answered {ex.status} without imageSetPropertiesList", ex)
        seen += [str(item.get("versionId")) for item in items if isinstance(item, dict)]
        nxt = body.get("nextToken") if isinstance(body, dict) else None
        if not nxt:
            break
        if not isinstance(nxt, str) or nxt in tokens:
            ctx.fail(f"{ex.label}: nextToken repeats an earlier page's token (the pages never end)", ex)
            break
        tokens.add(nxt)
        token = nxt
    else:
        ctx.fail(f"paging by {page} did not end after {len(pages)} pages for {current} versions", pages[-1])
    _judge_own(ctx, "VS07", pages)
    want = [str(n) for n in range(current, 0, -1)]
    if seen != want and not ctx.failures:
        head = ", ".join(seen[:6]) + (" ..." if len(seen) > 6 else "")
        ctx.fail(
            f"pages of {page} listed [{head}] ({len(seen)} in {len(pages)} pages), "
            f"expected {current} down to 1 once each",
            pages[-1],
        )
    if not ctx.failures:
        ctx.note(f"{current} versions in {len(pages)} pages of at most {page}")


@check(
    "VS08",
    MUST,
    "force matters: a force-only change (StudyID) is refused without force=true, accepted with it",
    writes=True,
)
async def vs08(ctx: Context) -> None:
    before = await ctx.settled()
    value = f"AHI{ctx.session.next_marker().rsplit(' ', 1)[-1]:0>6}"[:16]
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {FORCE_ONLY_ATTRIBUTE: value}}}
    body = {"DICOMUpdates": {"updatableAttributes": blob(doc)}}
    plain = await ctx.write(f"{FORCE_ONLY_ATTRIBUTE} change without force", body, before.version)
    if plain.status == 200:
        made = _new_version(ctx, plain.json_or_none())
        await ctx.settled()
        snap = await ctx.snapshot(made)
        applied = _attribute(await ctx.metadata(made), FORCE_ONLY_ATTRIBUTE) == value
        if snap.workflow != "UPDATE_FAILED" or applied:
            ctx.fail(
                f"{plain.label}: accepted and ended {snap.workflow}"
                + (f" with {FORCE_ONLY_ATTRIBUTE} changed" if applied else "")
                + "; without force=true it must be refused (400, or UPDATE_FAILED)",
                plain,
            )
    else:
        ctx.expect(plain, {400}, VALIDATION)
    current = await ctx.settled()
    forced = await ctx.write(
        f"{FORCE_ONLY_ATTRIBUTE} change with force=true", body, current.version, query=[("force", "true")]
    )
    if not ctx.expect(forced, {200}, None):
        return
    made = _new_version(ctx, forced.json_or_none())
    await ctx.settled()
    if _attribute(await ctx.metadata(made), FORCE_ONLY_ATTRIBUTE) != value:
        ctx.fail(f"version {made} (with force=true) does not carry the {FORCE_ONLY_ATTRIBUTE} it set", forced)


async def _created(ctx: Context) -> list[tuple[str, Snapshot]]:
    """Every version the run's accepted updates made, as GetImageSet version=N reports it (read once)."""
    session = ctx.session
    cache: dict[str, Snapshot] = session.version_reads
    for v in sorted(session.created_versions, key=int):
        if v not in cache:
            cache[v] = await ctx.snapshot(v)
    return [(v, cache[v]) for v in sorted(session.created_versions, key=int)]


@check(
    "VS09",
    MUST,
    "every accepted update ends ACTIVE + UPDATED, or ACTIVE + UPDATE_FAILED with a message",
    phase=Phase.REVIEW,
)
async def vs09(ctx: Context) -> None:
    if not ctx.session.created_versions:
        ctx.require_writes()
        await ctx.first_write()
    await ctx.settled()
    versions = await _created(ctx)
    for v, snap in versions:
        message = snap.body.get("message")
        if snap.state != "ACTIVE":
            ctx.fail(f"version {v} is {snap.state} once the image set settled, not ACTIVE")
        elif snap.workflow == "UPDATE_FAILED":
            if not (isinstance(message, str) and message.strip()):
                ctx.fail(f"version {v} ended UPDATE_FAILED without a message")
        elif snap.workflow != "UPDATED":
            ctx.fail(f"version {v} ended with workflow status {snap.workflow}, not UPDATED or UPDATE_FAILED")
    _judge_own(ctx, "VS09", _read_answers(ctx))
    if not ctx.failures:
        ctx.note(f"{len(versions)} versions made by the run, each settled")


@check("VS10", MUST, "updatedAt moves forward with every accepted update", phase=Phase.REVIEW)
async def vs10(ctx: Context) -> None:
    if not ctx.session.created_versions:
        ctx.require_writes()
        await ctx.first_write()
    await ctx.settled()
    found = ctx.session.found
    chain: list[tuple[str, Snapshot]] = ([(found.version, found)] if found else []) + await _created(ctx)
    stamps = [(v, snap.body.get("updatedAt")) for v, snap in chain]
    numbers = [(v, t) for v, t in stamps if isinstance(t, (int, float)) and not isinstance(t, bool)]
    for (v1, t1), (v2, t2) in itertools.pairwise(numbers):
        if not t2 > t1:
            ctx.fail(f"version {v2}'s updatedAt is not later than version {v1}'s")
    latest = await ctx.snapshot()
    last = latest.body.get("updatedAt")
    if numbers and isinstance(last, (int, float)) and last < numbers[-1][1]:
        ctx.fail("GetImageSet's updatedAt is earlier than its newest version's")
    _judge_own(ctx, "VS10", _read_answers(ctx))
    if len(numbers) < 2:
        ctx.note("fewer than two numeric updatedAt values to compare")


@check(
    "VS11",
    SHOULD,
    "right after an accepted update, GetImageSet and ListImageSetVersions show the new version (E8)",
    writes=True,
)
async def vs11(ctx: Context) -> None:
    before = await ctx.settled()
    ex = await ctx.write("update, then read at once", ctx.marker_update(), before.version)
    if ex.status != 200:
        raise Abort(f"a valid update was not accepted ({ex.status})", ex)
    new = _new_version(ctx, ex.json_or_none())
    snap = await ctx.snapshot()
    if snap.version != new:
        ctx.fail(
            f"GetImageSet right after the update of version {before.version} says version {snap.version}"
        )
    listed = await ctx.send(_list_probe(ctx, 1, None))
    body = listed.json_or_none()
    items = body.get("imageSetPropertiesList") if isinstance(body, dict) else None
    first = (
        items[0].get("versionId")
        if isinstance(items, list) and items and isinstance(items[0], dict)
        else None
    )
    if first != new:
        ctx.fail(
            f"ListImageSetVersions right after the update lists version {first} first, not {new}", listed
        )
    if not ctx.failures:
        ctx.note(f"version {new} seen at once ({snap.state}/{snap.workflow})")
