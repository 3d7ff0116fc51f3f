"""Running the checks: preflight, each check in order, then putting the image set back.

Order: checks whose requests change nothing (a conformant endpoint refuses
them), then checks that write, then reads over what the writes made, then
checks over every exchange the run saw (shapes, error shapes, request ids,
timing). A check never crashes the run: anything it raises becomes its
failure, with the reason. After a check that sent updates, the image set is
verified against the ledger (``conformance._ledger``) when OC06 runs.

Bounded: an endpoint nobody answers ends the run at the preflight (one
message, exit status 4); one that stops answering ends it there (later checks
skip); the first settle wait that runs out ends the write phase (later write
checks skip with the reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import httpx

from conformance._context import HARMLESS_ATTRIBUTE, Abort, Context, Session, Skip, digest
from conformance._ledger import verify_writes
from conformance._model import compatibility_notes
from conformance._pacing import NoPacing, Pacer, default_pacer
from conformance._registry import Check, CheckLevel, order_key, select_checks
from conformance._results import Outcome, Report, Restore, Result
from conformance._target import Settings, Target

__all__ = ["run_conformance"]


async def run_conformance(
    target: Target,
    *,
    settings: Settings | None = None,
    select: Iterable[str] = (),
    skip: Iterable[str] = (),
    pacer: Pacer | None = None,
    http: httpx.AsyncClient | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run the selected checks against ``target`` and return the report.

    Args:
        target: the endpoint and image set.
        settings: time bounds, examples, expected-status overrides.
        select: check ids or groups to run (all when empty).
        skip: check ids or groups to leave out.
        pacer: paces every request per operation; by default none for our
            emulator and the SDK's limiter with the documented quotas otherwise.
        http: the httpx client to send with (tests pass one; respx can mock it).
        on_result: called with each result as it is known (progress output).

    Raises:
        ValueError: ``select``/``skip`` names an unknown check or group.
    """
    settings = settings or Settings()
    checks = sorted(select_checks(list(select), list(skip)), key=lambda c: (c.phase, *order_key(c)))
    if pacer is None:
        pacer = NoPacing() if target.emulator else default_pacer()
    started = time.monotonic()
    own_http = http is None
    client = http or httpx.AsyncClient(follow_redirects=False)
    try:
        session = Session(target, settings, client, pacer)
        session.verify_refusals = any(c.id == "OC06" for c in checks)
        await _preflight(session)
        if session.unreachable:
            return Report(
                endpoint=target.endpoint_url,
                target=target.describe(),
                results=(),
                seconds=time.monotonic() - started,
                unreachable=session.unreachable,
                notes=(f"pacing: {pacer!r}",),
            )
        results = []
        for c in checks:
            result = await _run_one(session, c)
            results.append(result)
            if on_result is not None:
                on_result(result)
        restore = await _restore(session)
    finally:
        if own_http:
            await client.aclose()
    notes = list(compatibility_notes())
    if session.preflight:
        notes.insert(0, f"preflight: {session.preflight}")
    if session.stalled:
        notes.insert(0, f"write phase ended: {session.stalled}")
    if session.throttles:
        notes.append(
            f"{session.throttles} answers were 429 (throttled); {session.throttle_waited:.1f} s waited"
        )
    notes.append(f"pacing: {pacer!r}")
    return Report(
        endpoint=target.endpoint_url,
        target=target.describe(),
        results=tuple(results),
        seconds=time.monotonic() - started,
        restore=restore,
        notes=tuple(notes),
        unreachable=session.unreachable,
    )


async def _preflight(session: Session) -> None:
    ctx = Context(session, None)
    try:
        session.found = await ctx.settled()
        session.found_digest = digest(await ctx.metadata(session.found.version))
        session.ledger = (session.found.version, session.found_digest)
    except (Abort, Skip) as exc:
        message = exc.message if isinstance(exc, Abort) else str(exc)
        exchange = exc.exchange if isinstance(exc, Abort) else None
        exchange = exchange or (session.exchanges[-1] if session.exchanges else None)
        if exchange is not None and exchange.status is None:
            session.unreachable = f"cannot reach {session.target.endpoint_url}: {exchange.error}"
        session.preflight = message


