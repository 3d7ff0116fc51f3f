"""The emulator's state: datastores, image sets and their versions.

The store is synchronous and single-threaded (the aiohttp loop calls it), so
a version check and the write that follows it are atomic. The asynchronous
apply of an accepted update is modelled lazily: an image set is LOCKED until
``locked_until`` on the store's clock, and every read first *settles* it
(finishing the apply when its time has come). No timers, so a test can drive
the store with a fake clock.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from async_hi.document import apply_update, check_document

__all__ = ["ApiError", "Datastore", "ImageSet", "Store", "Version"]


class ApiError(Exception):
    """An error answer of the AWS API: its modeled code and a PHI-free message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True, kw_only=True)
class Version:
    """One version of an image set."""

    version_id: int
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    workflow_status: str
    message: str | None = None
    forced: bool = False
    #: what made it: "created", "update", "revert", "study-consistency", "import"
    origin: str = "update"
    #: request digest (sha256 of the body and query), for the history API
    request_digest: str | None = None


@dataclass(slots=True, kw_only=True)
class ImageSet:
    """An image set and its whole version history (oldest first)."""

    datastore_id: str
    image_set_id: str
    is_primary: bool
    created_at: float
    versions: list[Version] = field(default_factory=list)
    locked_until: float | None = None
    #: the metadata the pending apply will leave (None: the apply fails)
    pending_metadata: dict[str, Any] | None = None
    pending_failure: str | None = None
    deleted: bool = False
    #: the next apply fails with this message (seeding and tests)
    fail_next_apply: str | None = None

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    @property
    def state(self) -> str:
        if self.deleted:
            return "DELETED"
        return "LOCKED" if self.locked_until is not None else "ACTIVE"

    def applied_metadata(self) -> dict[str, Any]:
        """The metadata of the newest version whose apply has completed."""
        for v in reversed(self.versions):
            if v.workflow_status not in ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY"):
                return v.metadata
        return self.versions[0].metadata

    def version(self, version_id: int | None) -> Version:
        if version_id is None:
            return self.latest
        if 1 <= version_id <= len(self.versions):
            return self.versions[version_id - 1]
        raise ApiError("ResourceNotFoundException", f"image set version {version_id} does not exist")

    def study_uid(self) -> str | None:
        uid = self.applied_metadata().get("Study", {}).get("DICOM", {}).get("StudyInstanceUID")
        return uid if isinstance(uid, str) else None


@dataclass(slots=True, kw_only=True)
class Datastore:
    datastore_id: str
    name: str
    created_at: float
    image_sets: dict[str, ImageSet] = field(default_factory=dict)


def new_id() -> str:
    """A fresh 32-character id of the service's ``[0-9a-z]{32}`` form."""
    return secrets.token_hex(16)


