"""Reconciliation: did a call that was in flight when the process died land?

The real service keeps no request id per version, so the answer comes from the
image set's history. For an open intent (see :mod:`async_hi._journal`) with
base version ``b`` and requests ``r1..rn`` (one call, possibly coalesced):

1. wait until no version after ``b`` is still being applied (``UPDATING*``);
2. the call landed iff some version ``v > b`` that did not fail
   (``UPDATE_FAILED``) has the content ``apply(r1..rn)`` gives on the content
   of version ``v - 1`` (for a revert: the content of the version reverted to).
   "Content" is the ``Patient`` and ``Study`` parts of the metadata, the only
   parts an update can change.

This is exact when nobody else writes the image set meanwhile, and safe with
concurrent writers except for one case no client can tell apart: another
writer making exactly the same change right after ``b`` (then the request is
taken as applied, which leaves the metadata as the request wanted). A version
that ended in ``UPDATE_FAILED`` changed nothing, so a request whose only
landing failed is sent again.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from async_hi._journal import Intent, Journal, JournalError, JournalMismatchError
from async_hi._updates import MetadataUpdate
from async_hi.document import apply_update

if TYPE_CHECKING:
    from async_hi._client import HealthImagingClient

__all__ = ["ClientVersionReader", "ReconcileError", "Reconciled", "VersionLike", "VersionReader", "reconcile"]

_BUSY = ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY")


class VersionLike(Protocol):
    """One entry of an image set's version history (the client's ``VersionInfo`` is one)."""

    @property
    def version_id(self) -> str: ...

    @property
    def workflow_status(self) -> str | None: ...


class VersionReader(Protocol):
    """What the bulk runner and reconciliation read (the client implements it)."""

    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        """The image set's current ``latestVersionId`` (GetImageSet)."""
        ...

    async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Sequence[VersionLike]:
        """Every version newer than ``after``, oldest first (ListImageSetVersions)."""
        ...

    async def metadata(self, datastore_id: str, image_set_id: str, version_id: str) -> Mapping[str, Any]:
        """The decoded metadata document of one version (GetImageSetMetadata)."""
        ...


class ClientVersionReader:
    """A :class:`VersionReader` over a ``HealthImagingClient`` (its limiter paces the reads).

    Args:
        client: an open ``HealthImagingClient``.
    """

    def __init__(self, client: HealthImagingClient) -> None:
        self.client = client

    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        return (await self.client.get_image_set(datastore_id, image_set_id)).version_id

    async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Sequence[VersionLike]:
        versions = await self.client.list_image_set_versions(datastore_id, image_set_id)
        return sorted(
            (v for v in versions if int(v.version_id) > int(after)), key=lambda v: int(v.version_id)
        )

    async def metadata(self, datastore_id: str, image_set_id: str, version_id: str) -> Mapping[str, Any]:
        return await self.client.get_image_set_metadata(datastore_id, image_set_id, version_id=version_id)


class ReconcileError(JournalError):
    """An open intent could not be settled (the image set stayed busy, or input is missing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    """What reconciliation decided for one open intent."""

    intent: Intent
    applied: bool
    version: str | None


def _content(metadata: Mapping[str, Any]) -> tuple[Any, Any]:
    return metadata.get("Patient"), metadata.get("Study")


async def _collect(
    needed: set[int],
    items: Iterable[tuple[int, MetadataUpdate]] | AsyncIterable[tuple[int, MetadataUpdate]],
) -> dict[int, MetadataUpdate]:
    found: dict[int, MetadataUpdate] = {}

    def take(key: int, update: MetadataUpdate) -> bool:
        if key in needed:
            found[key] = update
        return len(found) == len(needed)

    if isinstance(items, AsyncIterable):
        async for key, update in items:
            if take(key, update):
                break
    else:
        for key, update in items:
            if take(key, update):
                break
    return found


async def reconcile(
    journal: Journal,
    items: Iterable[tuple[int, MetadataUpdate]] | AsyncIterable[tuple[int, MetadataUpdate]],
    reader: VersionReader,
    *,
    settle_timeout: float = 120.0,
    poll_interval: float = 1.0,
) -> list[Reconciled]:
    """Settle every open intent of ``journal`` and journal the verdicts.

    Reads ``items`` (the same input as the run that died, as ``(key, update)``
    pairs) only until it has found the requests of the open intents, so memory
    stays O(open intents). Run it before resuming; the bulk runner refuses to
    start on a journal with open intents.

    Args:
        journal: an open journal.
        items: the input, from the start.
        reader: reads versions and metadata (the client).
        settle_timeout: seconds to wait for an update still being applied.
        poll_interval: seconds between looks at a busy image set.

    Raises:
        JournalMismatchError: a key of an open intent is missing from the input or differs.
        ReconcileError: an image set stayed busy for ``settle_timeout``.
    """
    intents = journal.open_intents
    if not intents:
        return []
    needed = {k for intent in intents for k in intent.keys}
    found = await _collect(needed, items)
    out: list[Reconciled] = []
    for intent in intents:
        updates = []
        for key, digest in zip(intent.keys, intent.digests, strict=True):
            update = found.get(key)
            if update is None:
                raise JournalMismatchError(
                    f"request {key}, in flight when the last run stopped, is not in the input"
                )
            if update.digest() != digest:
                raise JournalMismatchError(
                    f"request {key} differs from the one journaled (was the input edited?)"
                )
            updates.append(update)
        version = await _landed(intent, updates, reader, settle_timeout, poll_interval)
        await journal.reconciled(intent.id, applied=version is not None, version=version)
        out.append(Reconciled(intent=intent, applied=version is not None, version=version))
    return out


async def _landed(
    intent: Intent,
    updates: list[MetadataUpdate],
    reader: VersionReader,
    settle_timeout: float,
    poll_interval: float,
) -> str | None:
    ds, iset = intent.datastore_id, intent.image_set_id
    deadline = anyio.current_time() + settle_timeout
    while True:
        versions = list(await reader.versions_after(ds, iset, intent.base))
        if not any(v.workflow_status in _BUSY for v in versions):
            break
        if anyio.current_time() >= deadline:
            raise ReconcileError(
                f"image set {iset} still has an update in progress after {settle_timeout:g} s"
            )
        await anyio.sleep(poll_interval)
    if not versions:
        return None
    previous = await reader.metadata(ds, iset, intent.base)
    target = None
    if updates[0].is_revert:
        target = _content(await reader.metadata(ds, iset, str(updates[0].revert_to_version_id)))
    for info in versions:
        current = await reader.metadata(ds, iset, info.version_id)
        if info.workflow_status != "UPDATE_FAILED":
            if target is not None:
                expected = target
            else:
                doc: Mapping[str, Any] = previous
                for update in updates:
                    doc = apply_update(doc, update.updatable, update.removable)
                expected = _content(doc)
            if _content(current) == expected:
                return info.version_id
        previous = current
    return None
