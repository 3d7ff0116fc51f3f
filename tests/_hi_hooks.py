"""Building blocks of the mutation test's broken endpoints: request predicates, rewrites, store patches."""

from __future__ import annotations

import copy
import gzip
import json
import re
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from async_hi import contract
from async_hi.emulator import Emulator
from async_hi.emulator._store import ApiError
from tests._hi_proxy import Req, Resp, current, error, fake_ok

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
            # a stale version is refused with 404 (the real service, E1) or 409; LOCKED with 409
            if exc.code in ("ConflictException", "ResourceNotFoundException"):
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
    except (ValueError, RecursionError):
        return False
    return True


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _locked_metadata_fails(req: Req, emu: Emulator) -> web.Response | None:
    """``before``: GetImageSetMetadata of an image set whose update is being applied answers 500."""
    if req.op != "getImageSetMetadata":
        return None
    d, i = req.ids
    try:
        locked = emu.store.image_set(d, i).state == "LOCKED"
    except ApiError:
        return None
    return error(500, "InternalServerException") if locked else None


# -- mutants of the checks added for #13 ----------------------------------------------------------


def on_ok(op: str, fn: Any) -> Any:
    """``after``: rewrite the JSON body of 200 answers to ``op`` (a route name like ``getImageSet``)."""

    def after(req: Req, resp: Resp, emu: Emulator) -> None:
        if req.op == op and resp.status == 200:
            body = resp.json()
            fn(req, body)
            resp.set_json(body)

    return after


def _lowercase_list_status(req: Req, body: dict[str, Any]) -> None:
    for item in body["imageSetPropertiesList"]:
        item["imageSetWorkflowStatus"] = item.pop("ImageSetWorkflowStatus")


def _string_times(req: Req, body: dict[str, Any]) -> None:
    body["createdAt"] = body["updatedAt"] = "2024-01-01T00:00:00Z"


def _numeric_list_versions(req: Req, body: dict[str, Any]) -> None:
    for item in body["imageSetPropertiesList"]:
        item["versionId"] = int(item["versionId"])


def _frozen_updated_at(req: Req, resp: Resp, emu: Emulator) -> None:
    if req.op in ("getImageSet", "listImageSetVersions") and resp.status == 200:
        body = resp.json()
        for rec in [body, *body.get("imageSetPropertiesList", [])]:
            if "updatedAt" in rec:
                rec["updatedAt"] = rec["createdAt"]
        resp.set_json(body)


def _plain_metadata(req: Req, resp: Resp, emu: Emulator) -> None:
    """The metadata as plain JSON, no Content-Encoding (what a naive server sends)."""
    if req.op == "getImageSetMetadata" and resp.status == 200:
        resp.body = gzip.decompress(resp.body)
        resp.headers.pop("content-encoding", None)


def _gzip_without_header(req: Req, resp: Resp, emu: Emulator) -> None:
    if req.op == "getImageSetMetadata" and resp.status == 200:
        resp.headers.pop("content-encoding", None)


def _drop_param(*names: str) -> Any:
    """``before``: ignore these query parameters (as an endpoint that does not read them)."""

    def before(req: Req, emu: Emulator) -> None:
        if any(req.param(n) is not None for n in names) and req.op != "updateImageSetMetadata":
            req.query = [(k, v) for k, v in req.query if k not in names]
            req.changed = True

    return before


def _fix_read_params(req: Req, emu: Emulator) -> None:
    """Bad ``version``/``maxResults`` on reads are dropped instead of refused."""
    bad = [
        k
        for k, v in req.query
        if (k == "version" and not v.isdigit())
        or (k == "maxResults" and not (v.isdigit() and 1 <= int(v) <= 50))
    ]
    if bad:
        req.query = [(k, v) for k, v in req.query if k not in bad]
        req.changed = True


def _force_always(req: Req, emu: Emulator) -> None:
    if _update(req) and req.param("force") is None:
        req.set_param("force", "true")


def _failed_without_message(emu: Emulator, mp: Any) -> None:
    _apply_fails(emu, mp)
    original = emu.store.settle

    def settle(image_set: Any) -> None:
        original(image_set)
        for v in image_set.versions:
            if v.workflow_status == "UPDATE_FAILED":
                v.message = None

    mp.setattr(emu.store, "settle", settle)


