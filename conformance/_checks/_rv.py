"""RV: request validation. Malformed requests must get 400 (404 only for missing resources)."""

from __future__ import annotations

import json
from typing import Any

from conformance._checks._common import MUST, SHOULD, current_version, other_id
from conformance._context import HARMLESS_ATTRIBUTE, NOT_FOUND, VALIDATION, Context, blob
from conformance._http import Probe
from conformance._registry import check

_BAD_IDS = (
    ("uppercase", "A" * 32),
    ("31 characters", "a" * 31),
    ("33 characters", "a" * 33),
    ("a '-' inside", "0123456789abcdef-0123456789abcde"),
)


@check("RV01", MUST, "bad datastoreId pattern -> 400 ValidationException")
async def rv01(ctx: Context) -> None:
    v = await current_version(ctx)
    for what, bad in _BAD_IDS:
        probe = ctx.update_probe(f"datastoreId {what}", ctx.marker_update(), version=v, d=bad)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV02", MUST, "bad imageSetId pattern -> 400 ValidationException")
async def rv02(ctx: Context) -> None:
    v = await current_version(ctx)
    for what, bad in _BAD_IDS:
        probe = ctx.update_probe(f"imageSetId {what}", ctx.marker_update(), version=v, i=bad)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV03", MUST, "latestVersion missing -> 400")
async def rv03(ctx: Context) -> None:
    probe = ctx.update_probe("no latestVersion", ctx.marker_update(), version=None)
    await ctx.refused(probe, {400}, VALIDATION)


@check("RV04", MUST, "latestVersion=abc / -1 / 1.5 -> 400")
async def rv04(ctx: Context) -> None:
    for bad in ("abc", "-1", "1.5", ""):
        probe = ctx.update_probe(f"latestVersion={bad!r}", ctx.marker_update(), version=bad)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV05", MUST, "body {} -> 400")
async def rv05(ctx: Context) -> None:
    v = await current_version(ctx)
    await ctx.refused(ctx.update_probe("body {}", {}, version=v), {400}, VALIDATION)


@check("RV06", MUST, "both DICOMUpdates and revertToVersionId -> 400")
async def rv06(ctx: Context) -> None:
    v = await current_version(ctx)
    body = {**ctx.marker_update(), "revertToVersionId": v}
    await ctx.refused(ctx.update_probe("both union members", body, version=v), {400}, VALIDATION)


@check("RV07", MUST, "only an unknown union member -> 400")
async def rv07(ctx: Context) -> None:
    v = await current_version(ctx)
    inner = ctx.marker_update()["DICOMUpdates"]
    for name in ("DICOMUpdate", "dicomUpdates", "revertTo"):
        probe = ctx.update_probe(f"unknown member {name}", {name: inner}, version=v)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV08", MUST, "union member value null / array / number / string -> 400")
async def rv08(ctx: Context) -> None:
    v = await current_version(ctx)
    cases: list[tuple[str, Any]] = [
        ("DICOMUpdates null", {"DICOMUpdates": None}),
        ("DICOMUpdates array", {"DICOMUpdates": []}),
        ("DICOMUpdates number", {"DICOMUpdates": 1}),
        ("DICOMUpdates string", {"DICOMUpdates": "x"}),
        ("revertToVersionId null", {"revertToVersionId": None}),
    ]
    for label, body in cases:
        await ctx.refused(ctx.update_probe(label, body, version=v), {400}, VALIDATION)


@check("RV09", MUST, "attribute blob not valid base64 ('YmxvYg=', 'xyz', true, 123) -> 400")
async def rv09(ctx: Context) -> None:
    v = await current_version(ctx)
    for bad in ("YmxvYg=", "xyz", True, 123):
        body = {"DICOMUpdates": {"updatableAttributes": bad}}
        await ctx.refused(
            ctx.update_probe(f"updatableAttributes {bad!r}", body, version=v), {400}, VALIDATION
        )


@check("RV10", MUST, "attribute blob decoding to 0 bytes -> 400")
async def rv10(ctx: Context) -> None:
    v = await current_version(ctx)
    for member in ("updatableAttributes", "removableAttributes"):
        body = {"DICOMUpdates": {member: ""}}
        await ctx.refused(ctx.update_probe(f"empty {member}", body, version=v), {400}, VALIDATION)


def _oversized(size: int) -> dict[str, Any]:
    head = {"SchemaVersion": 1.1, "Study": {"DICOM": {HARMLESS_ATTRIBUTE: ""}}}
    pad = size - len(json.dumps(head, separators=(",", ":")).encode())
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {HARMLESS_ATTRIBUTE: "X" * pad}}}
    return {"DICOMUpdates": {"updatableAttributes": blob(doc)}}


