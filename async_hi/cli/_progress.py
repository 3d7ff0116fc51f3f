"""Progress and the summary of a bulk job: a live display on a terminal, plain lines elsewhere.

Everything shown is counts, rates, ids, line numbers and error codes; never an
attribute value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["EXIT_CODES", "JobSummary", "Progress", "Snapshot", "exit_codes_help", "print_summary"]

#: every exit code of ``async-hi update`` (``--help`` and the README print this table)
EXIT_CODES = {
    0: "every request applied (now, or in an earlier run of the journal)",
    1: "the job ran to its end, and some request failed, was invalid, failed in an earlier run, "
    "or was not sent (--stop-on-error)",
    2: "could not start, or had to stop, for a reason outside the requests: bad arguments, no "
    "manifest, a journal that is not ours, corrupt, locked, of another manifest or edited, a call "
    "from a crash that could not be settled, the service or Redis unreachable (with "
    "--redis-unavailable fail, sending stops: unsent requests stay unsent, not failed). Nothing "
    "was sent that should not be; fix the cause and run again with the same --journal",
    3: "an internal error (a bug of async-hi); the journal stays consistent: run again to resume",
    130: "interrupted by Ctrl-C, at any phase: calls in flight finished and journaled (a second "
    "Ctrl-C abandons them to the next run's reconcile); run again with the same --journal",
}


def exit_codes_help() -> str:
    """The exit-code table as plain text, for ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


#: failures and invalid lines listed in a summary, at most (the counts are always complete)
MAX_LISTED = 50


@dataclass(slots=True)
class Snapshot:
    """The numbers a progress line shows."""

    done: int = 0
    failed: int = 0
    total: int | None = None
    in_flight: int = 0
    throttles: int = 0
    conflicts: int = 0
    limiter_rate: float = 0.0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def line(s: Snapshot) -> str:
    """One plain progress line."""
    total = f"/{s.total}" if s.total is not None else ""
    return (
        f"{s.done}{total} done, {s.failed} failed, {s.in_flight} in flight, {s.rate:.3g}/s, "
        f"ETA {_duration(s.eta())}, 429s {s.throttles}, 409s {s.conflicts}, limiter {s.limiter_rate:.3g} tps"
    )


class Progress:
    """Shows a :class:`Snapshot` every ``interval`` seconds: rich Live on a terminal, else plain lines.

    Args:
        snapshot: returns the current numbers.
        console: where to draw (stderr by default).
        enabled: False shows nothing (``--json``, ``--no-progress``).
        interval: seconds between plain lines (the live display refreshes 4 times a second).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        console: Console | None = None,
        enabled: bool = True,
        interval: float = 5.0,
    ) -> None:
        self.snapshot = snapshot
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.interval = interval
        self._live: Live | None = None
        self._last_line = float("-inf")

    @property
    def live(self) -> bool:
        return self.enabled and self.console.is_terminal

    def __enter__(self) -> Progress:
        if self.live:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self) -> Text:
        return Text(line(self.snapshot()), style="bold")

    def tick(self) -> None:
        """Refresh the display (call it often; plain lines are rate-limited)."""
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.console.print("progress: " + line(self.snapshot()), highlight=False, soft_wrap=True)

    def note(self, message: str, *, always: bool = False) -> None:
        """A message above the display (manifest errors; ``always``: shown even without progress)."""
        if self.enabled or always:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)


@dataclass(slots=True)
class JobSummary:
    """The end of a job, for the table, the JSON output and the exit code."""

    manifest: str
    requests: int = 0
    applied: int = 0
    #: of ``applied``: found present after a lost answer (``already-applied``)
    already_applied: int = 0
    #: the rebase function had nothing left to do
    dropped: int = 0
    skipped: int = 0
    previously_failed: int = 0
    failed: int = 0
    #: may or may not have been applied (``OutcomeUnknownError``): look at the image set's history
    unknown: int = 0
    cancelled: int = 0
    invalid_lines: int = 0
    calls: int = 0
    saved_by_coalescing: int = 0
    throttles: int = 0
    conflicts: int = 0
    reconciled_landed: int = 0
    reconciled_not_landed: int = 0
    elapsed_seconds: float = 0.0
    interrupted: bool = False
    dry_run: bool = False
    #: why the job could not start or could not go on (PHI-free); None when it ran to its end
    error: str | None = None
    #: the error was a bug of async-hi, not of the input or the environment
    internal_error: bool = False
    #: (line, image set id, reason code)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    #: (line, problem)
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """See :data:`EXIT_CODES`."""
        if self.interrupted:
            return 130
        if self.internal_error:
            return 3
        if self.error is not None:
            return 2
        if self.failed or self.unknown or self.invalid_lines or self.previously_failed or self.cancelled:
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["failures"] = [{"line": n, "image_set_id": i, "reason": r} for n, i, r in self.failures]
        out["invalid"] = [{"line": n, "problem": p} for n, p in self.invalid]
        out["exit_code"] = self.exit_code
        return out


def print_summary(summary: JobSummary, *, as_json: bool, out: IO[str] | None = None) -> None:
    """The summary table (or one JSON object, on one line) on stdout."""
    if as_json:
        print(json.dumps(summary.to_json()), file=out, flush=True)
        return
    if summary.error is not None and not summary.requests and not summary.interrupted:
        return  # nothing ran: the one message on stderr says it all
    console = Console(file=out) if out is not None else Console()
    title = "dry run (nothing sent)" if summary.dry_run else "bulk update"
    console.print(f"{title}: {summary.manifest}", highlight=False, markup=False)
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, Any]] = [("requests", summary.requests)]
    if summary.dry_run:
        rows += [("valid", summary.requests), ("invalid lines", summary.invalid_lines)]
    else:
        rate = summary.applied / summary.elapsed_seconds if summary.elapsed_seconds > 0 else 0.0
        rows += [
            ("applied", summary.applied),
            ("  of which found already applied", summary.already_applied),
            ("nothing to do (rebase)", summary.dropped),
            ("already done (journal)", summary.skipped),
            ("failed earlier (journal)", summary.previously_failed),
            ("failed", summary.failed),
            ("outcome unknown", summary.unknown),
            ("not sent (stopped)", summary.cancelled),
            ("invalid lines", summary.invalid_lines),
            ("calls", summary.calls),
            ("calls saved by coalescing", summary.saved_by_coalescing),
            ("429s", summary.throttles),
            ("409s", summary.conflicts),
            (
                "in flight at the last crash: landed / not",
                f"{summary.reconciled_landed} / {summary.reconciled_not_landed}",
            ),
            ("elapsed", _duration(summary.elapsed_seconds)),
            ("applied per second", f"{rate:.3g}"),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for n, iset, reason in summary.failures[:MAX_LISTED]:
        word = "unknown" if reason == "OutcomeUnknownError" else "failed"
        console.print(f"{word}: line {n}, image set {iset}: {reason}", highlight=False, markup=False)
    for n, problem in summary.invalid[:MAX_LISTED]:
        console.print(f"invalid: line {n}: {problem}", highlight=False, markup=False)
    if summary.interrupted:
        console.print(
            "interrupted: calls in flight were finished and journaled; "
            "run again with the same --journal to resume",
            highlight=False,
            markup=False,
        )
    elif summary.error is not None:
        console.print(f"stopped: {summary.error}", highlight=False, markup=False)
