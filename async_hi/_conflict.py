"""Bringing one update to an end: conflicts, LOCKED windows, rebases, and writes whose answer was lost.

The loop (:func:`resolve_update`):

1. Read the current version with GetImageSet (its own, 100x larger quota),
   also when the caller gave ``latest_version_id``: a stale version found by a
   read costs no write quota. DELETED ends it; LOCKED/UPDATING
   is polled with backoff (through the GetImageSet limiter) until it ends.
2. If the version moved since the update was computed and the caller gave a
   ``rebase`` function, call it with the fresh metadata: it returns the
   update to send now, or None to drop it.
3. Take the UpdateImageSetMetadata token and write (one attempt, botocore's
   retries off, so the limiter sees every attempt).
4. 429: the limiter cuts the rate and paces the retry, same version.
   Connect failure: nothing was sent; back off, same version.
   409: read again (step 1). Other 4xx: raise the typed error.
   Timeout, dropped connection, 5xx: the write may have been applied.

**Writes whose answer was lost.** Every write carries ``latestVersion=V``, and
the service accepts at most one write against a given V, so resending at the
same V can never apply twice. The danger is resending at a *newer* version.
So the base V of an ambiguous attempt is remembered, and before any write
against another version the resolver proves whether version V+1 is ours:
it waits until V+1 is applied, then compares the metadata of V+1 with
``document.apply_update(metadata of V, our documents)`` (for a revert: with
the metadata of the target version), ignoring the ids and SchemaVersion.
Equal: our change took effect (outcome ``"already-applied"``; an identical
change by someone else has the same effect, so not writing again is right
either way). Different: V+1 is someone else's; ours was not applied. V+1 ended
UPDATE_FAILED: it changed nothing, whoever sent it, so writing again is safe.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio

from async_hi._clock import Clock
from async_hi._errors import (
    ConflictError,
    ConnectError,
    DeadlineExceededError,
    HealthImagingError,
    ImageSetDeletedError,
    InternalServerError,
    OutcomeUnknownError,
    ResponseLostError,
    RetriesExhaustedError,
    ServiceError,
    ThrottlingError,
)
from async_hi._events import Retrying, UpdateFinished, UpdateStarted, Waiting
from async_hi._results import ImageSetInfo, UpdateOutcome, UpdateResult
from async_hi._retry import Caller, RetryPolicy
from async_hi._updates import InvalidUpdateError, MetadataUpdate
from async_hi.document import apply_update

__all__ = ["Budget", "Rebase", "UpdateOps", "resolve_update", "wait_until_applied"]

UPDATE = "UpdateImageSetMetadata"
_IGNORED_KEYS = ("DatastoreID", "ImageSetID", "SchemaVersion")

Rebase = Callable[
    [Mapping[str, Any], MetadataUpdate], "MetadataUpdate | Awaitable[MetadataUpdate | None] | None"
]
"""``rebase(fresh_metadata, update)`` -> the update to send now, or None to drop it (may be async)."""


class UpdateOps(Protocol):
    """The requests the resolver needs (the client implements them; tests fake them)."""

    async def get_image_set(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> ImageSetInfo: ...

    async def get_image_set_metadata(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> dict[str, Any]: ...

    async def send_update(self, update: MetadataUpdate, latest_version_id: str) -> Mapping[str, Any]: ...


class Budget:
    """The attempt, conflict and time budget of one update (or one wait)."""

    def __init__(self, datastore_id: str, image_set_id: str, policy: RetryPolicy, clock: Clock) -> None:
        self.ids = (datastore_id, image_set_id)
        self.policy = policy
        self.clock = clock
        self.start = clock.now()
        self.attempts = 0
        self.conflicts = 0
        self.uncertain: str | None = None
        self.last_error: BaseException | None = None

    def remaining(self) -> float:
        return self.policy.deadline - (self.clock.now() - self.start)

    def fail(self, cls: type[HealthImagingError], message: str) -> HealthImagingError:
        if self.uncertain is not None and cls is not ImageSetDeletedError:
            cls, message = (
                OutcomeUnknownError,
                f"{message}; the write against version {self.uncertain} may or may not have been applied",
            )
        return cls(  # type: ignore[call-arg]
            message,
            datastore_id=self.ids[0],
            image_set_id=self.ids[1],
            attempts=self.attempts,
            last_error=self.last_error,
        )

    def check_time(self) -> None:
        if self.remaining() <= 0:
            raise self.fail(DeadlineExceededError, f"deadline of {self.policy.deadline:g} s exceeded")


async def wait_until_applied(
    ops: UpdateOps,
    caller: Caller,
    datastore_id: str,
    image_set_id: str,
    *,
    version_id: str | None,
    reason: str,
    budget: Budget,
) -> ImageSetInfo:
    """Poll GetImageSet (of ``version_id``, or the latest) until no update is being applied."""
    polls = 0
    while True:
        info = await ops.get_image_set(datastore_id, image_set_id, version_id=version_id)
        if info.deleted or not info.locked:
            return info
        polls += 1
        budget.check_time()
        delay = min(caller.policy.poll_delay(polls, caller.rng), max(0.0, budget.remaining()))
        caller.recorder.emit(Waiting(image_set_id, info.version_id, reason, delay))
        await caller.clock.sleep(delay)


def _normalised(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _IGNORED_KEYS}


async def _was_applied(
    ops: UpdateOps, caller: Caller, update: MetadataUpdate, base: str, budget: Budget
) -> ImageSetInfo | None:
    """Whether the version our write against ``base`` would have created carries our change."""
    d, i = update.datastore_id, update.image_set_id
    candidate = str(int(base) + 1)
    info = await wait_until_applied(ops, caller, d, i, version_id=candidate, reason="checking", budget=budget)
    if info.workflow_status == "UPDATE_FAILED":
        return None  # a failed version changed nothing: writing again is safe
    if update.revert_to_version_id is not None:
        expected = await ops.get_image_set_metadata(d, i, version_id=update.revert_to_version_id)
    else:
        before = await ops.get_image_set_metadata(d, i, version_id=base)
        expected = apply_update(before, update.updatable, update.removable)
    after = await ops.get_image_set_metadata(d, i, version_id=candidate)
    return info if _normalised(after) == _normalised(expected) else None


async def _rebase(rebase: Rebase, ops: UpdateOps, update: MetadataUpdate, base: str) -> MetadataUpdate | None:
    fresh = await ops.get_image_set_metadata(update.datastore_id, update.image_set_id)
    out = rebase(fresh, update)
    if inspect.isawaitable(out):
        out = await out
    if out is None:
        return None
    if not isinstance(out, MetadataUpdate):
        raise TypeError(f"the rebase function must return a MetadataUpdate or None, got {type(out).__name__}")
    if (out.datastore_id, out.image_set_id) != (update.datastore_id, update.image_set_id):
        raise ValueError("the rebase function must keep the datastore_id and image_set_id of the update")
    return dataclasses.replace(out, latest_version_id=base)


def _result(
    d: str,
    i: str,
    r: Mapping[str, Any] | ImageSetInfo,
    *,
    outcome: UpdateOutcome,
    budget: Budget,
    base: str | None,
) -> UpdateResult:
    if isinstance(r, ImageSetInfo):
        return UpdateResult(
            datastore_id=d,
            image_set_id=i,
            latest_version_id=r.version_id,
            state=r.state,
            workflow_status=r.workflow_status,
            created_at=r.created_at,
            updated_at=r.updated_at,
            message=r.message,
            outcome=outcome,
            attempts=budget.attempts,
            conflicts=budget.conflicts,
            base_version_id=base,
        )
    return UpdateResult(
        datastore_id=d,
        image_set_id=i,
        latest_version_id=r["latestVersionId"],
        state=r["imageSetState"],
        workflow_status=r.get("imageSetWorkflowStatus"),
        created_at=r.get("createdAt"),
        updated_at=r.get("updatedAt"),
        message=r.get("message"),
        outcome=outcome,
        attempts=budget.attempts,
        conflicts=budget.conflicts,
        base_version_id=base,
    )


async def resolve_update(
    update: MetadataUpdate,
    *,
    ops: UpdateOps,
    caller: Caller,
    rebase: Rebase | None = None,
    wait: bool = False,
    version_hint: str | None = None,
) -> UpdateResult:
    """Write ``update`` and bring it to an end (see the module docstring).

    Args:
        update: the update; its ``latest_version_id`` (if any) is the version it was computed against.
        ops: the requests.
        caller: limiter, clock, counters, policy and jitter source.
        rebase: recompute the update when the version moved (None: resend it unchanged).
        wait: poll until the new version is UPDATED or UPDATE_FAILED.
        version_hint: a version the caller believes current (the bulk runner knows the
            version its own last write created): the first write goes at it without
            reading first. A hint, not a precondition: a stale refusal leads to a read
            and the normal path. Ignored when the update pins another ``latest_version_id``.

    Raises:
        InvalidUpdateError, ValidationError, ...: the service or our checks refused the update.
        ImageSetDeletedError: the image set is DELETED.
        RetriesExhaustedError, DeadlineExceededError: a budget ran out.
        OutcomeUnknownError: a budget ran out while an earlier write's fate was unknown.
    """
    d, i = update.datastore_id, update.image_set_id
    if version_hint is not None and not (isinstance(version_hint, str) and version_hint.isdecimal()):
        raise ValueError(f"version_hint must be a decimal string, got {version_hint!r}")
    budget = Budget(d, i, caller.policy, caller.clock)
    if caller.recorder.listening:
        caller.recorder.emit(UpdateStarted(i))
    current = update
    # read before the first write, even when the caller gave a version (unless the policy says not
    # to): a read costs 1/100 of a write's quota, and a stale version found by a read is rebased or
    # retried without a 409
    computed_at = update.latest_version_id
    base: str | None = None if caller.policy.read_before_write else computed_at
    if version_hint is not None and computed_at in (None, version_hint):
        base = version_hint
    outcome: UpdateOutcome = "applied"
    conflict_at: str | None = None
    read_at: str | None = None  # the version the last GetImageSet found
    try:
        while True:
            budget.check_time()
            if base is None:
                info = await wait_until_applied(
                    ops, caller, d, i, version_id=None, reason="locked", budget=budget
                )
                if info.deleted:
                    raise budget.fail(ImageSetDeletedError, "the image set is DELETED")
                base = info.version_id
                read_at = base
                if base == conflict_at:
                    # refused, yet nothing moved and nothing is locked: do not spin
                    await _backoff(caller, i, budget, budget.last_error)
                conflict_at = None
            if budget.uncertain is not None and base != budget.uncertain:
                found = await _was_applied(ops, caller, current, budget.uncertain, budget)
                if found is not None:
                    outcome = "already-applied"
                    result = _result(d, i, found, outcome=outcome, budget=budget, base=budget.uncertain)
                    return await _finish(ops, caller, result, wait=wait, budget=budget)
                budget.uncertain = None
            if rebase is not None and computed_at is not None and base != computed_at:
                rebased = await _rebase(rebase, ops, current, base)
                if rebased is None:
                    outcome = "dropped"
                    info = await ops.get_image_set(d, i)
                    _ended(caller, budget, info.version_id, outcome)
                    return _result(d, i, info, outcome=outcome, budget=budget, base=base)
                current = rebased
            computed_at = base
            target = current.revert_to_version_id
            if target is not None and int(target) > int(base):
                if read_at != base:  # an unread version (a hint, or read_before_write off): look first
                    base = None
                    continue
                # the read just said so: refuse it here rather than spend a write to hear it
                raise InvalidUpdateError(
                    [f"revert_to_version_id {target} does not exist: the image set is at version {base}"]
                )
            if budget.attempts >= caller.policy.max_attempts:
                raise budget.fail(RetriesExhaustedError, "write attempts exhausted")
            budget.attempts += 1
            sent_at, sending = base, current
            try:
                response = await caller.once(UPDATE, i, lambda: ops.send_update(sending, sent_at))  # noqa: B023 (awaited at once)
            except ThrottlingError as exc:
                budget.last_error = exc  # the limiter paces the retry; nothing changed server-side
                continue
            except ConflictError as exc:
                budget.last_error = exc
                budget.conflicts += 1
                if budget.conflicts > caller.policy.max_conflicts:
                    raise budget.fail(RetriesExhaustedError, "too many conflicts") from exc
                base, conflict_at = None, sent_at
                continue
            except (ConnectError, ResponseLostError, InternalServerError) as exc:
                budget.last_error = exc
                if not isinstance(exc, ConnectError):
                    budget.uncertain = sent_at
                    base = None
                await _backoff(caller, i, budget, exc)
                continue
            result = _result(d, i, response, outcome="applied", budget=budget, base=sent_at)
            return await _finish(ops, caller, result, wait=wait, budget=budget)
    except HealthImagingError as exc:
        caller.recorder.emit(
            UpdateFinished(i, None, "error", budget.attempts, caller.clock.now() - budget.start)
        )
        if isinstance(exc, ServiceError) and exc.status == 400 and budget.uncertain is not None:
            # e.g. a UID change that no longer applies because our lost write did apply
            raise budget.fail(OutcomeUnknownError, f"refused ({exc.code})") from exc
        raise
    except BaseException as exc:  # cancelled, or a bug (the rebase function's, ours): still an end
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        _ended(caller, budget, None, "cancelled" if cancelled else "error")
        raise


def _ended(caller: Caller, budget: Budget, version_id: str | None, outcome: str) -> None:
    elapsed = caller.clock.now() - budget.start
    caller.recorder.emit(UpdateFinished(budget.ids[1], version_id, outcome, budget.attempts, elapsed))


async def _backoff(caller: Caller, image_set_id: str, budget: Budget, exc: BaseException | None) -> None:
    delay = min(caller.policy.backoff(budget.attempts, caller.rng), max(0.0, budget.remaining()))
    reason = exc.code if isinstance(exc, ServiceError) else type(exc).__name__
    caller.recorder.emit(Retrying(UPDATE, image_set_id, budget.attempts + 1, delay, reason))
    await caller.clock.sleep(delay)


async def _finish(
    ops: UpdateOps, caller: Caller, result: UpdateResult, *, wait: bool, budget: Budget
) -> UpdateResult:
    if wait and not result.done:
        info = await wait_until_applied(
            ops,
            caller,
            result.datastore_id,
            result.image_set_id,
            version_id=result.latest_version_id,
            reason="applying",
            budget=budget,
        )
        result = dataclasses.replace(
            result,
            state=info.state,
            workflow_status=info.workflow_status,
            updated_at=info.updated_at or result.updated_at,
            message=info.message,
            # a failed apply is never called applied
            outcome="update-failed" if info.workflow_status == "UPDATE_FAILED" else result.outcome,
        )
    caller.recorder.emit(
        UpdateFinished(
            result.image_set_id,
            result.latest_version_id,
            result.outcome,
            budget.attempts,
            caller.clock.now() - budget.start,
        )
    )
    return result
