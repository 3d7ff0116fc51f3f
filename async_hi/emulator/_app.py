"""The aiohttp application: the four AWS routes, their wire format and checks.

A request goes: size limit -> SigV4 -> drawn fault -> quota -> validation
against the service model -> the store. Every response carries
``x-amzn-RequestId``; every error is ``{"message"}`` with ``x-amzn-ErrorType``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextvars
import copy
import gzip
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from botocore.model import OperationModel

from async_hi import contract
from async_hi.emulator._config import EmulatorConfig
from async_hi.emulator._faults import FaultInjector, Throttle
from async_hi.emulator._sigv4 import SigV4Error, verify
from async_hi.emulator._store import ApiError, Datastore, ImageSet, Store, Version

__all__ = ["RequestRecord", "State", "attribute_names", "build_app", "call_json"]

_ROUTES = {
    "updateImageSetMetadata": "UpdateImageSetMetadata",
    "getImageSet": "GetImageSet",
    "getImageSetMetadata": "GetImageSetMetadata",
    "listImageSetVersions": "ListImageSetVersions",
}
_FRONT_DOOR_STATUS = {
    "RequestEntityTooLargeException": 413,
    "UnknownOperationException": 404,
    "MethodNotAllowedException": 405,
}
_INTEGER = re.compile(r"-?[0-9]{1,18}")
STATE_KEY: web.AppKey[State] = web.AppKey("async_hi_state")
# what handling a request learnt, for its RequestRecord (each request runs in its own task)
_NOTES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("async_hi_request_notes")


def attribute_names(doc: Any) -> tuple[str, ...]:
    """``"Level.Keyword"`` of every attribute an update document names, sorted; never a value or a UID.

    A whole series or instance removed (an empty object) is ``"Series"`` or ``"Instance"``.
    """
    if not isinstance(doc, dict):
        return ()
    names: set[str] = set()

    def dicom(level: str, node: Any) -> None:
        if isinstance(node, dict) and isinstance(node.get("DICOM"), dict):
            names.update(f"{level}.{k}" for k in node["DICOM"])

    dicom("Patient", doc.get("Patient"))
    study = doc.get("Study")
    dicom("Study", study)
    series_map = study.get("Series") if isinstance(study, dict) else None
    for series in series_map.values() if isinstance(series_map, dict) else ():
        if series == {}:
            names.add("Series")
            continue
        dicom("Series", series)
        instances = series.get("Instances") if isinstance(series, dict) else None
        for instance in instances.values() if isinstance(instances, dict) else ():
            if instance == {}:
                names.add("Instance")
            dicom("Instance", instance)
    return tuple(sorted(names))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One AWS request as the emulator saw it (no attribute values unless ``State.record_values``)."""

    at: float  # monotonic seconds when the request arrived
    operation: str
    status: int  # 0 when the connection was dropped
    error_code: str | None
    image_set_id: str | None
    request_id: str
    datastore_id: str | None = None
    #: URI and query members, named and typed as the service model has them (None: they did not validate)
    params: Mapping[str, Any] | None = None
    #: the fault injected into it: "error", "throttle", "drop", "lost" or "slow"
    fault: str | None = None
    #: UpdateImageSetMetadata: "Level.Keyword" of each attribute updated or removed (never a value)
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    revert_to_version_id: str | None = None
    #: UpdateImageSetMetadata: the decoded attribute documents, kept only while ``State.record_values``
    documents: Mapping[str, Any] | None = None


def call_json(r: RequestRecord) -> dict[str, Any]:
    """A logged request as JSON (the admin API's call log): no attribute values unless recorded."""
    return {
        "operation": r.operation,
        "status": r.status,
        "errorType": r.error_code,
        "datastoreId": r.datastore_id,
        "imageSetId": r.image_set_id,
        "params": dict(r.params or {}),
        "updated": list(r.updated),
        "removed": list(r.removed),
        "revertToVersionId": r.revert_to_version_id,
        "documents": r.documents,
        "fault": r.fault,
        "requestId": r.request_id,
    }


