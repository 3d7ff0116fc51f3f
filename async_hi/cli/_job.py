"""One bulk job, shared by ``async-hi update`` and ``async-hi demo``.

Reads the manifest (bad lines reported and skipped, or the job stopped),
reconciles a resumed journal, runs ``update_many`` through the client, shows
progress, handles SIGINT (first: stop pulling and finish the calls in flight;
second: abandon them, their intents stay open for the next run) and returns
the :class:`JobSummary`.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from async_hi._bulk import BulkRun, reason_code, update_many
from async_hi._client import HealthImagingClient
from async_hi._journal import Fingerprint, Journal
from async_hi._manifest import ManifestEntry, ManifestError, read_manifest
from async_hi._reconcile import ClientVersionReader, reconcile
from async_hi.cli._progress import MAX_LISTED, JobSummary, Progress, Snapshot

__all__ = ["Interrupts", "count_lines", "dry_run", "run_job"]

_OP = "UpdateImageSetMetadata"


def count_lines(path: Path) -> int | None:
    """Requests in a manifest, roughly and cheaply (lines; for CSV less the header)."""
    try:
        with path.open("rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None
    return max(0, lines - 1) if path.suffix.lower() == ".csv" else lines


def _invalid(summary: JobSummary, error: ManifestError) -> None:
    summary.invalid_lines += 1
    if len(summary.invalid) < MAX_LISTED:
        summary.invalid.append((error.line, error.problem))


def dry_run(path: Path, progress: Progress, summary: JobSummary | None = None) -> JobSummary:
    """Read and validate the whole manifest offline; nothing is sent (``summary``: fill in this one)."""
    summary = summary if summary is not None else JobSummary(manifest=path.name)
    summary.dry_run = True
    for item in read_manifest(path):
        if isinstance(item, ManifestError):
            _invalid(summary, item)
            progress.note(str(item))
        else:
            summary.requests += 1
    return summary


def _entries(path: Path) -> Iterator[ManifestEntry]:
    for item in read_manifest(path):
        if isinstance(item, ManifestEntry):
            yield item


def _check_every_request(path: Path, journal: Journal) -> None:
    """Raise JournalMismatchError if any journaled request of the manifest changed."""
    for entry in _entries(path):
        journal.finished(entry.line, entry.update.digest())


class Interrupts:
    """Ctrl-C over a whole job, whatever phase it is in.

    Before the run (Redis check, journal, hashing the manifest, reconcile) and
    after it, Ctrl-C cancels what is going on: everything journaled so far
    stays, an intent being reconciled stays open for the next run. During the
    run, the first Ctrl-C stops pulling input and lets the calls in flight
    finish; the second abandons them (their intents stay open).
    """

    def __init__(self, summary: JobSummary, progress: Progress) -> None:
        self.summary = summary
        self.progress = progress
        self.run: BulkRun | None = None
        self.scope: anyio.CancelScope | None = None

    async def watch(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self.summary.interrupted = True
                run = self.run
                if run is not None and not run.stopping:
                    run.stop()
                    self.progress.note(
                        "stopping: finishing the calls in flight (Ctrl-C again to abandon them)", always=True
                    )
                    continue
                if run is not None:
                    self.progress.note(
                        "abandoning the calls in flight (the journal settles them on the next run)",
                        always=True,
                    )
                if self.scope is not None:
                    self.scope.cancel()

    async def guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` with Ctrl-C handled as above; its exceptions come out as themselves."""
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch)
            try:
                with anyio.CancelScope() as self.scope:
                    await body()
            except Exception as exc:
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure


async def run_job(
    path: Path,
    client: HealthImagingClient,
    *,
    concurrency: int,
    coalesce: bool = True,
    wait: bool = False,
    journal_path: Path | None = None,
    retry_failed: bool = False,
    accept_changed_manifest: bool = False,
    stop_on_error: bool = False,
    progress: Progress,
    summary: JobSummary | None = None,
    interrupts: Interrupts | None = None,
) -> JobSummary:
    """Apply a manifest through ``client``; see the module docstring.

    Args:
        path: the manifest.
        client: an open client (its limiter paces every call).
        concurrency: image sets with a call in flight, at most.
        coalesce: merge queued requests for one image set where provably equivalent.
        wait: wait for each update to be applied (UPDATE_FAILED then counts as failed).
        journal_path: journal to resume from and append to.
        retry_failed: with a journal, send again the requests that failed in earlier runs.
        accept_changed_manifest: with a journal written for another version of the
            manifest, go on (recording the new one) if no journaled request changed;
            the whole manifest is checked against the journal before anything is sent.
        stop_on_error: stop at the first bad line or failed request.
        progress: the display.
        summary: filled in as the job goes (so a caller keeps what was done if it raises).
        interrupts: the caller's Ctrl-C handling (its ``guard`` runs this); None: handle it here.

    Raises:
        JournalError: the journal is locked, corrupt, not a journal, or of another manifest
            (checked before anything is sent).
        LimiterUnavailableError: the shared limiter lost Redis (fail-closed): sending
            stopped, unsent requests were left unsent (``summary`` says how many).
    """
    summary = summary if summary is not None else JobSummary(manifest=path.name)
    job = _Job(path, client, summary, progress, interrupts or Interrupts(summary, progress))
    go = functools.partial(
        job.run,
        concurrency=concurrency,
        coalesce=coalesce,
        wait=wait,
        journal_path=journal_path,
        retry_failed=retry_failed,
        accept_changed_manifest=accept_changed_manifest,
        stop_on_error=stop_on_error,
    )
    if interrupts is None:
        await job.interrupts.guard(go)
    else:
        await go()
    return summary


