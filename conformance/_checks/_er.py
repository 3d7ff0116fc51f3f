"""ER: the shape of every error response the run provoked.

These checks run last and examine every error answer of the run. If the run
provoked none of a kind (checks were deselected), they first provoke a few
themselves: a 400, a 403, a 404 and a 409.
"""

from __future__ import annotations

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


def _judge(ctx: Context, errors: list[Exchange], rule: str) -> None:
    """Fail for every problem the shared error validator finds under ``rule``."""
    for ex in errors:
        found = [p.message for p in ctx.session.problems(ex) if p.rule == rule]
        if found:
            ctx.fail(f"{ex.label}: {'; '.join(found)}", ex)
    if not ctx.failures:
        ctx.note(f"{len(errors)} error responses examined")


@check("ER01", MUST, "an error's status equals the modeled status of its code", phase=Phase.JUDGE)
async def er01(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER01")


@check(
    "ER02", MUST, "error code resolvable: x-amzn-ErrorType, else body code, else __type", phase=Phase.JUDGE
)
async def er02(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER02")


@check("ER03", MUST, "header and body error codes, when both present, agree", phase=Phase.JUDGE)
async def er03(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER03")


@check("ER04", MUST, "error bodies are JSON objects with a string message", phase=Phase.JUDGE)
async def er04(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER04")


@check("ER05", MUST, "botocore raises the matching modeled exception class", phase=Phase.JUDGE)
async def er05(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER05")


@check("ER06", SHOULD, "Content-Type: application/json on errors", phase=Phase.JUDGE)
async def er06(ctx: Context) -> None:
    _judge(ctx, await _errors(ctx), "ER06")


@check("ER07", MUST, "5xx bodies are JSON, not empty or HTML", phase=Phase.JUDGE)
async def er07(ctx: Context) -> None:
    errors = await _errors(ctx)
    server = [ex for ex in errors if ex.status is not None and ex.status >= 500]
    _judge(ctx, server, "ER07")
    if not ctx.failures:
        ctx.notes[-1:] = [f"{len(server)} 5xx answers among {len(errors)} errors"]