class State:
    """Everything one running emulator holds."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.initial_config = config
        self.baseline: dict[str, Datastore] = {}
        self.store = Store(lock_seconds=config.lock_seconds)
        self.throttle = Throttle(config.quotas or {})
        self.faults = FaultInjector(config.faults)
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=200_000)
        #: keep each update's decoded attribute documents in its RequestRecord (tests; may hold PHI)
        self.record_values = False

    def reconfigure(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store.lock_seconds = config.lock_seconds
        self.throttle = Throttle(config.quotas or {})
        self.faults = FaultInjector(config.faults)

    def set_baseline(self) -> None:
        """Make the datastores and image sets held now what :meth:`reset` returns to (a copy)."""
        self.baseline = copy.deepcopy(self.store.datastores)

    def reset(self) -> None:
        """Back to the start: the baseline's datastores (none unless :meth:`set_baseline`), an empty
        request log, the first configuration (fresh quota buckets and fault stream). For tests."""
        self.store.datastores.clear()
        if self.baseline:
            self.store.datastores.update(copy.deepcopy(self.baseline))
        self.requests.clear()
        self.record_values = False
        self.reconfigure(self.initial_config)


class _Drop(Exception):
    """Close the connection without answering."""


def error_response(code: str, message: str, request_id: str) -> web.Response:
    try:
        status = contract.error_status(code)
    except KeyError:
        status = _FRONT_DOOR_STATUS.get(code, 403)
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id},
    )


def _ok(body: dict[str, Any], request_id: str) -> web.Response:
    return web.json_response(body, headers={"x-amzn-RequestId": request_id})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError("ValidationException", f"{what} is not valid JSON") from None
    try:
        # a "\ud800" escape decodes to a lone surrogate, which is no Unicode text: JSON leaves
        # it undefined (RFC 8259 section 8.2) and I-JSON forbids it (RFC 7493 section 2.1); the
        # SDK refuses to build one. Our choice: refuse it rather than store it.
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("ValidationException", f"{what} holds a lone UTF-16 surrogate escape") from None
    return doc


def _wire_params(request: web.Request, op: OperationModel) -> dict[str, Any]:
    """Read the URI and query members of ``op`` from the request, typed as the model says."""
    params: dict[str, Any] = {}
    problems: list[str] = []
    query = request.rel_url.query
    shape = op.input_shape
    assert shape is not None  # every operation we serve has an input
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if loc == "uri":
            raw: str | None = request.match_info[wire]
        elif loc == "querystring":
            values = query.getall(wire, [])
            if len(values) > 1:
                problems.append(f"{wire}: given {len(values)} times")
                continue
            raw = values[0] if values else None
        else:
            continue
        if raw is None:
            continue
        kind = member.type_name
        value: Any = raw
        if kind == "boolean":
            if raw not in ("true", "false"):
                problems.append(f"{wire}: must be true or false")
                continue
            value = raw == "true"
        elif kind in ("integer", "long"):
            if not _INTEGER.fullmatch(raw):
                problems.append(f"{wire}: must be an integer")
                continue
            value = int(raw)
        problems.extend(p.replace(name, wire, 1) for p in contract.validate_value(member, value, name))
        params[name] = value
    for req in shape.required_members:
        member = shape.members[req]
        if member.serialization.get("location") in ("uri", "querystring") and req not in params:
            wire = member.serialization.get("name", req)
            if not any(p.startswith(wire) for p in problems):
                problems.append(f"{wire}: required")
    if problems:
        raise ApiError("ValidationException", "; ".join(problems))
    return params


def _epoch(t: float) -> float:
    return round(t, 3)


def _image_set_arn(state: State, image_set: ImageSet) -> str:
    c = state.config
    return (
        f"arn:aws:medical-imaging:{c.region}:{c.account_id}:datastore/"
        f"{image_set.datastore_id}/imageset/{image_set.image_set_id}"
    )


def _version_properties(image_set: ImageSet, v: Version, *, list_form: bool) -> dict[str, Any]:
    state = image_set.state if v is image_set.latest else ("DELETED" if image_set.deleted else "ACTIVE")
    out: dict[str, Any] = {
        "imageSetId": image_set.image_set_id,
        "versionId": str(v.version_id),
        "imageSetState": state,
        # the model spells the list item's member with a capital I
        ("ImageSetWorkflowStatus" if list_form else "imageSetWorkflowStatus"): v.workflow_status,
        "createdAt": _epoch(image_set.created_at),
        "updatedAt": _epoch(v.updated_at),
        "isPrimary": image_set.is_primary,
    }
    if v.message:
        out["message"] = v.message
    if v.forced:
        out["overrides"] = {"forced": True}
    return out


async def _update(
    state: State, request: web.Request, p: dict[str, Any], body: bytes, rid: str
) -> web.Response:
    op = contract.operation("UpdateImageSetMetadata")
    ctype = request.headers.get("Content-Type", "")
    if not body:
        raise ApiError(
            "ValidationException", "the request body is empty; it must be a MetadataUpdates JSON object"
        )
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime != "application/json" and not mime.startswith("application/x-amz-json"):
        raise ApiError("ValidationException", "Content-Type must be application/json")
    updates = _parse_json(body, "the request body")
    assert op.input_shape is not None
    payload_shape = op.input_shape.members["updateImageSetMetadataUpdates"]
    problems = contract.validate_value(payload_shape, updates, "body")
    if problems:
        raise ApiError("ValidationException", "; ".join(problems))
    updatable = removable = None
    revert_to = None
    if "revertToVersionId" in updates:
        revert_to = int(updates["revertToVersionId"])
    else:
        dicom = updates["DICOMUpdates"]
        if not any(k in dicom for k in ("updatableAttributes", "removableAttributes")):
            raise ApiError(
                "ValidationException", "DICOMUpdates needs updatableAttributes or removableAttributes"
            )
        docs = {}
        for key in ("updatableAttributes", "removableAttributes"):
            if key in dicom:
                raw = contract.decode_blob(dicom[key])
                if raw[:1] not in (b"{", b" ", b"\n", b"\t", b"\r", b"["):
                    raise ApiError(
                        "ValidationException",
                        f"{key} is not a JSON document after base64 decoding (was it base64-encoded twice?)",
                    )
                docs[key] = _parse_json(raw, f"{key} (after base64 decoding)")
        updatable = docs.get("updatableAttributes")
        removable = docs.get("removableAttributes")
    _NOTES.get()["detail"] = {
        "updated": attribute_names(updatable),
        "removed": attribute_names(removable),
        "revert_to_version_id": None if revert_to is None else str(revert_to),
        "documents": {"updatableAttributes": updatable, "removableAttributes": removable}
        if state.record_values and revert_to is None
        else None,
    }
    digest = hashlib.sha256(body + request.rel_url.query_string.encode()).hexdigest()
    image_set = state.store.update(
        p["datastoreId"],
        p["imageSetId"],
        latest_version=int(p["latestVersionId"]),
        updatable=updatable,
        removable=removable,
        revert_to=revert_to,
        force=bool(p.get("force", False)),
        include_study=bool(p.get("includeStudyImageSets", False)),
        request_digest=digest,
    )
    v = image_set.latest
    return _ok(
        {
            "datastoreId": image_set.datastore_id,
            "imageSetId": image_set.image_set_id,
            "latestVersionId": str(v.version_id),
            "imageSetState": image_set.state,
            "imageSetWorkflowStatus": v.workflow_status,
            "createdAt": _epoch(image_set.created_at),
            "updatedAt": _epoch(v.updated_at),
        },
        rid,
    )


async def _get_image_set(
    state: State, request: web.Request, p: dict[str, Any], body: bytes, rid: str
) -> web.Response:
    image_set = state.store.image_set(p["datastoreId"], p["imageSetId"])
    version = p.get("versionId")
    v = image_set.version(int(version) if version is not None else None)
    out = _version_properties(image_set, v, list_form=False)
    out.pop("imageSetId")
    out = {
        "datastoreId": image_set.datastore_id,
        "imageSetId": image_set.image_set_id,
        **out,
        "imageSetArn": _image_set_arn(state, image_set),
    }
    return _ok(out, rid)


async def _get_metadata(
    state: State, request: web.Request, p: dict[str, Any], body: bytes, rid: str
) -> web.Response:
    image_set = state.store.image_set(p["datastoreId"], p["imageSetId"])
    version = p.get("versionId")
    if version is None:
        doc = image_set.applied_metadata()
    else:
        v = image_set.version(int(version))
        if v.workflow_status in ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY"):
            raise ApiError("ConflictException", f"version {v.version_id} is still being applied")
        doc = v.metadata
    blob = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), compresslevel=5)
    return web.Response(
        body=blob,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "x-amzn-RequestId": rid},
    )


async def _list_versions(
    state: State, request: web.Request, p: dict[str, Any], body: bytes, rid: str
) -> web.Response:
    image_set = state.store.image_set(p["datastoreId"], p["imageSetId"])
    max_results = int(p.get("maxResults") or 50)
    start = 0
    token = p.get("nextToken")
    if token is not None:
        try:
            prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
            start = int(offset)
            if prefix != image_set.image_set_id or start < 0:
                raise ValueError
        except ValueError:
            raise ApiError("ValidationException", "nextToken is not valid for this image set") from None
    newest_first = list(reversed(image_set.versions))
    page = newest_first[start : start + max_results]
    out: dict[str, Any] = {
        "imageSetPropertiesList": [_version_properties(image_set, v, list_form=True) for v in page]
    }
    if start + max_results < len(newest_first):
        out["nextToken"] = base64.urlsafe_b64encode(
            f"{image_set.image_set_id}:{start + max_results}".encode()
        ).decode()
    return _ok(out, rid)


_HANDLERS: dict[str, Callable[[State, web.Request, dict[str, Any], bytes, str], Awaitable[web.Response]]] = {
    "UpdateImageSetMetadata": _update,
    "GetImageSet": _get_image_set,
    "GetImageSetMetadata": _get_metadata,
    "ListImageSetVersions": _list_versions,
}


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError("RequestEntityTooLargeException", f"request body larger than {limit} bytes")
    chunks = []
    total = 0
    async for chunk in request.content.iter_chunked(65536):
        total += len(chunk)
        if total > limit:
            raise ApiError("RequestEntityTooLargeException", f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _origin_form(request: web.Request) -> str:
    """The request target's path and query as sent, whether it came in origin or absolute form."""
    url = request.rel_url
    query = url.raw_query_string
    return url.raw_path + (f"?{query}" if query else "")


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise _Drop