@check("RV11", MUST, "attribute blob decoding to more than 30000 bytes -> 400")
async def rv11(ctx: Context) -> None:
    v = await current_version(ctx)
    for size in (30001, 60000):
        probe = ctx.update_probe(f"updatableAttributes of {size} bytes", _oversized(size), version=v)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV12", SHOULD, "attribute blob that is not JSON (double-encoded) or of the wrong shape -> 400")
async def rv12(ctx: Context) -> None:
    v = await current_version(ctx)
    good = {"SchemaVersion": 1.1, "Study": {"DICOM": {HARMLESS_ATTRIBUTE: "X"}}}
    cases = [
        ("double base64-encoded document", blob(blob(good).encode())),
        ("blob of a JSON array", blob([1, 2])),
        ("blob with a patient attribute under Study", blob({"Study": {"DICOM": {"PatientSex": "O"}}})),
        ("blob with an unknown top-level key", blob({"Studies": {"DICOM": {HARMLESS_ATTRIBUTE: "X"}}})),
    ]
    for label, value in cases:
        body = {"DICOMUpdates": {"updatableAttributes": value}}
        await ctx.refused(ctx.update_probe(label, body, version=v), {400}, VALIDATION, basis="semantics")


@check("RV13", MUST, "revertToVersionId not \\d+ or not a string -> 400")
async def rv13(ctx: Context) -> None:
    v = await current_version(ctx)
    for bad in ("abc", "-1", "", " 1", 1, True):
        probe = ctx.update_probe(f"revertToVersionId {bad!r}", {"revertToVersionId": bad}, version=v)
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV14", MUST, "force=yes / 1 / True -> 400")
async def rv14(ctx: Context) -> None:
    v = await current_version(ctx)
    for bad in ("yes", "1", "True", ""):
        probe = ctx.update_probe(f"force={bad!r}", ctx.marker_update(), version=v, query=[("force", bad)])
        await ctx.refused(probe, {400}, VALIDATION)


@check("RV15", SHOULD, "includeStudyImageSets=true with revertToVersionId -> 400")
async def rv15(ctx: Context) -> None:
    v = await current_version(ctx)
    probe = ctx.update_probe(
        "revert with includeStudyImageSets=true",
        {"revertToVersionId": v},
        version=v,
        query=[("includeStudyImageSets", "true")],
    )
    await ctx.refused(probe, {400}, VALIDATION, basis="semantics")


@check("RV16", MUST, "update or read of an image set that does not exist -> 404 ResourceNotFoundException")
async def rv16(ctx: Context) -> None:
    missing = other_id(ctx.i)
    probe = ctx.update_probe("image set that does not exist", ctx.marker_update(), version="1", i=missing)
    await ctx.refused(probe, {404}, NOT_FOUND, basis="semantics")
    for operation, route in (
        ("GetImageSet", "getImageSet"),
        ("GetImageSetMetadata", "getImageSetMetadata"),
        ("ListImageSetVersions", "listImageSetVersions"),
    ):
        read = Probe(
            operation=operation, label=f"{operation} of a missing image set", path=ctx.path(route, i=missing)
        )
        await ctx.refused(read, {404}, NOT_FOUND, basis="semantics")


@check("RV17", MUST, "existing image set id under another datastore id -> 404")
async def rv17(ctx: Context) -> None:
    v = await current_version(ctx)
    probe = ctx.update_probe(
        "existing image set under another datastore", ctx.marker_update(), version=v, d=other_id(ctx.d)
    )
    await ctx.refused(probe, {404}, NOT_FOUND, basis="semantics")


@check("RV18", MUST, "GetImageSet(Metadata) version=abc, ListImageSetVersions maxResults=0/51/abc -> 400")
async def rv18(ctx: Context) -> None:
    cases = [
        ("GetImageSet", "getImageSet", "version", "abc"),
        ("GetImageSet", "getImageSet", "version", "-1"),
        ("GetImageSetMetadata", "getImageSetMetadata", "version", "x1"),
        ("ListImageSetVersions", "listImageSetVersions", "maxResults", "0"),
        ("ListImageSetVersions", "listImageSetVersions", "maxResults", "51"),
        ("ListImageSetVersions", "listImageSetVersions", "maxResults", "abc"),
    ]
    for operation, route, name, bad in cases:
        probe = Probe(
            operation=operation, label=f"{operation} {name}={bad}", path=ctx.path(route), query=((name, bad),)
        )
        await ctx.refused(probe, {400}, VALIDATION)
