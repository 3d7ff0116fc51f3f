"""What a run produces: one :class:`Result` per check, gathered in a :class:`Report`."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance._registry import GROUPS, Check, CheckLevel

__all__ = ["Failure", "Outcome", "Report", "Restore", "Result"]


class Outcome(str, enum.Enum):
    """``fail`` is a broken MUST, ``warn`` a broken SHOULD."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """One violation a check found, with the exchange that shows it (if any).

    Args:
        message: what is wrong, naming the request and the rule (no PHI).
        request: ``METHOD path -> status`` summary of the exchange.
        curl: a curl reproduction, signature masked.
        response: status line, key headers and a body excerpt.
    """

    message: str
    request: str | None = None
    curl: str | None = None
    response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the ``--json`` report's failure entry)."""
        return {
            "message": self.message,
            "request": self.request,
            "curl": self.curl,
            "response": self.response,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The outcome of one check.

    Args:
        check: the check.
        outcome: pass / fail / warn / skip.
        message: one line: why it failed or was skipped, or what it saw.
        failures: the violations found (at most a few are kept).
        notes: remarks that are not violations (sub-cases not sent, retries).
        seconds: how long it took.
        requests: how many requests it sent.
    """

    check: Check
    outcome: Outcome
    message: str = ""
    failures: tuple[Failure, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (one entry of the ``--json`` report's results)."""
        return {
            "id": self.check.id,
            "group": self.check.group,
            "level": self.check.level.value,
            "description": self.check.description,
            "outcome": self.outcome.value,
            "message": self.message,
            "failures": [f.to_dict() for f in self.failures],
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Restore:
    """What happened to the image set after the run.

    Args:
        ok: the image set is back at the content it had (or nothing changed).
        message: what was done, or why it failed (loud in every report).
    """

    ok: bool
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A whole run.

    Args:
        endpoint: the endpoint URL.
        target: a one-line description of the target (ids, mode).
        results: one per selected check, in run order.
        seconds: wall time of the run.
        restore: what happened to the image set afterwards (None: not applicable).
        notes: run-wide notes (compatibility with older documentation, pacing).
        unreachable: why the endpoint could not be reached, or stopped answering
            (None: it answered throughout). With no results, nothing could be checked.
    """

    endpoint: str
    target: str
    results: tuple[Result, ...]
    seconds: float
    restore: Restore | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    unreachable: str | None = None

    def counts(self) -> dict[str, int]:
        """How many results have each outcome (``pass``, ``fail``, ``warn``, ``skip``)."""
        out = {o.value: 0 for o in Outcome}
        for r in self.results:
            out[r.outcome.value] += 1
        return out

    @property
    def must_failed(self) -> bool:
        """A MUST check failed (the run fails)."""
        return any(r.outcome is Outcome.FAIL and r.check.level is CheckLevel.MUST for r in self.results)

    @property
    def exit_status(self) -> int:
        """0: every MUST passed; 1: a MUST failed; 3: every MUST passed but the restore failed;
        4: the endpoint could not be reached (or stopped answering before a MUST failed)."""
        if self.must_failed:
            return 1
        if self.unreachable is not None:
            return 4
        if self.restore is not None and not self.restore.ok:
            return 3
        return 0

    def result(self, check_id: str) -> Result:
        """The result of one check, by id; ``KeyError`` when the check did not run."""
        for r in self.results:
            if r.check.id == check_id:
                return r
        raise KeyError(f"no result for check {check_id}")

    def by_group(self) -> list[tuple[str, Sequence[Result]]]:
        """The results grouped in checklist order, each group sorted by check id."""
        groups: list[tuple[str, Sequence[Result]]] = []
        for gid in GROUPS:
            members = [r for r in self.results if r.check.group == gid]
            if members:
                groups.append((gid, sorted(members, key=lambda r: r.check.id)))
        return groups

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data (what ``--json`` writes)."""
        return {
            "endpoint": self.endpoint,
            "target": self.target,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "exit_status": self.exit_status,
            "unreachable": self.unreachable,
            "restore": None
            if self.restore is None
            else {"ok": self.restore.ok, "message": self.restore.message},
            "notes": list(self.notes),
            "results": [r.to_dict() for r in self.results],
        }
