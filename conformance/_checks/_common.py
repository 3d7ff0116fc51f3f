"""Helpers the check modules share."""

from __future__ import annotations

import secrets

from async_hi import contract
from conformance import _model
from conformance._context import Abort, Context
from conformance._registry import CheckLevel

__all__ = ["AUTH_CODES", "MUST", "SHOULD", "codes_with_status", "current_version", "other_id"]

MUST = CheckLevel.MUST
SHOULD = CheckLevel.SHOULD


def codes_with_status(*statuses: int) -> tuple[str, ...]:
    """Every known error code (modeled or front door) answered with one of ``statuses``."""
    out = [c for c in contract.error_codes() if contract.error_status(c) in statuses]
    out += [c for c, s in _model.FRONT_DOOR_STATUS.items() if s in statuses and c not in out]
    return tuple(out)


AUTH_CODES = codes_with_status(403)


def other_id(*avoid: str) -> str:
    """A fresh id of the ``[0-9a-z]{32}`` form, different from ``avoid``."""
    while True:
        candidate = secrets.token_hex(16)
        if candidate not in avoid:
            return candidate


async def current_version(ctx: Context) -> str:
    """The image set's current version; "1" (with a note) when the target cannot say."""
    try:
        return (await ctx.snapshot()).version
    except Abort as exc:
        ctx.note(f"could not read the current version ({exc.message}); using 1")
        return "1"
