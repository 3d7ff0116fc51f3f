"""The emulator's admin API, under ``/_emulator/`` (outside every AWS route).

Unsigned JSON over HTTP, for seeding and inspecting a running emulator from
another process or language:

- ``GET /_emulator/health``: ``{"ok": true, "region"}``
- ``POST /_emulator/datastores`` with ``{"name"?}``: creates a datastore, ``{"datastoreId"}``
- ``POST /_emulator/datastores/{d}/imageSets`` with ``{"count", "series", "instances",
  "frames", "primary", "seed", "sameStudy"}`` (synthetic) or ``{"metadata", "primary"}``:
  ``{"imageSetIds": [...]}``

Bodies are strict JSON objects: a body that is not (deeply nested, ``NaN``, a
number out of range, a lone surrogate escape, a count out of its range) is a
400 naming the problem, never a 500.
- ``GET /_emulator/datastores/{d}/imageSets``: ``{"imageSetIds": [...]}``
- ``POST /_emulator/datastores/{d}/import`` with ``{"paths": [...], "primary"?}``: imports
  DICOM P10 files the emulator can read; the import report (counts, skipped paths, ids)
- ``GET /_emulator/datastores/{d}/imageSets/{i}/history``: every version with its metadata
- ``POST /_emulator/datastores/{d}/imageSets/{i}/failNextApply`` with ``{"message"?}``:
  the next accepted update ends UPDATE_FAILED
- ``GET /_emulator/stats``: requests per operation and status, faults drawn
- ``POST /_emulator/reset``: back to the start (the image sets seeded at start, an empty
  call log, the starting configuration): a test suite's per-test reset
- ``POST /_emulator/settle`` with ``{"imageSetIds"?}``: ends every open apply window now,
  ``{"settled": n}``
- ``GET /_emulator/calls?operation=&status=``: the call log, ``{"calls": [{"operation",
  "status", "errorType", "params", "updated", "removed", ...}]}`` (no attribute values)
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import random
from typing import Any

from aiohttp import web

from async_hi import contract
from async_hi.emulator._app import STATE_KEY, State, call_json
from async_hi.emulator._dicom_import import add_to_store, read_dicom
from async_hi.emulator._seed import synthetic_metadata
from async_hi.emulator._store import ApiError, ImageSet

__all__ = ["add_admin_routes", "history", "seed_image_sets"]

PREFIX = "/_emulator"
#: image sets one seeding request may make
MAX_SEED_COUNT = 100_000


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def seed_image_sets(
    state: State,
    datastore_id: str,
    *,
    count: int = 1,
    series: int = 2,
    instances: int = 3,
    frames: int = 1,
    primary: bool = False,
    seed: int | None = None,
    same_study: bool = False,
) -> list[ImageSet]:
    """Add ``count`` image sets of synthetic metadata (see ``synthetic_metadata``)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    rng = random.Random(seed)
    out: list[ImageSet] = []
    study_uid: str | None = None
    for _ in range(count):
        doc = synthetic_metadata(
            rng, series=series, instances=instances, frames=frames, study_instance_uid=study_uid
        )
        if same_study:
            study_uid = doc["Study"]["DICOM"]["StudyInstanceUID"]
        out.append(state.store.add_image_set(datastore_id, doc, primary=primary))
    return out


def history(state: State, datastore_id: str, image_set_id: str) -> list[dict[str, Any]]:
    """Every version of an image set, oldest first, with its metadata."""
    image_set = state.store.image_set(datastore_id, image_set_id)
    return [
        {
            "versionId": str(v.version_id),
            "workflowStatus": v.workflow_status,
            "message": v.message,
            "forced": v.forced,
            "origin": v.origin,
            "requestDigest": v.request_digest,
            "createdAt": v.created_at,
            "updatedAt": v.updated_at,
            "metadata": v.metadata,
        }
        for v in image_set.versions
    ]


class _BadBody(ValueError):
    """A body the admin API refuses (a 400, never a 500): the message names the problem only."""