def _accept_very_stale(emu: Emulator, mp: Any) -> None:
    def wrap(original: Any, d: str, i: str, **kw: Any) -> Any:
        cur = emu.store.image_set(d, i).latest.version_id
        if kw["latest_version"] <= cur - 2:
            kw["latest_version"] = cur
        return original(d, i, **kw)

    _patch_update(emu, mp, wrap)


def _bad_force_applied_before(req: Req, emu: Emulator) -> None:
    """A 400 that still creates a version: force=yes is applied as force=true, then answered 400."""
    if _update(req) and req.param("force") not in (None, "true", "false"):
        req.set_param("force", "true")
        req.marks.add("refuse")


def _bad_force_applied_after(req: Req, resp: Resp, emu: Emulator) -> None:
    if "refuse" in req.marks:
        resp.status = 400
        resp.headers["x-amzn-errortype"] = "ValidationException"
        resp.set_json({"message": "force must be true or false"})


def _hide_in_progress(req: Req, body: dict[str, Any]) -> None:
    """List only versions already applied (E8: the real service lists the UPDATING one at once)."""
    body["imageSetPropertiesList"] = [
        item for item in body["imageSetPropertiesList"] if item.get("ImageSetWorkflowStatus") != "UPDATING"
    ]


def _foreign_arn(req: Req, body: dict[str, Any]) -> None:
    body["imageSetArn"] = body["imageSetArn"].replace(body["imageSetId"], "0" * 32)


def _unsigned_reads(req: Req, emu: Emulator) -> None:
    reads = ("getImageSet", "getImageSetMetadata", "listImageSetVersions")
    if req.op in reads and "Authorization" not in req.headers:
        req.changed = req.launder = True


def _metadata_first_version(req: Req, emu: Emulator) -> None:
    """GetImageSetMetadata without ``version`` answers version 1 instead of the latest."""
    if req.op == "getImageSetMetadata" and req.param("version") is None:
        req.set_param("version", "1")


def _created_201(req: Req, resp: Resp, emu: Emulator) -> None:
    if _update(req) and resp.status == 200:
        resp.status = 201


def _foreign_metadata_ids(req: Req, resp: Resp, emu: Emulator) -> None:
    if req.op == "getImageSetMetadata" and resp.status == 200:
        doc = json.loads(gzip.decompress(resp.body))
        doc["ImageSetID"] = "0" * 32
        resp.body = gzip.compress(json.dumps(doc).encode())


# -- negative controls: conformant variations the suite must pass -------------------------------


def _type_suffix(req: Req, resp: Resp, emu: Emulator) -> None:
    code = resp.headers.get("x-amzn-errortype")
    if resp.status >= 400 and code:
        resp.headers["x-amzn-errortype"] = (
            f"{code}:http://internal.amazon.com/coral/com.amazon.coral.validate/"
        )


def _extra_members(req: Req, resp: Resp, emu: Emulator) -> None:
    body = resp.json() if req.op != "getImageSetMetadata" or resp.status != 200 else None
    if isinstance(body, dict):
        body["someNewMember"] = {"x": 1}
        for item in body.get("imageSetPropertiesList", []):
            item["anotherNewMember"] = True
        resp.set_json(body)


def _header_case(req: Req, resp: Resp, emu: Emulator) -> None:
    resp.headers = {k.upper() if k.startswith("x-") else k.title(): v for k, v in resp.headers.items()}


def _extra_headers(req: Req, resp: Resp, emu: Emulator) -> None:
    resp.headers.update({"x-amz-cf-id": "cf-1", "x-amz-apigw-id": "a-1", "via": "1.1 proxy", "x-extra": "1"})


def throttle_some(every: int, seconds: str = "1") -> Any:
    """``before``: answer every ``every``-th request 429 with ``Retry-After`` (the retry goes through)."""
    seen = {"n": 0}

    def before(req: Req, emu: Emulator) -> web.Response | None:
        seen["n"] += 1
        if seen["n"] % every:
            return None
        resp = error(429, "ThrottlingException", "Rate exceeded")
        resp.headers["Retry-After"] = seconds
        return resp

    return before


def _short_pages(req: Req, emu: Emulator) -> None:
    """Pages of one version whatever valid ``maxResults`` asked (invalid ones are refused as before)."""
    asked = req.param("maxResults")
    if req.op == "listImageSetVersions" and (asked is None or (asked.isdigit() and 1 <= int(asked) <= 50)):
        req.set_param("maxResults", "1")