class _Job:
    def __init__(
        self,
        path: Path,
        client: HealthImagingClient,
        summary: JobSummary,
        progress: Progress,
        interrupts: Interrupts,
    ) -> None:
        self.path = path
        self.client = client
        self.summary = summary
        self.progress = progress
        self.interrupts = interrupts
        self.bulk: BulkRun | None = None
        self.total = count_lines(path)
        self.started = time.monotonic()
        progress.snapshot = self.snapshot

    def snapshot(self) -> Snapshot:
        summary = self.summary
        op = self.client.stats()[_OP]
        s = self.bulk.stats if self.bulk is not None else None
        return Snapshot(
            done=summary.requests - summary.cancelled,
            failed=summary.failed + summary.unknown,
            total=self.total,
            in_flight=s.in_flight if s else 0,
            throttles=op.throttles,
            conflicts=op.conflicts,
            limiter_rate=op.rate,
            elapsed=time.monotonic() - self.started,
        )

    def entries(self, stop_on_error: bool) -> Iterator[ManifestEntry]:
        for item in read_manifest(self.path):
            if isinstance(item, ManifestError):
                _invalid(self.summary, item)
                self.progress.note(str(item))
                if stop_on_error:
                    raise item
                continue
            yield item

    async def run(
        self,
        *,
        concurrency: int,
        coalesce: bool,
        wait: bool,
        journal_path: Path | None,
        retry_failed: bool,
        accept_changed_manifest: bool,
        stop_on_error: bool,
    ) -> None:
        try:
            await self._run(
                concurrency=concurrency,
                coalesce=coalesce,
                wait=wait,
                journal_path=journal_path,
                retry_failed=retry_failed,
                accept_changed_manifest=accept_changed_manifest,
                stop_on_error=stop_on_error,
            )
        finally:
            summary, op = self.summary, self.client.stats()[_OP]
            if self.bulk is not None:
                summary.calls = self.bulk.stats.calls
                summary.saved_by_coalescing = self.bulk.stats.saved
            summary.throttles, summary.conflicts = op.throttles, op.conflicts
            summary.elapsed_seconds = time.monotonic() - self.started

    async def _run(
        self,
        *,
        concurrency: int,
        coalesce: bool,
        wait: bool,
        journal_path: Path | None,
        retry_failed: bool,
        accept_changed_manifest: bool,
        stop_on_error: bool,
    ) -> None:
        path, client, summary, progress = self.path, self.client, self.summary, self.progress
        reader = ClientVersionReader(client)
        async with contextlib.AsyncExitStack() as stack:
            journal = None
            if journal_path is not None:
                fingerprint = await anyio.to_thread.run_sync(
                    Fingerprint.of_file, path, abandon_on_cancel=True
                )
                journal = await stack.enter_async_context(
                    Journal(
                        journal_path,
                        retry_failed=retry_failed,
                        fingerprint=fingerprint,
                        accept_changed_input=accept_changed_manifest,
                    )
                )
                if accept_changed_manifest:
                    await anyio.to_thread.run_sync(
                        _check_every_request, path, journal, abandon_on_cancel=True
                    )
                verdicts = await reconcile(journal, _entries(path), reader)
                summary.reconciled_landed = sum(v.applied for v in verdicts)
                summary.reconciled_not_landed = len(verdicts) - summary.reconciled_landed
            bulk = self.bulk = update_many(
                self.entries(stop_on_error),
                apply=functools.partial(client.update_image_set_metadata, wait=wait),
                concurrency=concurrency,
                coalesce=coalesce,
                journal=journal,
                reader=reader if journal is not None else None,
                stop_on_error=stop_on_error,
            )
            outer = self.interrupts.scope
            with progress, anyio.CancelScope() as hard:
                self.interrupts.scope, self.interrupts.run = hard, bulk
                try:
                    async with bulk, anyio.create_task_group() as tg:
                        tg.start_soon(_ticker, progress)
                        async for outcome in bulk:
                            _count(summary, outcome)
                            progress.tick()
                        tg.cancel_scope.cancel()
                except ManifestError:
                    pass  # stop_on_error: reported already, and counted
                finally:
                    self.interrupts.scope, self.interrupts.run = outer, None


def _count(summary: JobSummary, outcome: Any) -> None:
    summary.requests += 1
    if outcome.status in ("applied", "already-applied"):
        summary.applied += 1
        summary.already_applied += outcome.status == "already-applied"
    elif outcome.status == "dropped":
        summary.dropped += 1
    elif outcome.status == "skipped":
        if outcome.previous == "failed":
            summary.previously_failed += 1
        else:
            summary.skipped += 1
    elif outcome.status == "cancelled":
        summary.cancelled += 1
    else:  # failed, update-failed, unknown
        if outcome.status == "unknown":
            summary.unknown += 1
        else:
            summary.failed += 1
        if len(summary.failures) < MAX_LISTED:
            summary.failures.append((outcome.index, outcome.request.image_set_id, reason_code(outcome.error)))


async def _ticker(progress: Progress) -> None:
    while True:
        progress.tick()
        await anyio.sleep(0.25)
