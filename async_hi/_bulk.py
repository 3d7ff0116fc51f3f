"""``update_many``: a streaming bulk runner with per-image-set ordering and coalescing.

The shape of a run::

    input (sync or async iterable, pulled lazily)
      -> feeder: skip what the journal says is finished; route by image set
      -> one FIFO queue per image set with work (at most ``max_pending``
         requests held in all queues together; a full house stops the feeder)
      -> a pool of at most ``concurrency`` workers (grown on demand), each
         draining one image set at a time; queued image sets wait their turn
         in arrival order:
         pop the head, merge the requests queued behind it while provably
         equivalent, journal the intent, ``await apply(update)`` (with the
         version our last write to that image set created as ``version_hint``,
         when ``apply`` takes one), journal the outcome, report one Outcome
         per request
      -> a bounded stream of outcomes to the caller

So memory is O(concurrency + max_pending), never O(input); there are never
two writes in flight on one image set; and requests for one image set apply
in input order. It is structured with an anyio task group; the run is an
async context manager because a task group cannot safely live inside an
async generator (a cancellation would be delivered into the consumer's code).

If the input itself raises, the run stops as with ``run.stop()`` and the
error is re-raised when the ``async with`` block exits.

Stopping: ``run.stop()`` (what the CLI does on SIGINT) stops pulling input,
lets the calls in flight finish and be journaled, and reports every request
still queued as ``cancelled``; leaving the ``async with`` early cancels the
calls in flight instead (their journal intents stay open for ``reconcile``).

Halting: when ``apply`` raises :class:`~async_hi._errors.LimiterUnavailableError`
(a fail-closed shared limiter lost Redis), nothing more may be sent. That is
not a failure of the request: the run stops as with ``run.stop()``, the
request is reported ``cancelled`` (with the error), no outcome is journaled
for it (its intent stays open: the next run's ``reconcile`` settles whether
anything of it landed), queued requests are ``cancelled`` and never journaled,
so a re-run sends them as they are; the error is re-raised when the
``async with`` block exits.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from async_hi._coalesce import merge_updates
from async_hi._errors import LimiterUnavailableError, OutcomeUnknownError
from async_hi._journal import Journal, JournalError
from async_hi._outcomes import (
    ApplyFailedError,
    BulkStats,
    Outcome,
    OutcomeStatus,
    is_rejection,
    reason_code,
)
from async_hi._reconcile import VersionReader
from async_hi._updates import MetadataUpdate

__all__ = [
    "ApplyFailedError",
    "BulkRun",
    "BulkStats",
    "Outcome",
    "OutcomeStatus",
    "is_rejection",
    "reason_code",
    "update_many",
]

Item = MetadataUpdate | tuple[int, MetadataUpdate]


@dataclass(slots=True)
class _Queue:
    items: deque[tuple[int, MetadataUpdate]] = field(default_factory=deque)
    #: the image set's version after our last write (the next intent's base)
    version: str | None = None


def update_many(
    updates: Iterable[Item] | AsyncIterable[Item],
    *,
    apply: Callable[[MetadataUpdate], Awaitable[Any]],
    concurrency: int = 8,
    coalesce: bool = True,
    max_pending: int | None = None,
    journal: Journal | None = None,
    reader: VersionReader | None = None,
    stop_on_error: bool = False,
    split_on: Callable[[BaseException], bool] = is_rejection,
) -> BulkRun:
    """Apply many updates: ``async with update_many(...) as run: async for outcome in run: ...``.

    Args:
        updates: requests, each a ``MetadataUpdate`` (keyed by its position)
            or a ``(key, MetadataUpdate)`` pair such as a manifest entry (keyed
            by its line). Pulled lazily; may be infinite.
        apply: sends one request (``client.update_image_set_metadata``); its result
            should carry ``latest_version_id``. If it takes a ``version_hint`` keyword,
            it is given the version the image set's last write in this run created
            (of the last few thousand image sets written), so that write goes without
            reading the version first; a stale hint costs a refusal and a read.
        concurrency: image sets with a call in flight, at most.
        coalesce: merge requests queued for one image set where provably equivalent.
        max_pending: requests held in per-image-set queues, at most (default 4 x concurrency).
        journal: an open :class:`~async_hi._journal.Journal`: skip what is
            finished, journal intents and outcomes. Must have no open intents
            (run :func:`~async_hi._reconcile.reconcile` first).
        reader: reads an image set's current version for journal intents;
            required with ``journal``.
        stop_on_error: stop (as ``run.stop()``) at the first failed request.
        split_on: for a coalesced call that failed, whether to resend its
            requests one by one (default: the request was refused as invalid).

    Returns:
        A :class:`BulkRun`: an async context manager and async iterator of :class:`Outcome`.
    """
    return BulkRun(
        updates,
        apply=apply,
        concurrency=concurrency,
        coalesce=coalesce,
        max_pending=4 * concurrency if max_pending is None else max_pending,
        journal=journal,
        reader=reader,
        stop_on_error=stop_on_error,
        split_on=split_on,
    )


class BulkRun:
    """A running ``update_many``; see :func:`update_many`."""

    def __init__(
        self,
        updates: Iterable[Item] | AsyncIterable[Item],
        *,
        apply: Callable[[MetadataUpdate], Awaitable[Any]],
        concurrency: int,
        coalesce: bool,
        max_pending: int,
        journal: Journal | None,
        reader: VersionReader | None,
        stop_on_error: bool,
        split_on: Callable[[BaseException], bool],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        if journal is not None and reader is None:
            raise ValueError("reader is required with journal (intents record the image set's version)")
        self._input = updates
        self._apply = apply
        self._concurrency = concurrency
        self._coalesce = coalesce
        self._max_pending = max_pending
        self._journal = journal
        self._reader = reader
        self._stop_on_error = stop_on_error
        self._split_on = split_on
        self.stats = BulkStats()
        self._queues: dict[tuple[str, str], _Queue] = {}
        #: image set -> the version our last write created, for image sets whose queue emptied
        #: (bounded: the most recently written ones)
        self._versions: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._versions_kept = max(1024, 4 * max_pending)
        self._hint = _takes_version_hint(apply)
        self._hint_tries = 0
        self._hint_misses = 0  # hinted writes that were refused (409/stale) first
        self._workers = 0  # worker tasks started (at most concurrency)
        self._busy = 0  # workers draining an image set
        self._ready: MemoryObjectSendStream[tuple[str, str]] | None = None  # image sets waiting for a worker
        self._ready_receive: MemoryObjectReceiveStream[tuple[str, str]]
        self._inner: TaskGroup | None = None
        self._room = anyio.Event()
        self._stopping = False
        self._feed_scope: anyio.CancelScope | None = None
        self._send: MemoryObjectSendStream[Outcome] | None = None
        self._receive: MemoryObjectReceiveStream[Outcome] | None = None
        self._tg: TaskGroup | None = None
        self._input_error: Exception | None = None
        self._halt_error: LimiterUnavailableError | None = None

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<BulkRun applied={s.applied} failed={s.failed} skipped={s.skipped} in_flight={s.in_flight} "
            f"pending={s.pending} stopping={self._stopping}>"
        )

    async def __aenter__(self) -> BulkRun:
        if self._journal is not None and self._journal.open_intents:
            raise JournalError(
                f"the journal has {len(self._journal.open_intents)} call(s) with unknown outcome; "
                "run reconcile() before resuming"
            )
        self._send, self._receive = anyio.create_memory_object_stream[Outcome](self._concurrency + 1)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._main)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        assert self._receive is not None
        # leaving early (break, error) cancels the calls in flight; after a full
        # iteration everything has finished already
        self._tg.cancel_scope.cancel()
        self._receive.close()
        if exc_type is not None and not issubclass(exc_type, anyio.get_cancelled_exc_class()):
            # the caller's own error propagates as itself, not wrapped in an ExceptionGroup
            await self._tg.__aexit__(None, None, None)
            return None
        suppress = await self._tg.__aexit__(exc_type, exc, tb)
        if self._halt_error is not None and exc_type is None:
            raise self._halt_error
        if self._input_error is not None and exc_type is None:
            raise self._input_error
        return suppress

    def __aiter__(self) -> AsyncIterator[Outcome]:
        if self._receive is None:
            raise RuntimeError("use `async with update_many(...) as run:` before iterating")
        return self._receive.__aiter__()

    @property
    def stopping(self) -> bool:
        """``stop()`` was called (or ``stop_on_error`` fired)."""
        return self._stopping

    def stop(self) -> None:
        """Stop pulling input; finish the calls in flight; report queued requests as cancelled."""
        self._stopping = True
        self._room.set()
        if self._feed_scope is not None:
            self._feed_scope.cancel()

    # -- the feeder -------------------------------------------------------------

    async def _main(self) -> None:
        assert self._send is not None
        ready, self._ready_receive = anyio.create_memory_object_stream[tuple[str, str]](math.inf)
        async with self._send, anyio.create_task_group() as tg:
            self._inner = tg
            with ready, self._ready_receive:  # closing `ready` ends the workers once it is empty
                self._ready = ready
                await self._feed()

    async def _worker(self, ready: MemoryObjectReceiveStream[tuple[str, str]]) -> None:
        """Drain image sets, in the order they became ready, until there are no more."""
        async with ready:
            async for ident in ready:
                self._busy += 1
                try:
                    await self._drain(ident, self._queues[ident])
                finally:
                    self._busy -= 1

    async def _items(self) -> AsyncGenerator[tuple[int, MetadataUpdate], None]:
        position = 0
        if isinstance(self._input, AsyncIterable):
            async for item in self._input:
                yield _keyed(item, position)
                position += 1
        else:
            for item in self._input:
                yield _keyed(item, position)
                position += 1

    async def _feed(self) -> None:
        # a request pulled but not yet queued, and what to report for it if the feeder is stopped
        held: tuple[int, MetadataUpdate] | None = None
        held_as: OutcomeStatus = "cancelled"
        previous: str | None = None
        items = self._items()
        try:
            with anyio.CancelScope() as self._feed_scope:
                async for key, update in items:
                    self.stats.pulled += 1
                    held, held_as, previous = (key, update), "cancelled", None
                    if self._stopping:
                        break
                    if self._journal is not None:
                        previous = self._journal.finished(key, update.digest())
                        if previous is not None:
                            held_as = "skipped"
                            await self._report(key, update, held_as, previous=previous)
                            held = None
                            continue
                    await self._route(key, update)
                    held = None
        except Exception as exc:  # the input failed: drain what is in flight, then re-raise it
            self._input_error = exc
            self.stop()
        finally:
            with anyio.CancelScope(shield=True):
                await items.aclose()
        if held is not None:
            await self._report(held[0], held[1], held_as, previous=previous)

    async def _report(self, key: int, update: MetadataUpdate, status: OutcomeStatus, **kw: Any) -> None:
        if status == "skipped":
            self.stats.skipped += 1
        elif status == "cancelled":
            self.stats.cancelled += 1
        await self._emit(Outcome(index=key, request=update, status=status, **kw))

    async def _emit(self, outcome: Outcome) -> None:
        assert self._send is not None
        await self._send.send(outcome)

    async def _route(self, key: int, update: MetadataUpdate) -> None:
        while self.stats.pending >= self._max_pending:
            # the queues are full: stop pulling input until a drain makes room
            self._room = anyio.Event()
            await self._room.wait()
        ident = (update.datastore_id, update.image_set_id)
        queue = self._queues.get(ident)
        if queue is not None:
            self._push(queue, key, update)
            return
        # a new image set: queue it even when every worker is busy, so the feeder keeps
        # pulling (and later requests for busy image sets can queue up and coalesce)
        queue = self._queues[ident] = _Queue(version=self._versions.get(ident))
        self._push(queue, key, update)
        assert self._ready is not None
        assert self._inner is not None
        self._ready.send_nowait(ident)  # workers take image sets in arrival order
        waiting = self._ready.statistics().current_buffer_used
        if self._workers < self._concurrency and self._workers - self._busy < waiting:
            # a fixed pool, grown on demand up to `concurrency` workers (not a task per image set)
            self._workers += 1
            self._inner.start_soon(self._worker, self._ready_receive.clone())

    def _hints_pay(self) -> bool:
        """Whether version hints still save more than they cost.

        A read costs 1/100 of a write's quota at the documented defaults; a refused hinted
        write costs a whole write (the image set was still LOCKED applying our last write, or
        someone else wrote). Hints stop once more than max(2, 1 in 50) of them were refused.
        """
        return self._hint_misses <= max(2, self._hint_tries // 50)

    def _push(self, queue: _Queue, key: int, update: MetadataUpdate) -> None:
        queue.items.append((key, update))
        self.stats.pending += 1
        self.stats.peak_pending = max(self.stats.peak_pending, self.stats.pending)

    # -- one image set ------------------------------------------------------------

    async def _drain(self, ident: tuple[str, str], queue: _Queue) -> None:
        try:
            while queue.items and not self._stopping:
                batch = [queue.items.popleft()]
                update = batch[0][1]
                while self._coalesce and queue.items:
                    merged = merge_updates(update, queue.items[0][1])
                    if merged is None:
                        break
                    update = merged
                    batch.append(queue.items.popleft())
                self.stats.pending -= len(batch)
                self._room.set()
                await self._call(ident, queue, batch, update)
            while queue.items:  # stopped: what is still queued was never sent
                key, request = queue.items.popleft()
                self.stats.pending -= 1
                await self._report(key, request, "cancelled")
        finally:
            del self._queues[ident]
            self._room.set()

    async def _call(
        self,
        ident: tuple[str, str],
        queue: _Queue,
        batch: list[tuple[int, MetadataUpdate]],
        update: MetadataUpdate,
    ) -> None:
        keys = [k for k, _ in batch]
        intent: int | None = None
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            if self._journal is not None:
                assert self._reader is not None
                base = queue.version or update.latest_version_id or await self._reader.latest_version(*ident)
                intent = await self._journal.intent(
                    keys=keys,
                    digests=[r.digest() for _, r in batch],
                    datastore_id=ident[0],
                    image_set_id=ident[1],
                    base=base,
                )
            self.stats.calls += 1
            if self._hint and queue.version is not None and self._hints_pay():
                # the version our own last write created: written at without reading it first
                # (a hint, not a precondition: if someone else wrote since, or the image set is
                # still LOCKED applying our last write, the refusal costs a read)
                self._hint_tries += 1
                result = await self._apply(update, version_hint=queue.version)  # type: ignore[call-arg]
                if getattr(result, "conflicts", 0):
                    self._hint_misses += 1
            else:
                result = await self._apply(update)
            if getattr(result, "failed", False) is True:  # waited, and the apply failed
                raise ApplyFailedError(result)
        except Exception as exc:
            self.stats.in_flight -= 1
            if isinstance(exc, LimiterUnavailableError):
                await self._halt(exc, batch)
                return
            if len(batch) > 1 and self._split_on(exc):
                if self._journal is not None and intent is not None:
                    await self._journal.reconciled(intent, applied=False)  # refused: nothing landed
                for item in batch:
                    await self._call(ident, queue, [item], item[1])
                return
            if self._journal is not None:
                await self._journal.failed(
                    intent, reason=reason_code(exc), keys=keys, digests=[r.digest() for _, r in batch]
                )
            status: OutcomeStatus = "failed"
            if isinstance(exc, ApplyFailedError):
                status = "update-failed"
            elif isinstance(exc, OutcomeUnknownError):
                status = "unknown"
            if status == "unknown":
                self.stats.unknown += len(batch)
            else:
                self.stats.failed += len(batch)
            for key, request in batch:
                await self._emit(
                    Outcome(
                        index=key,
                        request=request,
                        status=status,
                        error=exc,
                        result=getattr(exc, "result", None),
                        coalesced=len(batch),
                    )
                )
            if self._stop_on_error:
                self.stop()
            return
        self.stats.in_flight -= 1
        version = getattr(result, "latest_version_id", None)
        queue.version = version if isinstance(version, str) else None
        self._versions.pop(ident, None)
        if queue.version is not None:
            self._versions[ident] = queue.version
            if len(self._versions) > self._versions_kept:
                self._versions.popitem(last=False)
        if self._journal is not None and intent is not None:
            await self._journal.applied(intent, version=queue.version)
        done = _done_status(result)
        if done == "dropped":
            self.stats.dropped += len(batch)
        else:
            self.stats.applied += len(batch)
        self.stats.saved += len(batch) - 1
        for key, request in batch:
            await self._emit(
                Outcome(index=key, request=request, status=done, result=result, coalesced=len(batch))
            )

    async def _halt(self, exc: LimiterUnavailableError, batch: list[tuple[int, MetadataUpdate]]) -> None:
        """Nothing more may be sent: stop; journal no outcome (an open intent is for reconcile)."""
        if self._halt_error is None:
            self._halt_error = exc
        self.stop()
        for key, request in batch:
            self.stats.cancelled += 1
            await self._emit(
                Outcome(index=key, request=request, status="cancelled", error=exc, coalesced=len(batch))
            )


def _takes_version_hint(apply: Callable[..., Awaitable[Any]]) -> bool:
    """Whether ``apply`` takes a ``version_hint`` keyword (the client's update method does)."""
    try:
        return "version_hint" in inspect.signature(apply).parameters
    except (TypeError, ValueError):
        return False


def _done_status(result: Any) -> OutcomeStatus:
    """The client's word for a call that returned (a result without one was applied)."""
    outcome = getattr(result, "outcome", "applied")
    if outcome == "already-applied":
        return "already-applied"
    return "dropped" if outcome == "dropped" else "applied"


def _keyed(item: Item, position: int) -> tuple[int, MetadataUpdate]:
    if isinstance(item, MetadataUpdate):
        return position, item
    key, update = item
    if not isinstance(update, MetadataUpdate) or not isinstance(key, int):
        raise TypeError(f"input item {position}: expected a MetadataUpdate or an (int, MetadataUpdate) pair")
    return key, update
