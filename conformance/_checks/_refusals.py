"""OC06 and OC08: refused writes, of any kind and however stale, change nothing.

OC06 sends a few refused writes of its own (stale, ahead, a malformed body),
verifies them like every other check's (``conformance._ledger``), and reports
every violation the run's verifications found: after each check that sent
updates, the image set was read once settled, and a refused write that made
a version or changed the content in place shows there, whatever its status.
"""

from __future__ import annotations

from conformance._checks._common import MUST
from conformance._context import CONFLICT, NOT_FOUND, Context, Skip
from conformance._ledger import verify_writes
from conformance._registry import Phase, check


@check(
    "OC06",
    MUST,
    "every refused write, whatever its status, leaves the version and the metadata unchanged",
    phase=Phase.JUDGE,
)
async def oc06(ctx: Context) -> None:
    session = ctx.session
    v = int((await ctx.snapshot()).version)
    for label, version in (("stale latestVersion", str(v - 1)), ("latestVersion ahead", str(v + 1))):
        probe = ctx.update_probe(label, ctx.marker_update(), version=version)
        if int(version) >= 1 and ctx.vet(probe, "semantics"):
            await ctx.send(probe)
    bad = ctx.update_probe(
        "both union members", {**ctx.marker_update(), "revertToVersionId": "1"}, version=str(v)
    )
    if ctx.vet(bad, "model"):
        await ctx.send(bad)
    await verify_writes(
        ctx,
        who="OC06",
        accepted=ctx.accepted_writes,
        refused=ctx.refused_writes,
        unanswered=ctx.unanswered_writes,
    )
    # verified here, not again by the runner
    ctx.accepted_writes, ctx.refused_writes, ctx.unanswered_writes = 0, [], 0
    for failure in session.refusal_failures:
        if len(ctx.failures) < ctx.settings.max_failures:
            ctx.failures.append(failure)
        else:
            ctx.dropped += 1
    if session.ledger is None and not ctx.failures:
        raise Skip("the image set could not be read back after the refused writes")
    if not ctx.failures:
        ctx.note(f"{session.refusals_verified} refused writes verified to change nothing")


@check(
    "OC08",
    MUST,
    "latestVersion two or more versions behind -> refused (404 not the latest, or 409), nothing changes",
    phase=Phase.REVIEW,
)
async def oc08(ctx: Context) -> None:
    v = int((await ctx.ensure_versions(3)).version)
    if v < 3:
        raise Skip(f"needs an image set with at least 3 versions (it has {v}); pass --allow-writes")
    seen = []
    for stale in sorted({v - 2, 1}, reverse=True):
        probe = ctx.update_probe(
            f"latestVersion {stale}, {v - stale} behind current {v}", ctx.marker_update(), version=str(stale)
        )
        ex = await ctx.refused(probe, {404, 409}, NOT_FOUND + CONFLICT, basis="semantics")
        if ex is not None and ex.status is not None:
            seen.append(f"{ex.status} {ex.error_code() or ''}".strip())
    if not ctx.failures and seen:
        ctx.note("refused with " + ", ".join(sorted(set(seen))))
