"""Building blocks of the mutation test's broken endpoints: request predicates, rewrites, store patches."""

from __future__ import annotations

import copy
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
    except ValueError:
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
