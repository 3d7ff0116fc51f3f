"""SR: the shape of a successful UpdateImageSetMetadata response.

All of them examine the run's first accepted update (``Context.first_write``).
"""

from __future__ import annotations

import time
from typing import Any

from botocore.parsers import create_parser

from async_hi import contract
from conformance import _model
from conformance._checks._common import MUST, SHOULD
from conformance._context import Abort, Context
from conformance._registry import check

_EPOCH_2023 = 1672531200.0
_TIMESTAMPS = ("createdAt", "updatedAt")


async def _body(ctx: Context) -> tuple[Any, Any]:
    first = await ctx.first_write()
    ex = first.exchange
    body = ex.json_or_none()
    if not isinstance(body, dict):
        raise Abort("the accepted update's body is not a JSON object", ex)
    return ex, body


def _output() -> Any:
    shape = contract.operation(_model.UPDATE).output_shape
    assert shape is not None
    return shape


@check("SR01", MUST, "valid update -> 200 with Content-Type: application/json", writes=True)
async def sr01(ctx: Context) -> None:
    ex = (await ctx.first_write()).exchange
    ctype = ex.header("content-type") or ""
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        ctx.fail(f"{ex.label}: Content-Type is {ctype or '(missing)'}, expected application/json", ex)


@check("SR02", MUST, "required members present; datastoreId and imageSetId echo the request", writes=True)
async def sr02(ctx: Context) -> None:
    ex, body = await _body(ctx)
    for name in _output().required_members:
        if body.get(name) is None:
            ctx.fail(f"{ex.label}: required member {name} is missing", ex)
    for name, want in (("datastoreId", ctx.d), ("imageSetId", ctx.i)):
        if name in body and body[name] != want:
            ctx.fail(f"{ex.label}: {name} does not echo the request's {name}", ex)


@check("SR03", MUST, "imageSetState and imageSetWorkflowStatus within the model's enums", writes=True)
async def sr03(ctx: Context) -> None:
    ex, body = await _body(ctx)
    members = _output().members
    for name in ("imageSetState", "imageSetWorkflowStatus"):
        if name not in body:
            continue
        allowed: list[str] = list(getattr(members[name], "enum", None) or [])
        if body[name] not in allowed:
            ctx.fail(f"{ex.label}: {name} {body[name]!r} is not one of {', '.join(allowed)}", ex)


@check("SR04", MUST, "timestamps are JSON numbers (epoch seconds)", writes=True)
async def sr04(ctx: Context) -> None:
    ex, body = await _body(ctx)
    for name in _TIMESTAMPS:
        if name not in body:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a string" if isinstance(value, str) else type(value).__name__
            ctx.fail(f"{ex.label}: {name} is {kind}, not a JSON number of epoch seconds", ex)


@check("SR05", SHOULD, "createdAt <= updatedAt, both after 2023 and not in the future", writes=True)
async def sr05(ctx: Context) -> None:
    ex, body = await _body(ctx)
    stamps = {n: body[n] for n in _TIMESTAMPS if isinstance(body.get(n), (int, float))}
    now = time.time() + 300  # clock skew allowance
    for name, value in stamps.items():
        if not _EPOCH_2023 <= value <= now:
            ctx.fail(f"{ex.label}: {name} {value} is not a plausible time (2023 .. now)", ex)
    if len(stamps) == 2 and stamps["createdAt"] > stamps["updatedAt"]:
        ctx.fail(f"{ex.label}: createdAt is later than updatedAt", ex)


@check("SR06", MUST, "latestVersionId is a string matching \\d+", writes=True)
async def sr06(ctx: Context) -> None:
    ex, body = await _body(ctx)
    shape = _output().members["latestVersionId"]
    problems = contract.validate_value(shape, body.get("latestVersionId"), "latestVersionId")
    for p in problems:
        ctx.fail(f"{ex.label}: {p}", ex)


@check("SR07", SHOULD, "message, if present, is 1..2048 characters of the model's pattern", writes=True)
async def sr07(ctx: Context) -> None:
    ex, body = await _body(ctx)
    if "message" in body:
        for p in contract.validate_value(_output().members["message"], body["message"], "message"):
            ctx.fail(f"{ex.label}: {p}", ex)


@check(
    "SR08",
    MUST,
    "the response parses with botocore's rest-json parser and a strict epoch parser",
    writes=True,
)
async def sr08(ctx: Context) -> None:
    ex, body = await _body(ctx)
    shape = _output()
    try:
        parsed = create_parser("rest-json").parse(
            {"status_code": ex.status, "headers": ex.response_headers, "body": ex.response_body}, shape
        )
    except Exception as exc:  # botocore raises many kinds on bad input; all mean "cannot parse"
        ctx.fail(f"{ex.label}: botocore cannot parse the response: {type(exc).__name__}: {exc}", ex)
        return
    if "Error" in parsed:
        ctx.fail(f"{ex.label}: botocore parsed the response as an error", ex)
    missing = [m for m in shape.required_members if m not in parsed]
    if missing:
        ctx.fail(f"{ex.label}: botocore's parse lacks required member(s) {', '.join(missing)}", ex)
    strict = [p for p in _model.output_problems(_model.UPDATE, body) if "unknown member" not in p]
    for p in strict:
        ctx.fail(f"{ex.label}: strict parse: {p}", ex)