def _constant(name: str) -> Any:
    raise _BadBody(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadBody("a number is out of range")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: strict (no NaN, no 1e400), bounded nesting, no lone surrogates."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_constant, parse_float=_finite)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be encoded
    except RecursionError:
        raise _BadBody("the body is nested too deeply") from None
    except UnicodeError:
        raise _BadBody("the body is not UTF-8 text (or holds a lone surrogate escape)") from None
    except json.JSONDecodeError as exc:
        raise _BadBody(f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise _BadBody("the body must be a JSON object")
    return data


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _BadBody(f"{key} must be an integer from {low} to {high}")
    return value


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({"ok": True, "region": state.config.region})


async def create_datastore(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = await _json_body(request)
    except ValueError as exc:
        return _err(400, f"bad JSON: {exc}")
    ds = state.store.create_datastore(str(body.get("name", "datastore")))
    return web.json_response({"datastoreId": ds.datastore_id}, status=201)


async def seed(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    d = request.match_info["d"]
    if d not in state.store.datastores:
        return _err(404, "no such datastore")
    try:
        body = await _json_body(request)
        if "metadata" in body:
            doc = body["metadata"]
            if not isinstance(doc, dict):
                raise _BadBody("metadata must be an object")
            sets = [state.store.add_image_set(d, doc, primary=bool(body.get("primary", False)))]
        else:
            seed = body.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise _BadBody("seed must be an integer")
            sets = seed_image_sets(
                state,
                d,
                count=_int(body, "count", 1, 1, MAX_SEED_COUNT),
                series=_int(body, "series", 2, 1, 1000),
                instances=_int(body, "instances", 3, 1, 10_000),
                frames=_int(body, "frames", 1, 1, 10_000),
                primary=bool(body.get("primary", False)),
                seed=seed,
                same_study=bool(body.get("sameStudy", False)),
            )
    except (ValueError, TypeError) as exc:  # ours: they name the problem, never a value
        return _err(400, str(exc))
    return web.json_response({"imageSetIds": [s.image_set_id for s in sets]}, status=201)


async def import_dicom(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    d = request.match_info["d"]
    if d not in state.store.datastores:
        return _err(404, "no such datastore")
    try:
        body = await _json_body(request)
    except ValueError as exc:
        return _err(400, f"bad JSON: {exc}")
    paths = body.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        return _err(400, "paths must be a non-empty list of strings (files, folders or globs)")
    primary = body.get("primary", True)
    if not isinstance(primary, bool):
        return _err(400, "primary must be true or false")
    # reading files blocks: off the loop; placing them in the store: on it
    batch = await asyncio.get_running_loop().run_in_executor(None, read_dicom, paths)
    report = add_to_store(state.store, d, batch, primary=primary)
    return web.json_response(report.to_json())


async def list_image_sets(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    ds = state.store.datastores.get(request.match_info["d"])
    if ds is None:
        return _err(404, "no such datastore")
    return web.json_response({"imageSetIds": list(ds.image_sets)})


async def get_history(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        versions = history(state, request.match_info["d"], request.match_info["i"])
    except ApiError as exc:
        return _err(404, exc.message)
    return web.json_response({"versions": versions})


async def fail_next_apply(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        image_set = state.store.image_set(request.match_info["d"], request.match_info["i"])
        body = await _json_body(request)
    except ApiError as exc:
        return _err(404, exc.message)
    except ValueError as exc:
        return _err(400, str(exc))
    message = body.get("message", "Injected apply failure")
    pattern = contract.shape("Message").metadata["pattern"]
    if (
        not isinstance(message, str)
        or not 1 <= len(message) <= 2048
        or not contract.matches(pattern, message)
    ):
        return _err(400, f"message must be 1..2048 characters matching {pattern}")
    image_set.fail_next_apply = message
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    per: collections.Counter[str] = collections.Counter()
    for r in state.requests:
        per[f"{r.operation} {r.status}"] += 1
    return web.json_response({"requests": dict(per), "faults": state.faults.counts})


async def request_log(request: web.Request) -> web.Response:
    """The AWS requests seen, in arrival order, from index ``since``: ``[at, operation, status,
    error code, image set id, fault]`` each (``at``: the emulator's ``time.monotonic()``, which on one
    machine is every process's clock). Ids and codes only: no attribute values."""
    state = request.app[STATE_KEY]
    try:
        since = max(0, int(request.query.get("since", "0")))
    except ValueError:
        return _err(400, "since must be an integer")
    rows = [
        [r.at, r.operation, r.status, r.error_code, r.image_set_id, r.fault]
        for r in itertools.islice(state.requests, since, None)
    ]
    return web.json_response({"requests": rows, "next": since + len(rows)})


async def reset(request: web.Request) -> web.Response:
    """Back to the start: the baseline's image sets, an empty call log, the starting configuration."""
    request.app[STATE_KEY].reset()
    return web.json_response({"ok": True})


async def settle(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = await _json_body(request)
    except ValueError as exc:
        return _err(400, f"bad JSON: {exc}")
    ids = body.get("imageSetIds")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        return _err(400, "imageSetIds must be a list of strings")
    return web.json_response({"settled": state.store.settle_all(None if ids is None else frozenset(ids))})


async def calls(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    q = request.rel_url.query
    operation, status = q.get("operation"), q.get("status")
    out = [
        call_json(r)
        for r in state.requests
        if (operation is None or r.operation == operation) and (status is None or str(r.status) == status)
    ]
    return web.json_response({"calls": out})


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/health", health)
    r.add_post(f"{PREFIX}/datastores", create_datastore)
    r.add_post(f"{PREFIX}/datastores/{{d}}/imageSets", seed)
    r.add_get(f"{PREFIX}/datastores/{{d}}/imageSets", list_image_sets)
    r.add_post(f"{PREFIX}/datastores/{{d}}/import", import_dicom)
    r.add_get(f"{PREFIX}/datastores/{{d}}/imageSets/{{i}}/history", get_history)
    r.add_post(f"{PREFIX}/datastores/{{d}}/imageSets/{{i}}/failNextApply", fail_next_apply)
    r.add_get(f"{PREFIX}/stats", stats)
    r.add_get(f"{PREFIX}/requests", request_log)

    r.add_post(f"{PREFIX}/reset", reset)
    r.add_post(f"{PREFIX}/settle", settle)
    r.add_get(f"{PREFIX}/calls", calls)
