"""Mutation test: deliberately broken endpoints, one violation each, each caught by the check naming it.

Each mutant is a real emulator behind a rewriting proxy (see ``_hi_proxy``),
or a running emulator whose store the test patches. The suite runs only the
checks that name the violation; each of them must fail (MUST) or warn
(SHOULD) with a message. A control run through the unbroken proxy passes
every check, so a caught mutant is caught because of its violation.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from aiohttp import web

from conformance import CheckLevel, Outcome, Settings, all_checks, run_conformance
from tests._hi_hooks import (
    _accept_very_stale,
    _applied_but_refused_after,
    _applied_but_refused_before,
    _apply_fails,
    _bad_force_applied_after,
    _bad_force_applied_before,
    _bad_id,
    _bad_signature,
    _blob,
    _created_201,
    _dedupe_query,
    _drop_param,
    _extra_headers,
    _extra_members,
    _failed_without_message,
    _fix_param,
    _fix_read_params,
    _force_always,
    _foreign_arn,
    _foreign_metadata_ids,
    _frozen_updated_at,
    _gzip_without_header,
    _header_case,
    _hide_in_progress,
    _is_json,
    _json_content_type,
    _launder,
    _lenient_union,
    _locked_metadata_fails,
    _lowercase_list_status,
    _metadata_first_version,
    _no_apply,
    _no_conflicts,
    _numeric_list_versions,
    _other_datastore,
    _plain_metadata,
    _racy,
    _refusal_changes_state,
    _reverse_versions,
    _revert_keeps_content,
    _set,
    _short_pages,
    _slow_reads,
    _stale_date,
    _string_times,
    _strip_extra_keys,
    _type_suffix,
    _unsigned_reads,
    _update,
    _utf8,
    _version_ahead,
    _wrong_scope,
    accept_if,
    fail_if,
    on_errors,
    on_ok,
    on_update_ok,
    throttle_some,
)
from tests._hi_proxy import BrokenEndpoint, Mutant, Req

pytestmark = pytest.mark.anyio

MUTANTS = [
    # -- RV ------------------------------------------------------------------
    Mutant(
        "bad datastoreId answered 404",
        ("RV01",),
        before=fail_if(_bad_id(0), 404, "ResourceNotFoundException"),
    ),
    Mutant(
        "bad imageSetId answered 404", ("RV02",), before=fail_if(_bad_id(1), 404, "ResourceNotFoundException")
    ),
    Mutant(
        "missing latestVersion taken as current",
        ("RV03",),
        before=_fix_param("latestVersion", lambda v: v is None),
    ),
    Mutant(
        "latestVersion=abc taken as current",
        ("RV04",),
        before=_fix_param("latestVersion", lambda v: v is not None and not v.isdigit()),
    ),
    Mutant("empty body {} accepted", ("RV05",), before=accept_if(lambda r: r.json() == {})),
    Mutant("both union members accepted", ("RV06",), setup=_lenient_union),
    Mutant(
        "unknown union member accepted",
        ("RV07",),
        before=accept_if(
            lambda r: isinstance(r.json(), dict) and not {"DICOMUpdates", "revertToVersionId"} & set(r.json())
        ),
    ),
    Mutant(
        "null / array union value accepted",
        ("RV08",),
        before=accept_if(
            lambda r: (
                isinstance(r.json(), dict) and any(not isinstance(v, (dict, str)) for v in r.json().values())
            )
        ),
    ),
    Mutant(
        "invalid base64 accepted",
        ("RV09",),
        before=accept_if(
            lambda r: (
                isinstance(r.json(), dict)
                and isinstance(r.json().get("DICOMUpdates"), dict)
                and "updatableAttributes" in r.json()["DICOMUpdates"]
                and _blob(r) is None
            )
        ),
    ),
    Mutant(
        "empty blob accepted",
        ("RV10",),
        before=accept_if(lambda r: _blob(r) == b"" or _blob(r, "removableAttributes") == b""),
    ),
    Mutant("oversized blob accepted", ("RV11",), before=accept_if(lambda r: len(_blob(r) or b"") > 30000)),
    Mutant(
        "double-encoded blob accepted",
        ("RV12",),
        before=accept_if(lambda r: (_blob(r) or b"{")[:1] not in (b"{",)),
    ),
    Mutant(
        "bad revertToVersionId accepted",
        ("RV13",),
        before=accept_if(
            lambda r: (
                isinstance(r.json(), dict)
                and "revertToVersionId" in r.json()
                and not (
                    isinstance(r.json()["revertToVersionId"], str) and r.json()["revertToVersionId"].isdigit()
                )
            )
        ),
    ),
    Mutant(
        "force=yes accepted",
        ("RV14",),
        before=accept_if(lambda r: r.param("force") not in (None, "true", "false")),
    ),
    Mutant(
        "includeStudyImageSets with revert accepted",
        ("RV15",),
        before=accept_if(lambda r: r.param("includeStudyImageSets") == "true"),
    ),
    Mutant(
        "missing image set answered 400",
        ("RV16",),
        after=lambda req, resp, emu: (
            (setattr(resp, "status", 400) or resp.headers.update({"x-amzn-errortype": "ValidationException"}))
            if resp.status == 404
            else None
        ),
    ),
    Mutant("datastore id ignored", ("RV17",), before=_other_datastore),
    Mutant("bad version / maxResults on reads ignored", ("RV18",), before=_fix_read_params),
    # -- SR ------------------------------------------------------------------
    Mutant(
        "success without JSON Content-Type",
        ("SR01",),
        after=lambda req, resp, emu: (
            resp.headers.update({"content-type": "text/plain"})
            if _update(req) and resp.status == 200
            else None
        ),
    ),
    Mutant(
        "required imageSetState missing", ("SR02",), after=on_update_ok(lambda r, b: b.pop("imageSetState"))
    ),
    Mutant(
        "ids not echoed", ("SR02",), after=on_update_ok(lambda r, b: _set(b, datastoreId=uuid.uuid4().hex))
    ),
    Mutant(
        "imageSetState outside the enum",
        ("SR03",),
        after=on_update_ok(lambda r, b: _set(b, imageSetState="PENDING")),
    ),
    Mutant(
        "string timestamps",
        ("SR04", "SR08"),
        after=on_update_ok(
            lambda r, b: _set(b, createdAt="2024-01-01T00:00:00Z", updatedAt="2024-01-01T00:00:00Z")
        ),
    ),
    Mutant(
        "createdAt after updatedAt",
        ("SR05",),
        after=on_update_ok(lambda r, b: _set(b, createdAt=b["updatedAt"] + 3600)),
    ),
    Mutant(
        "latestVersionId not \\d+", ("SR06",), after=on_update_ok(lambda r, b: _set(b, latestVersionId="v2"))
    ),
    Mutant(
        "message outside the pattern", ("SR07",), after=on_update_ok(lambda r, b: _set(b, message="a\nb"))
    ),
    Mutant(
        "latestVersionId as a JSON number",
        ("SR08",),
        after=on_update_ok(lambda r, b: _set(b, latestVersionId=int(b["latestVersionId"]))),
    ),
    Mutant(
        "list items spell imageSetWorkflowStatus with a small i",
        ("SR09",),
        after=on_ok("listImageSetVersions", _lowercase_list_status),
        select=("VS05", "SR09"),
    ),
    Mutant("metadata as plain JSON", ("SR10",), after=_plain_metadata),
    Mutant("metadata document of another image set", ("SR02",), after=_foreign_metadata_ids),
    Mutant("201 for an accepted update", ("SR01",), after=_created_201),
    Mutant("imageSetArn of another image set", ("SR02",), after=on_ok("getImageSet", _foreign_arn)),
    Mutant("metadata gzip without Content-Encoding", ("SR10",), after=_gzip_without_header),
    Mutant(
        "update answers the settled state",
        ("SR11",),
        after=on_update_ok(lambda r, b: _set(b, imageSetState="ACTIVE", imageSetWorkflowStatus="UPDATED")),
    ),
    Mutant(
        "GetImageSet timestamps as strings",
        ("SR04", "SR08"),
        after=on_ok("getImageSet", _string_times),
        select=("SR04", "SR08"),
    ),
    Mutant(
        "list versionIds as numbers",
        ("SR06",),
        after=on_ok("listImageSetVersions", _numeric_list_versions),
        select=("VS05", "SR06"),
    ),
    # -- ER ------------------------------------------------------------------
    Mutant(
        "wrong status codes (400 -> 422)",
        ("ER01",),
        after=on_errors(lambda resp: setattr(resp, "status", 422) if resp.status == 400 else None),
    ),
    Mutant(
        "missing error-type header",
        ("ER02",),
        after=on_errors(lambda resp: resp.headers.pop("x-amzn-errortype", None)),
    ),
    Mutant(
        "header and body codes disagree",
        ("ER03",),
        after=on_errors(lambda resp: resp.set_json({"message": "x", "__type": "InternalServerException"})),
    ),
    Mutant(
        "error bodies not JSON",
        ("ER04",),
        after=on_errors(lambda resp: setattr(resp, "body", b"Bad Request")),
    ),
    Mutant(
        "unmodeled error codes",
        ("ER05",),
        after=on_errors(
            lambda resp: resp.headers.update(
                {"x-amzn-errortype": resp.headers.get("x-amzn-errortype", "").replace("Exception", "Error")}
            )
        ),
    ),
    Mutant(
        "errors as text/plain",
        ("ER06",),
        after=on_errors(lambda resp: resp.headers.update({"content-type": "text/plain"})),
    ),
    Mutant(
        "HTML 5xx on a huge body",
        ("RB04", "ER07"),
        before=lambda req, emu: (
            web.Response(status=502, text="<html><body>Bad Gateway</body></html>", content_type="text/html")
            if len(req.body) > 5_000_000
            else None
        ),
    ),
    # -- OC ------------------------------------------------------------------
    Mutant("no conflict detection", ("OC01", "OC03"), setup=_no_conflicts),
    Mutant("latestVersion ahead accepted", ("OC02",), before=_version_ahead),
    Mutant("racing writes both accepted", ("OC03",), setup=_racy),
    Mutant(
        "writes while LOCKED accepted",
        ("OC04",),
        setup=lambda emu, mp: mp.setattr(emu.store, "_check_writable", lambda s: None),
    ),
    Mutant("updates end UPDATE_FAILED", ("OC05",), setup=_apply_fails),
    Mutant("a refused write changes the metadata", ("OC06",), setup=_refusal_changes_state),
    Mutant("metadata read while an update is applied answers 500", ("OC07",), before=_locked_metadata_fails),
    Mutant(
        "a stale version answered 404 without saying so",
        ("OC01",),
        after=lambda req, resp, emu: (
            resp.set_json({"message": "not found"}) if resp.code == "ResourceNotFoundException" else None
        ),
    ),
    Mutant(
        "a 400 that still creates a version",
        ("OC06",),
        before=_bad_force_applied_before,
        after=_bad_force_applied_after,
        select=("RV14", "OC06"),
    ),
    Mutant("latestVersion two behind accepted", ("OC08",), setup=_accept_very_stale),
    # -- VS ------------------------------------------------------------------
    Mutant(
        "dropping the version increment",
        ("VS01",),
        after=on_update_ok(lambda r, b: _set(b, latestVersionId=r.param("latestVersion"))),
    ),
    Mutant("updates not applied", ("VS02",), setup=_no_apply),
    Mutant("revert keeps the current content", ("VS03",), setup=_revert_keeps_content),
    Mutant(
        "revert to a missing version gives 500",
        ("VS04",),
        before=fail_if(
            lambda r: (
                _update(r)
                and isinstance(r.json(), dict)
                and str(r.json().get("revertToVersionId", "0")).isdigit()
                and int(r.json().get("revertToVersionId", "0")) > 50
            )
        ),
    ),
    Mutant("versions listed oldest first", ("VS05",), after=_reverse_versions, select=("VS01", "VS05")),
    Mutant("GetImageSet ignores version=N", ("VS06",), before=_drop_param("version")),
    Mutant("metadata without version= is version 1", ("VS06",), before=_metadata_first_version),
    Mutant("nextToken ignored: the first page again", ("VS07",), before=_drop_param("nextToken")),
    Mutant("maxResults ignored: one page of everything", ("VS07",), before=_drop_param("maxResults")),
    Mutant("force ignored: force-only changes accepted without it", ("VS08",), before=_force_always),
    Mutant("UPDATE_FAILED without a message", ("VS09",), setup=_failed_without_message),
    Mutant("updatedAt never moves", ("VS10",), after=_frozen_updated_at),
    Mutant(
        "in-progress versions left out of the list",
        ("VS11",),
        after=on_ok("listImageSetVersions", _hide_in_progress),
        config={"lock_seconds": 0.5},  # the window must outlast two reads
    ),
    # -- AU ------------------------------------------------------------------
    Mutant("accepting unsigned requests", ("AU01",), config={"verify_sigv4": False}),
    Mutant("accepting unsigned reads", ("AU01",), before=_unsigned_reads),
    Mutant("accepting bad signatures", ("AU02", "AU05"), before=_launder(_bad_signature)),
    Mutant("accepting the wrong signing scope", ("AU03",), before=_launder(_wrong_scope)),
    Mutant("accepting stale X-Amz-Date", ("AU04",), before=_launder(_stale_date)),
    Mutant(
        "refused unsigned update still applied",
        ("AU06",),
        before=_applied_but_refused_before,
        after=_applied_but_refused_after,
    ),
    # -- PD ------------------------------------------------------------------
    Mutant("body without Content-Type accepted", ("PD01",), before=_json_content_type),
    Mutant(
        "charset=utf-8 refused",
        ("PD02",),
        before=fail_if(lambda r: "charset" in r.headers.get("Content-Type", ""), 400, "ValidationException"),
    ),
    Mutant("unknown top-level key ignored", ("PD03",), before=_strip_extra_keys),
    Mutant(
        "no request id on success",
        ("PD04",),
        after=lambda req, resp, emu: (
            resp.headers.pop("x-amzn-requestid", None) if resp.status == 200 else None
        ),
    ),
    Mutant(
        "constant request id",
        ("PD05",),
        after=lambda req, resp, emu: resp.headers.update({"x-amzn-requestid": "1"}),
    ),
    Mutant(
        "force=false refused",
        ("PD06",),
        before=fail_if(lambda r: r.param("force") == "false", 400, "ValidationException"),
    ),
    Mutant("repeated latestVersion accepted", ("PD07",), before=_dedupe_query),
    # -- RB ------------------------------------------------------------------
    Mutant(
        "5xx on bad JSON",
        ("RB01",),
        before=fail_if(lambda r: _update(r) and bool(r.body) and not _is_json(r.body)),
    ),
    Mutant(
        "5xx on JSON of the wrong type",
        ("RB02",),
        before=fail_if(lambda r: _update(r) and _is_json(r.body) and not isinstance(r.json(), dict)),
    ),
    Mutant("5xx on an empty body", ("RB03",), before=fail_if(lambda r: _update(r) and not r.body)),
    Mutant(
        "GET on the update route answered 200",
        ("RB05",),
        before=lambda req, emu: web.json_response({}) if req.method != "POST" else None,
    ),
    Mutant("5xx on deeply nested JSON", ("RB06",), before=fail_if(lambda r: b"[" * 500 in r.body)),
    Mutant("5xx on long ids", ("RB07",), before=fail_if(lambda r: len(r.path) > 1000)),
    Mutant(
        "5xx on blobs that are not UTF-8",
        ("RB08",),
        before=fail_if(lambda r: _update(r) and _blob(r) is not None and not _utf8(_blob(r) or b"")),
    ),
    Mutant("slow answers", ("RB09",), before=_slow_reads, settings={"time_bound": 0.2}),
]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
async def test_mutant_is_caught_by_the_check_naming_it(
    mutant: Mutant, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with BrokenEndpoint(mutant, monkeypatch) as ep:
        assert ep.target is not None
        settings = Settings(examples=15, settle_timeout=10, **mutant.settings)
        report = await run_conformance(ep.target, settings=settings, select=mutant.select or mutant.catches)
    for cid in mutant.catches:
        result = report.result(cid)
        want = Outcome.FAIL if result.check.level is CheckLevel.MUST else Outcome.WARN
        assert result.outcome is want, f"{mutant.name}: {cid} said {result.outcome.value}: {result.message}"
        assert result.message, f"{cid} gave no reason"
        assert result.failures, f"{cid} recorded no failure"
    if mutant.name == "revert keeps the current content":
        # the restore is a revert too: it cannot succeed here, and must say so
        assert report.restore is not None
        assert not report.restore.ok
        assert "RESTORE FAILED" in report.restore.message
        assert report.exit_status == 1


def test_every_check_is_named_by_a_mutant() -> None:
    named = {cid for m in MUTANTS for cid in m.catches}
    must = {c.id for c in all_checks() if c.level is CheckLevel.MUST}
    should = {c.id for c in all_checks() if c.level is CheckLevel.SHOULD}
    assert must - named == set(), "MUST checks without a mutant"
    assert should - named == set(), "SHOULD checks without a mutant"


#: Negative controls: conformant variations. Each runs the whole suite and must pass every check.
CONTROLS = [
    Mutant("the unbroken proxy", ()),
    Mutant("error types with a ':http://...' suffix", (), after=_type_suffix),
    Mutant("unknown extra members in every JSON answer", (), after=_extra_members),
    Mutant("header names in other letter case", (), after=_header_case),
    Mutant("extra response headers", (), after=_extra_headers),
    Mutant("429 with Retry-After on every 100th request", (), before=throttle_some(100)),
    Mutant("short list pages (one version each)", (), before=_short_pages),
    # every answer 300 ms later; a LOCKED window of a second, as the real service's lasts seconds
    Mutant(
        "300 ms slower answers",
        (),
        delay=0.3,
        config={"lock_seconds": 1.0},
        select=("OC03", "OC04", "VS09", "RB09"),
    ),
]


@pytest.mark.parametrize("control", CONTROLS, ids=[c.name for c in CONTROLS])
async def test_conformant_variations_pass_everything(
    control: Mutant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy and conformant variations break nothing: a caught mutant is caught for its violation."""
    async with BrokenEndpoint(control, monkeypatch) as ep:
        assert ep.target is not None
        report = await run_conformance(ep.target, settings=Settings(examples=15), select=control.select)
    bad = [
        f"{r.check.id} {r.outcome.value}: {r.message}"
        for r in report.results
        if r.outcome is not Outcome.PASS
    ]
    assert bad == []
    assert report.restore is not None
    assert report.restore.ok
    assert report.exit_status == 0
    if "429" in control.name:
        assert any("answers were 429" in n for n in report.notes), report.notes


def test_blob_helper_sanity() -> None:
    req = Req(
        "POST",
        "/datastore/a/imageSet/b/updateImageSetMetadata",
        [],
        __import__("multidict").CIMultiDict(),
        b"",
    )
    req.body = json.dumps(
        {"DICOMUpdates": {"updatableAttributes": base64.b64encode(b"{}").decode()}}
    ).encode()
    assert _blob(req) == b"{}"