async def aws_route(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    rid = str(uuid.uuid4())
    operation = _ROUTES.get(request.match_info["op"])
    isid = request.match_info.get("imageSetId")
    arrived = time.monotonic()
    status = 0
    code: str | None = None
    notes: dict[str, Any] = {}
    _NOTES.set(notes)
    try:
        response = await _serve(state, request, operation, rid)
        status = response.status
        code = response.headers.get("x-amzn-ErrorType")
        return response
    except _Drop:
        # the transport is already aborted; nothing can be sent
        return web.Response(status=204)
    finally:
        detail = notes.get("detail") or {}
        state.requests.append(
            RequestRecord(
                arrived,
                operation or "Unknown",
                status,
                code,
                isid,
                rid,
                datastore_id=request.match_info.get("datastoreId"),
                params=notes.get("params"),
                fault=notes.get("fault"),
                **detail,
            )
        )


async def _serve(state: State, request: web.Request, operation: str | None, rid: str) -> web.StreamResponse:
    config = state.config
    if operation is None:
        return error_response("UnknownOperationException", "no such operation", rid)
    if request.method != "POST":
        return error_response("MethodNotAllowedException", f"{request.method} is not allowed; use POST", rid)
    try:
        body = await _read_body(request, config.max_body_bytes)
        if config.verify_sigv4:
            try:
                verify(
                    method=request.method,
                    # rel_url, not raw_path: a client may send the absolute form
                    # (http://host/path) as the request target, as httpx does through a proxy-style API
                    raw_path=_origin_form(request),
                    headers=request.headers,
                    body=body,
                    credentials=config.credentials,
                    region=config.region,
                    service=contract.SIGNING_NAME,
                )
            except SigV4Error as exc:
                return error_response(exc.code, exc.message, rid)
        fault = state.faults.draw(operation)
        if fault.kind or fault.delay:
            _NOTES.get()["fault"] = fault.kind or "slow"
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.kind == "error":
            return error_response("InternalServerException", "injected fault: internal error", rid)
        if fault.kind == "throttle":
            return error_response("ThrottlingException", "injected fault: rate exceeded", rid)
        if fault.kind == "drop":
            _drop_connection(request)
        if not state.throttle.allow(operation):
            retry = state.throttle.retry_after(operation)
            return error_response(
                "ThrottlingException",
                f"Rate exceeded for {operation}; retry in {math.ceil(retry * 1000)} ms",
                rid,
            )
        params = _wire_params(request, contract.operation(operation))
        _NOTES.get()["params"] = params
        response = await _HANDLERS[operation](state, request, params, body, rid)
        if fault.kind == "lost":
            _drop_connection(request)
        return response
    except ApiError as exc:
        response = error_response(exc.code, exc.message, rid)
        if exc.code == "RequestEntityTooLargeException":
            response.force_close()  # the rest of the body is never read
        return response
    except ValueError as exc:  # decode_blob and friends: bad client input
        return error_response("ValidationException", str(exc), rid)


async def fallback_route(request: web.Request) -> web.StreamResponse:
    """Anything outside the AWS and admin routes: a JSON 404."""
    return error_response("UnknownOperationException", "no such route", str(uuid.uuid4()))


def build_app(state: State) -> web.Application:
    """The aiohttp app serving the AWS routes (and the admin API, added by the caller)."""
    app = web.Application(client_max_size=state.config.max_body_bytes + 1)
    app[STATE_KEY] = state
    app.router.add_route("*", "/datastore/{datastoreId}/imageSet/{imageSetId}/{op}", aws_route)
    return app
