"""ER: the shape of every error response the run provoked.

These checks run last and examine every error answer of the run. If the run
provoked none of a kind (checks were deselected), they first provoke a few
themselves: a 400, a 403, a 404 and a 409.
"""

from __future__ import annotations

import functools
from typing import Any

from botocore.errorfactory import ClientExceptionsFactory
from botocore.parsers import create_parser

from async_hi import contract
from conformance import _model
from conformance._checks._common import MUST, SHOULD, current_version, other_id
from conformance._context import Context, Skip
from conformance._http import Exchange, Signing
from conformance._registry import Phase, check


async def _errors(ctx: Context) -> list[Exchange]:
    session = ctx.session
    if not session.provoked_errors:
        session.provoked_errors = True
        v = await current_version(ctx)
        body = ctx.marker_update()
        probes = [
            (ctx.update_probe("latestVersion=abc", body, version="abc"), "model"),
            (ctx.update_probe("unknown image set", body, version="1", i=other_id(ctx.i)), "semantics"),
            (ctx.update_probe("unsigned update", body, version=v, signing=Signing.UNSIGNED), "semantics"),
            (ctx.update_probe("stale latestVersion", body, version=str(int(v) - 1)), "semantics"),
        ]
        for probe, basis in probes:
            if ctx.vet(probe, "model" if basis == "model" else "semantics"):
                await ctx.send(probe)
    errors = [ex for ex in session.exchanges if ex.status is not None and ex.status >= 400]
    if not errors:
        raise Skip("the endpoint answered no request with an error (see RV, AU): nothing to examine")
    return errors


def _body_code(ex: Exchange) -> str | None:
    body = ex.json_or_none()
    if not isinstance(body, dict):
        return None
    for key in ("code", "Code", "__type"):
        raw = body.get(key)
        if isinstance(raw, str) and raw:
            return raw.split(":", 1)[0].rsplit("#", 1)[-1]
    return None


def _passed(ctx: Context, errors: list[Exchange]) -> None:
    if not ctx.failures:
        ctx.note(f"{len(errors)} error responses examined")


@check("ER01", MUST, "an error's status equals the modeled status of its code", phase=Phase.REVIEW)
async def er01(ctx: Context) -> None:
    errors = await _errors(ctx)
    for ex in errors:
        code = ex.error_code()
        want = _model.known_status(code) if code else None
        if want is not None and ex.status != want:
            ctx.fail(f"{ex.label}: {code} answered with {ex.status}; its status is {want}", ex)
    _passed(ctx, errors)


@check(
    "ER02", MUST, "error code resolvable: x-amzn-ErrorType, else body code, else __type", phase=Phase.REVIEW
)
async def er02(ctx: Context) -> None:
    errors = await _errors(ctx)
    for ex in errors:
        if ex.error_code() is None:
            ctx.fail(
                f"{ex.label}: {ex.status} without an error code (no x-amzn-ErrorType, code or __type)", ex
            )
    _passed(ctx, errors)


@check("ER03", MUST, "header and body error codes, when both present, agree", phase=Phase.REVIEW)
async def er03(ctx: Context) -> None:
    errors = await _errors(ctx)
    for ex in errors:
        header = ex.header("x-amzn-errortype")
        body = _body_code(ex)
        if header and body:
            head = header.split(":", 1)[0].rsplit("#", 1)[-1]
            if head != body:
                ctx.fail(f"{ex.label}: x-amzn-ErrorType says {head}, the body says {body}", ex)
    _passed(ctx, errors)


@check("ER04", MUST, "error bodies are JSON objects with a string message", phase=Phase.REVIEW)
async def er04(ctx: Context) -> None:
    errors = await _errors(ctx)
    for ex in errors:
        body = ex.json_or_none()
        if not isinstance(body, dict):
            ctx.fail(f"{ex.label}: the {ex.status} body is not a JSON object", ex)
        elif not isinstance(body.get("message"), str):
            ctx.fail(f"{ex.label}: the {ex.status} body has no string 'message'", ex)
    _passed(ctx, errors)


@functools.cache
def _exceptions() -> object:
    return ClientExceptionsFactory().create_client_exceptions(contract.service_model())


@check("ER05", MUST, "botocore raises the matching modeled exception class", phase=Phase.REVIEW)
async def er05(ctx: Context) -> None:
    errors = await _errors(ctx)
    parser = create_parser("rest-json")
    no_shape: Any = None  # parse as botocore does for an error: without an output shape
    modeled = set(contract.error_codes())
    for ex in errors:
        try:
            parsed = parser.parse(
                {"status_code": ex.status, "headers": ex.response_headers, "body": ex.response_body}, no_shape
            )
            code = str(parsed.get("Error", {}).get("Code", ""))
        except Exception as exc:  # botocore's parsers raise many kinds on bad bodies
            ctx.fail(f"{ex.label}: botocore cannot parse the {ex.status} answer: {type(exc).__name__}", ex)
            continue
        cls = _exceptions().from_code(code)  # type: ignore[attr-defined]
        if code in modeled:
            if cls.__name__ != code:
                ctx.fail(f"{ex.label}: botocore maps {code} to {cls.__name__}", ex)
        elif code in _model.FRONT_DOOR_STATUS:
            continue  # botocore raises ClientError with that code, as it does for AWS
        else:
            shown = code or "(empty)"
            ctx.fail(
                f"{ex.label}: botocore sees error code {shown}, not a modeled error: callers get a bare "
                "ClientError they cannot catch by class",
                ex,
            )
    _passed(ctx, errors)


@check("ER06", SHOULD, "Content-Type: application/json on errors", phase=Phase.REVIEW)
async def er06(ctx: Context) -> None:
    errors = await _errors(ctx)
    for ex in errors:
        ctype = (ex.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            ctx.fail(f"{ex.label}: the {ex.status} answer has Content-Type {ctype or '(none)'}", ex)
    _passed(ctx, errors)


@check("ER07", MUST, "5xx bodies are JSON, not empty or HTML", phase=Phase.REVIEW)
async def er07(ctx: Context) -> None:
    errors = await _errors(ctx)
    server = [ex for ex in errors if ex.status is not None and ex.status >= 500]
    for ex in server:
        if not isinstance(ex.json_or_none(), dict):
            ctx.fail(f"{ex.label}: the {ex.status} body is not a JSON object", ex)
    if not ctx.failures:
        ctx.note(f"{len(server)} 5xx answers among {len(errors)} errors")