async def _run_one(session: Session, check: Check) -> Result:
    ctx = Context(session, check)
    started = time.monotonic()
    outcome: Outcome | None = None
    message = ""
    try:
        if session.unreachable:
            raise Skip(session.unreachable)
        if check.writes:
            ctx.require_writes()
            if session.stalled:
                raise Skip(f"the write phase ended: {session.stalled}")
            await ctx.settled()
        await check.run(ctx)
    except Skip as exc:
        outcome, message = Outcome.SKIP, str(exc)
    except Abort as exc:
        ctx.fail(exc.message, exc.exchange)
    except Exception as exc:  # a check must never take the run down; say what happened instead
        ctx.fail(f"the check could not complete: {type(exc).__name__}: {exc}")
    if session.verify_refusals and (ctx.accepted_writes or ctx.refused_writes or ctx.unanswered_writes):
        await verify_writes(
            Context(session, None),
            who=check.id,
            accepted=ctx.accepted_writes,
            refused=ctx.refused_writes,
            unanswered=ctx.unanswered_writes,
        )
    if outcome is None:
        if ctx.failures:
            outcome = Outcome.FAIL if check.level is CheckLevel.MUST else Outcome.WARN
            message = ctx.failures[0].message
            extra = len(ctx.failures) - 1 + ctx.dropped
            if extra:
                message += f" (+{extra} more)"
        else:
            outcome = Outcome.PASS
            message = ctx.notes[-1] if ctx.notes else ""
    return Result(
        check=check,
        outcome=outcome,
        message=message,
        failures=tuple(ctx.failures),
        notes=tuple(ctx.notes),
        seconds=time.monotonic() - started,
        requests=ctx.requests,
    )


async def _restore(session: Session) -> Restore | None:
    """Put the image set back at the content it had when the run started (writes only)."""
    found = session.found
    if found is None:
        return None
    if session.unreachable or session.stalled:
        if not session.created_versions:
            return None
        why = session.unreachable or session.stalled
        return Restore(
            ok=False,
            message=(
                f"NOT RESTORED: {why}. The suite's writes touched only {HARMLESS_ATTRIBUTE} and StudyID; "
                f"revert with revertToVersionId={found.version} once the image set is ACTIVE."
            ),
        )
    ctx = Context(session, None)
    try:
        now = await ctx.settled()
    except Abort as exc:
        return Restore(ok=False, message=f"could not read the image set after the run: {exc.message}")
    if now.version == found.version:
        return Restore(ok=True, message=f"unchanged: still version {found.version}")
    if not session.target.allow_writes:
        return Restore(
            ok=False,
            message=(
                f"THE IMAGE SET CHANGED DURING A READ-ONLY RUN (version {found.version} -> {now.version}): "
                "the endpoint accepted a request a conformant endpoint refuses. Not reverted: writes were "
                "not allowed."
            ),
        )
    try:
        ex = await ctx.write(
            f"restore: revert to version {found.version}", {"revertToVersionId": found.version}, now.version
        )
        if ex.status != 200:
            raise Abort(f"the revert answered {ex.status} {ex.error_code() or ''}".rstrip(), ex)
        after = await ctx.settled()
        if (
            session.found_digest is not None
            and digest(await ctx.metadata(after.version)) != session.found_digest
        ):
            raise Abort(f"version {after.version} does not have the content of version {found.version}")
    except Abort as exc:
        return Restore(
            ok=False,
            message=(
                f"RESTORE FAILED: the image set is at version {now.version} or later, "
                "not back at the content "
                f"of version {found.version} ({exc.message}). The suite's writes touched only "
                f"{HARMLESS_ATTRIBUTE} and StudyID; revert it with revertToVersionId={found.version}."
            ),
        )
    return Restore(
        ok=True, message=f"reverted to the content of version {found.version} (now version {after.version})"
    )
