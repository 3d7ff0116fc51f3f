"""A refused write changes nothing: the image set is verified after every check that sent updates.

Algorithm. The session keeps a ledger: the image set's version and a digest of
its metadata as last verified (first at the preflight). Every update the
suite sends to the target image set is counted by its answer: accepted (2xx),
refused (any other status, 429s included) or unanswered. After a check that
sent updates, :func:`verify_writes` lets the image set settle, then reads it:

- its version must not pass the ledger's plus the number of accepted updates
  (a refused write that still made a version shows here, whatever its status);
- when nothing was accepted, its metadata must be the ledger's (a refused
  write that changed the content in place shows here).

A difference is recorded as a violation of OC06, naming the check and its
refused writes; then the ledger is read afresh. A check with unanswered
updates is not judged (a lost answer may hide an accepted write). Reads wait
for the image set to settle first, so a late apply is seen by OC06 and not,
by side effect, by whichever check runs next.
"""

from __future__ import annotations

from conformance._context import Abort, Context, Skip, digest
from conformance._http import Exchange
from conformance._results import Failure

__all__ = ["verify_writes"]

_SHOWN = 3


def _listed(refused: list[Exchange]) -> str:
    shown = ", ".join(f"{ex.label!r} ({ex.status})" for ex in refused[:_SHOWN])
    more = f" and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
    return shown + more


async def verify_writes(
    ctx: Context, *, who: str, accepted: int, refused: list[Exchange], unanswered: int
) -> None:
    """Check the image set against the ledger after ``who`` sent updates, then renew the ledger.

    Args:
        ctx: a context to read through (its requests are kept like any other).
        who: the check that sent the updates (for the message).
        accepted: updates of the target image set answered 2xx.
        refused: the exchanges of updates answered with any other status.
        unanswered: updates that got no answer.
    """
    session = ctx.session
    ledger = session.ledger
    if session.unreachable or session.stalled:
        return
    try:
        now = await ctx.settled()
        if ledger is not None and refused and not unanswered:
            session.refusals_verified += len(refused)
            version, before_digest = ledger
            want = int(version) + accepted
            if int(now.version) > want:
                extra = f" ({accepted} accepted)" if accepted else ""
                _record(
                    ctx,
                    f"after {who}'s refused write(s) {_listed(refused)} the image set is at version "
                    f"{now.version}, expected {want}{extra}: a refused write made a version",
                    refused[0],
                )
            elif int(now.version) < want:
                # fewer versions than accepted answers: not a refused write's doing (VS01/VS09 judge it)
                ctx.note(
                    f"{who}: {accepted} accepted update(s), the version moved by "
                    f"{int(now.version) - int(version)}"
                )
            elif not accepted and digest(await ctx.metadata(now.version)) != before_digest:
                _record(
                    ctx,
                    f"after {who}'s refused write(s) {_listed(refused)} the metadata of version "
                    f"{now.version} changed: a refused write changed the content",
                    refused[0],
                )
        elif unanswered and refused:
            ctx.note(f"{who}: {unanswered} update(s) got no answer; its refused writes were not verified")
        session.ledger = (now.version, digest(await ctx.metadata(now.version)))
    except (Abort, Skip):
        session.ledger = None


def _record(ctx: Context, message: str, ex: Exchange) -> None:
    ctx.session.refusal_failures.append(
        Failure(message=message, request=ex.summary(), curl=ex.curl(), response=ex.response_excerpt())
    )