class Store:
    """Datastores and image sets, with the service's update state machine.

    Args:
        lock_seconds: how long an accepted update keeps the image set LOCKED
            before its apply completes (the real service takes seconds).
        clock: wall-clock seconds (epoch); injectable for tests.
    """

    def __init__(self, *, lock_seconds: float = 0.2, clock: Callable[[], float] = time.time) -> None:
        if lock_seconds < 0:
            raise ValueError(f"lock_seconds must be >= 0, got {lock_seconds!r}")
        self.lock_seconds = lock_seconds
        self.clock = clock
        self.datastores: dict[str, Datastore] = {}

    # -- seeding -------------------------------------------------------------

    def create_datastore(self, name: str = "datastore", datastore_id: str | None = None) -> Datastore:
        ds = Datastore(datastore_id=datastore_id or new_id(), name=name, created_at=self.clock())
        self.datastores[ds.datastore_id] = ds
        return ds

    def add_image_set(
        self,
        datastore_id: str,
        metadata: Mapping[str, Any],
        *,
        primary: bool = False,
        image_set_id: str | None = None,
    ) -> ImageSet:
        """Add an image set whose version 1 is ``metadata`` (ids are filled in)."""
        ds = self.datastores[datastore_id]
        now = self.clock()
        isid = image_set_id or new_id()
        doc = copy.deepcopy(dict(metadata))
        doc["SchemaVersion"] = "1.1"
        doc["DatastoreID"] = datastore_id
        doc["ImageSetID"] = isid
        image_set = ImageSet(datastore_id=datastore_id, image_set_id=isid, is_primary=primary, created_at=now)
        image_set.versions.append(
            Version(
                version_id=1,
                metadata=doc,
                created_at=now,
                updated_at=now,
                workflow_status="CREATED",
                origin="created",
            )
        )
        ds.image_sets[isid] = image_set
        return image_set

    def add_version(
        self, image_set: ImageSet, metadata: Mapping[str, Any], *, workflow_status: str = "IMPORTED"
    ) -> Version:
        """Append an already-applied version (an import into an existing primary image set).

        Raises:
            ApiError: ConflictException if the image set is LOCKED or DELETED.
        """
        self.settle(image_set)
        self._check_writable(image_set)
        now = self.clock()
        doc = copy.deepcopy(dict(metadata))
        doc["DatastoreID"] = image_set.datastore_id
        doc["ImageSetID"] = image_set.image_set_id
        version = Version(
            version_id=image_set.latest.version_id + 1,
            metadata=doc,
            created_at=now,
            updated_at=now,
            workflow_status=workflow_status,
            origin="import",
        )
        image_set.versions.append(version)
        return version

    # -- lookups -------------------------------------------------------------

    def image_set(self, datastore_id: str, image_set_id: str) -> ImageSet:
        """The image set, settled; ResourceNotFoundException if there is none."""
        ds = self.datastores.get(datastore_id)
        image_set = ds.image_sets.get(image_set_id) if ds else None
        if image_set is None:
            raise ApiError("ResourceNotFoundException", "image set not found in this datastore")
        self.settle(image_set)
        return image_set

    def settle(self, image_set: ImageSet) -> None:
        """Finish the pending apply if its LOCKED window has passed."""
        if image_set.locked_until is None or self.clock() < image_set.locked_until:
            return
        v = image_set.latest
        v.updated_at = max(self.clock(), v.created_at)
        if image_set.pending_failure is not None:
            v.workflow_status = "UPDATE_FAILED"
            v.message = image_set.pending_failure
            # the failed version stays in the history with the previous content
            v.metadata = (
                copy.deepcopy(image_set.versions[-2].metadata) if len(image_set.versions) > 1 else v.metadata
            )
        else:
            v.workflow_status = "UPDATED"
            if image_set.pending_metadata is not None:
                v.metadata = image_set.pending_metadata
        image_set.locked_until = None
        image_set.pending_metadata = None
        image_set.pending_failure = None

    def settle_all(self, image_set_ids: frozenset[str] | None = None) -> int:
        """End every open apply window now, as if its time had come (tests need no sleeps).

        Args:
            image_set_ids: only these image sets; all when None.

        Returns:
            How many applies were finished.
        """
        done = 0
        for ds in self.datastores.values():
            for image_set in ds.image_sets.values():
                if image_set.locked_until is None:
                    continue
                if image_set_ids is not None and image_set.image_set_id not in image_set_ids:
                    continue
                image_set.locked_until = min(image_set.locked_until, self.clock())
                self.settle(image_set)
                done += 1
        return done

    def study_image_sets(self, image_set: ImageSet) -> list[ImageSet]:
        """The other primary image sets of the same datastore and StudyInstanceUID."""
        uid = image_set.study_uid()
        ds = self.datastores[image_set.datastore_id]
        out = []
        for other in ds.image_sets.values():
            if other is image_set or not other.is_primary or other.deleted:
                continue
            self.settle(other)
            if uid is not None and other.study_uid() == uid:
                out.append(other)
        return out

    # -- writes --------------------------------------------------------------

    def update(
        self,
        datastore_id: str,
        image_set_id: str,
        *,
        latest_version: int,
        updatable: Mapping[str, Any] | None = None,
        removable: Mapping[str, Any] | None = None,
        revert_to: int | None = None,
        force: bool = False,
        include_study: bool = False,
        request_digest: str | None = None,
    ) -> ImageSet:
        """UpdateImageSetMetadata: check, then create the next version, LOCKED until applied.

        Raises:
            ApiError: ResourceNotFoundException, ConflictException (stale
                version, LOCKED, DELETED) or ValidationException; a refused
                write changes nothing.
        """
        image_set = self.image_set(datastore_id, image_set_id)
        self._check_writable(image_set)
        current = image_set.latest.version_id
        if latest_version != current:
            raise ApiError(
                "ConflictException",
                f"latestVersion {latest_version} is not the current version of the image set",
            )
        targets = [image_set]
        if include_study:
            if revert_to is not None:
                raise ApiError(
                    "ValidationException", "includeStudyImageSets cannot be used with revertToVersionId"
                )
            for other in self.study_image_sets(image_set):
                self._check_writable(other)
                targets.append(other)
        if revert_to is not None:
            if not 1 <= revert_to <= current:
                raise ApiError("ValidationException", f"revertToVersionId {revert_to} does not exist")
            new_docs = [copy.deepcopy(image_set.versions[revert_to - 1].metadata)]
        else:
            new_docs = []
            for target in targets:
                base = target.applied_metadata()
                problems: list[str] = []
                if updatable is not None:
                    problems += check_document(
                        updatable, kind="updatable", force=force, primary=target.is_primary, metadata=base
                    )
                if removable is not None:
                    problems += check_document(
                        removable, kind="removable", force=force, primary=target.is_primary, metadata=base
                    )
                if problems:
                    raise ApiError("ValidationException", "; ".join(problems))
                new_docs.append(apply_update(base, updatable, removable))
        now = self.clock()
        for i, (target, doc) in enumerate(zip(targets, new_docs, strict=True)):
            doc["DatastoreID"] = target.datastore_id
            doc["ImageSetID"] = target.image_set_id
            status = "UPDATING" if i == 0 else "UPDATING_FOR_STUDY_CONSISTENCY"
            target.versions.append(
                Version(
                    version_id=target.latest.version_id + 1,
                    # until applied, the new version shows the content it replaces
                    metadata=copy.deepcopy(target.applied_metadata()),
                    created_at=now,
                    updated_at=now,
                    workflow_status=status,
                    forced=force,
                    origin="revert"
                    if revert_to is not None
                    else ("update" if i == 0 else "study-consistency"),
                    request_digest=request_digest,
                )
            )
            target.pending_metadata = doc
            target.pending_failure = target.fail_next_apply
            target.fail_next_apply = None
            target.locked_until = now + self.lock_seconds
        return image_set

    def _check_writable(self, image_set: ImageSet) -> None:
        if image_set.deleted:
            raise ApiError("ConflictException", "image set is DELETED")
        if image_set.locked_until is not None:
            raise ApiError("ConflictException", "image set is LOCKED by an update in progress")
