"""SR: the shape of every successful answer the run saw, judged by the shared validators.

These checks run last (``Phase.JUDGE``) over every 2xx exchange of the run:
every accepted update (not only the first), every GetImageSet,
GetImageSetMetadata and ListImageSetVersions answer. Each check reports the
problems ``conformance._validate`` files under its id. With writes allowed,
the run's first accepted update is made first if no check made one.
"""

from __future__ import annotations

from conformance import _model
from conformance._checks._common import MUST, SHOULD
from conformance._context import Abort, Context, Skip
from conformance._http import Exchange
from conformance._registry import Phase, check


async def _successes(ctx: Context, operations: tuple[str, ...] = ()) -> list[Exchange]:
    if operations == (_model.UPDATE,):
        ctx.require_writes()
    if ctx.target.allow_writes:
        try:
            await ctx.first_write()
        except Skip:
            pass  # the write phase ended (the reason is on the check that hit it): judge what was seen
        except Abort as exc:
            if not any(
                ex.probe.operation == _model.UPDATE and ex.status == 200 for ex in ctx.session.exchanges
            ):
                raise Abort(exc.message, exc.exchange) from None
    found = [
        ex
        for ex in ctx.session.exchanges
        if ex.status is not None
        and 200 <= ex.status < 300
        and (not operations or ex.probe.operation in operations)
    ]
    if not found:
        what = " or ".join(operations) if operations else "any request"
        raise Skip(f"no successful answer to {what} to examine")
    return found


async def _judge(ctx: Context, rule: str, operations: tuple[str, ...] = ()) -> None:
    answers = await _successes(ctx, operations)
    for ex in answers:
        found = [p.message for p in ctx.session.problems(ex) if p.rule == rule]
        if found:
            ctx.fail(f"{ex.label}: {'; '.join(found)}", ex)
    if not ctx.failures:
        kinds = sorted({ex.probe.operation for ex in answers})
        ctx.note(f"{len(answers)} successful answers examined ({', '.join(kinds)})")


@check("SR01", MUST, "every success answer has Content-Type: application/json", phase=Phase.JUDGE)
async def sr01(ctx: Context) -> None:
    await _judge(ctx, "SR01")


@check(
    "SR02",
    MUST,
    "required members present in every success answer; datastoreId and imageSetId echo the request",
    phase=Phase.JUDGE,
)
async def sr02(ctx: Context) -> None:
    await _judge(ctx, "SR02")


@check("SR03", MUST, "imageSetState and imageSetWorkflowStatus within the model's enums", phase=Phase.JUDGE)
async def sr03(ctx: Context) -> None:
    await _judge(ctx, "SR03")


@check("SR04", MUST, "timestamps are JSON numbers (epoch seconds) in every answer", phase=Phase.JUDGE)
async def sr04(ctx: Context) -> None:
    await _judge(ctx, "SR04")


@check("SR05", SHOULD, "createdAt <= updatedAt, both after 2023 and not in the future", phase=Phase.JUDGE)
async def sr05(ctx: Context) -> None:
    await _judge(ctx, "SR05")


@check(
    "SR06", MUST, "ids and version ids are strings of their pattern (latestVersionId, versionId \\d+)",
    phase=Phase.JUDGE,
)  # fmt: skip
async def sr06(ctx: Context) -> None:
    await _judge(ctx, "SR06")


@check("SR07", SHOULD, "message, if present, is 1..2048 characters of the model's pattern", phase=Phase.JUDGE)
async def sr07(ctx: Context) -> None:
    await _judge(ctx, "SR07")


@check(
    "SR08",
    MUST,
    "every JSON answer parses with botocore's rest-json parser and a strict parser",
    phase=Phase.JUDGE,
)
async def sr08(ctx: Context) -> None:
    await _judge(ctx, "SR08")


@check(
    "SR09",
    MUST,
    "member names exactly as modelled (list items spell ImageSetWorkflowStatus with a capital I)",
    phase=Phase.JUDGE,
)
async def sr09(ctx: Context) -> None:
    await _judge(ctx, "SR09")


@check(
    "SR10",
    MUST,
    "GetImageSetMetadata answers a gzip body with Content-Encoding: gzip, inflating to a JSON object",
    phase=Phase.JUDGE,
)
async def sr10(ctx: Context) -> None:
    await _judge(ctx, "SR10", ("GetImageSetMetadata",))


@check(
    "SR11",
    MUST,
    "an accepted update answers the in-progress state: imageSetState LOCKED, workflow UPDATING (E7)",
    phase=Phase.JUDGE,
)
async def sr11(ctx: Context) -> None:
    await _judge(ctx, "SR11", (_model.UPDATE,))
