"""Mutation test: deliberately broken endpoints, one violation each, each caught by the check naming it.

Each mutant is a real emulator behind a rewriting proxy (see ``_hi_proxy``),
or a running emulator whose store the test patches. The suite runs only the
checks that name the violation; each of them must fail (MUST) or warn
(SHOULD) with a message. A control run through the unbroken proxy passes
every check, so a caught mutant is caught because of its violation.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote

import pytest
from _hi_proxy import BrokenEndpoint, Mutant, Req, Resp, current, error, fake_ok
from aiohttp import web

from async_hi import contract
from async_hi.emulator import Emulator
from async_hi.emulator._store import ApiError
from conformance import CheckLevel, Outcome, Settings, all_checks, run_conformance

pytestmark = pytest.mark.anyio

_ID = re.compile(r"[0-9a-z]{32}")


def _update(req: Req) -> bool:
    return req.op == "updateImageSetMetadata" and req.method == "POST"


def _blob(req: Req, member: str = "updatableAttributes") -> bytes | None:
    body = req.json()
    dicom = body.get("DICOMUpdates") if isinstance(body, dict) else None
    value = dicom.get(member) if isinstance(dicom, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return contract.decode_blob(value)
    except ValueError:
        return None


def accept_if(pred: Any) -> Any:
    """``before``: claim to accept updates matching ``pred``."""

    def before(req: Req, emu: Emulator) -> web.Response | None:
        return fake_ok(req, emu) if _update(req) and pred(req) else None

    return before


def fail_if(pred: Any, status: int = 500, code: str = "InternalServerException") -> Any:
    def before(req: Req, emu: Emulator) -> web.Response | None:
        return error(status, code) if pred(req) else None

    return before


def on_update_ok(fn: Any) -> Any:
    """``after``: rewrite the body of accepted updates."""

    def after(req: Req, resp: Resp, emu: Emulator) -> None:
        if _update(req) and resp.status == 200:
            body = resp.json()
            fn(req, body)
            resp.set_json(body)

    return after


def on_errors(fn: Any) -> Any:
    def after(req: Req, resp: Resp, emu: Emulator) -> None:
        if resp.status >= 400:
            fn(resp)

    return after


def _set(doc: dict[str, Any], **values: Any) -> None:
    doc.update(values)


def _patch_update(emu: Emulator, monkeypatch: Any, wrap: Any) -> None:
    original = emu.store.update
    monkeypatch.setattr(emu.store, "update", lambda d, i, **kw: wrap(original, d, i, **kw))


def _ignore_version(original: Any, d: str, i: str, **kw: Any) -> Any:
    return original(d, i, **{**kw, "latest_version": kw["latest_version"]})


def _no_conflicts(emu: Emulator, mp: Any) -> None:
    mp.setattr(emu.store, "_check_writable", lambda image_set: None)

    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        kw["latest_version"] = emu.store.image_set(d, i).latest.version_id
        return original(d, i, **kw)

    _patch_update(emu, mp, wrap)


def _racy(emu: Emulator, mp: Any) -> None:
    """Checks the version against a read taken before the previous write landed (50 ms window)."""
    mp.setattr(emu.store, "_check_writable", lambda image_set: None)
    last = {"t": 0.0}

    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        cur = emu.store.image_set(d, i).latest.version_id
        if kw["latest_version"] == cur - 1 and time.monotonic() - last["t"] < 0.05:
            kw["latest_version"] = cur
        out = original(d, i, **kw)
        last["t"] = time.monotonic()
        return out

    _patch_update(emu, mp, wrap)


def _refusal_changes_state(emu: Emulator, mp: Any) -> None:
    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        try:
            return original(d, i, **kw)
        except ApiError as exc:
            if exc.code == "ConflictException":
                emu.store.image_set(d, i).latest.metadata["Study"]["DICOM"]["StudyDescription"] = "TOUCHED"
            raise

    _patch_update(emu, mp, wrap)


def _revert_keeps_content(emu: Emulator, mp: Any) -> None:
    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        if kw.get("revert_to") is not None:
            kw["revert_to"] = emu.store.image_set(d, i).latest.version_id
        return original(d, i, **kw)

    _patch_update(emu, mp, wrap)


def _apply_fails(emu: Emulator, mp: Any) -> None:
    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        emu.store.image_set(d, i).fail_next_apply = "broken apply"
        return original(d, i, **kw)

    _patch_update(emu, mp, wrap)


def _no_apply(emu: Emulator, mp: Any) -> None:
    import async_hi.emulator._store as store_mod

    mp.setattr(store_mod, "apply_update", lambda base, updatable, removable: copy.deepcopy(dict(base)))


def _lenient_union(emu: Emulator, mp: Any) -> None:
    import async_hi.emulator._app as app_mod

    real = app_mod.contract

    class Lenient:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def validate_value(self, shp: Any, value: Any, path: str) -> list[str]:
            return [p for p in real.validate_value(shp, value, path) if "exactly one of" not in p]

    mp.setattr(app_mod, "contract", Lenient())


def _bad_id(index: int) -> Any:
    def pred(req: Req) -> bool:
        ids = req.ids
        return bool(req.op) and not _ID.fullmatch(unquote(ids[index]))

    return pred


def _fix_param(name: str, bad: Any) -> Any:
    def before(req: Req, emu: Emulator) -> None:
        if _update(req) and bad(req.param(name)):
            req.set_param(name, str(current(emu, req) or 1))

    return before


def _other_datastore(req: Req, emu: Emulator) -> None:
    d, i = req.ids
    for ds in emu.store.datastores.values():
        if i in ds.image_sets and ds.datastore_id != d:
            parts = req.parts
            parts[1] = ds.datastore_id
            req.path = "/" + "/".join(parts)
            req.changed = True


def _version_ahead(req: Req, emu: Emulator) -> None:
    v, cur = req.param("latestVersion"), current(emu, req)
    if _update(req) and v and v.isdigit() and cur and int(v) > cur:
        req.set_param("latestVersion", str(cur))


def _launder(pred: Any) -> Any:
    def before(req: Req, emu: Emulator) -> None:
        if "Authorization" in req.headers and pred(req, emu):
            req.changed = req.launder = True

    return before


def _bad_signature(req: Req, emu: Emulator) -> bool:
    from async_hi.emulator._sigv4 import SigV4Error, verify

    qs = "&".join(f"{k}={v}" for k, v in req.query)
    try:
        verify(
            method=req.method,
            raw_path=req.path + (f"?{qs}" if qs else ""),
            headers=req.headers,
            body=req.body,
            credentials=emu.config.credentials,
            region=emu.region,
            service="medical-imaging",
        )
    except SigV4Error:
        return True
    return False


def _wrong_scope(req: Req, emu: Emulator) -> bool:
    scope = req.headers["Authorization"].split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return scope[2] != emu.region or scope[3] != "medical-imaging"


def _stale_date(req: Req, emu: Emulator) -> bool:
    stamp = time.strptime(req.headers.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ")
    return time.time() - time.mktime(stamp) + time.timezone > 600 if stamp else False


def _applied_but_refused_before(req: Req, emu: Emulator) -> None:
    if _update(req) and "Authorization" not in req.headers:
        req.changed = req.launder = True
        req.marks.add("refuse")


def _applied_but_refused_after(req: Req, resp: Resp, emu: Emulator) -> None:
    if "refuse" in req.marks:
        resp.status = 403
        resp.headers["x-amzn-errortype"] = "MissingAuthenticationTokenException"
        resp.set_json({"message": "Missing Authentication Token"})


def _json_content_type(req: Req, emu: Emulator) -> None:
    ctype = req.headers.get("Content-Type", "")
    if _update(req) and req.body and not ctype.startswith("application/json"):
        req.headers["Content-Type"] = "application/json"
        req.changed = True


def _strip_extra_keys(req: Req, emu: Emulator) -> None:
    body = req.json()
    if _update(req) and isinstance(body, dict) and len(body) > 1 and "DICOMUpdates" in body:
        kept = {k: v for k, v in body.items() if k in ("DICOMUpdates", "revertToVersionId")}
        if len(kept) == 1:
            req.body = json.dumps(kept).encode()
            req.changed = True


def _dedupe_query(req: Req, emu: Emulator) -> None:
    if [k for k, _ in req.query].count("latestVersion") > 1:
        seen: dict[str, str] = {}
        for k, v in req.query:
            seen.setdefault(k, v)
        req.query = list(seen.items())
        req.changed = True


def _reverse_versions(req: Req, resp: Resp, emu: Emulator) -> None:
    if req.op == "listImageSetVersions" and resp.status == 200:
        body = resp.json()
        body["imageSetPropertiesList"].reverse()
        resp.set_json(body)


def _slow_reads(req: Req, emu: Emulator) -> None:
    if req.op == "getImageSet":
        time.sleep(0.25)  # a blocking proxy: that is the violation


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


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
    # -- AU ------------------------------------------------------------------
    Mutant("accepting unsigned requests", ("AU01",), config={"verify_sigv4": False}),
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


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


async def test_the_unbroken_proxy_passes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the proxy itself breaks nothing, so each mutant is caught for its violation."""
    async with BrokenEndpoint(None, monkeypatch) as ep:
        assert ep.target is not None
        report = await run_conformance(ep.target, settings=Settings(examples=15))
    bad = [
        f"{r.check.id} {r.outcome.value}: {r.message}"
        for r in report.results
        if r.outcome is not Outcome.PASS
    ]
    assert bad == []
    assert report.restore is not None
    assert report.restore.ok


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
