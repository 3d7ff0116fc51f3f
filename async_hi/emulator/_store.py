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
from typing import Any, Literal

from async_hi.contract import NOT_CONSISTENT_MESSAGE, STALE_VERSION_MESSAGE
from async_hi.document import DocumentKind, apply_update, check_document_split

__all__ = [
    "ApiError",
    "ConstraintViolations",
    "Datastore",
    "ImageSet",
    "StaleVersionError",
    "Store",
    "Version",
]

#: How a stale ``latestVersion`` is refused: "not-found" (404 ResourceNotFoundException, what the
#: real service answers, E1) or "conflict" (409 ConflictException, what the API reference documents).
StaleVersionError = Literal["not-found", "conflict"]
#: How an update that breaks a value constraint (E4 removal values, E5 VR fit) is refused:
#: "reject" (400 ValidationException at once) or "update-failed" (accepted, then the new version
#: ends UPDATE_FAILED with a message). The evidence does not say which: **our choice** is "reject".
ConstraintViolations = Literal["reject", "update-failed"]
_STALE_CODES = {"not-found": "ResourceNotFoundException", "conflict": "ConflictException"}
_APPLYING = ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY")


def _failure_message(violations: list[str]) -> str:
    """An UPDATE_FAILED message (the model's ``[\\w -:`]+``, at most 2048 characters; no values)."""
    text = "INVALID_REQUEST: " + "; ".join(violations)
    text = "".join(
        ch if (ch.isascii() and ch.isalnum()) or ch in "_`" or " " <= ch <= ":" else " " for ch in text
    )
    return text[:2048]


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
    #: until then (store clock) GetImageSetMetadata of this version answers the E2 409
    consistent_at: float | None = None


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
            if v.workflow_status not in _APPLYING:
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
        stale_version_error: how a write naming a version that is not the
            latest is refused: ``"not-found"`` (404, the real service, E1) or
            ``"conflict"`` (409, the API reference).
        not_consistent_reads: GetImageSetMetadata of a version being applied
            (the latest, or named) answers 409 "not consistent yet" (E2); off,
            it answers 200 with the content the version replaces.
        not_consistent_seconds: how long after an accepted update that 409 is
            answered; None: until the apply completes (the LOCKED window). A
            value above ``lock_seconds`` keeps answering it after the image set
            is ACTIVE again, as the real service does right after an import
            (E2's first source). **(our choice: the real length is unknown)**
        constraint_violations: an update that breaks a value constraint (a
            removal naming another value than the stored one, E4; a value
            that does not fit its VR without force, E5) is refused with 400
            (``"reject"``, our choice) or accepted and its version ends
            UPDATE_FAILED (``"update-failed"``).
    """

    def __init__(
        self,
        *,
        lock_seconds: float = 0.2,
        clock: Callable[[], float] = time.time,
        stale_version_error: StaleVersionError = "not-found",
        not_consistent_reads: bool = True,
        not_consistent_seconds: float | None = None,
        constraint_violations: ConstraintViolations = "reject",
    ) -> None:
        if lock_seconds < 0:
            raise ValueError(f"lock_seconds must be >= 0, got {lock_seconds!r}")
        if stale_version_error not in _STALE_CODES:
            raise ValueError(
                f"stale_version_error must be 'not-found' or 'conflict', got {stale_version_error!r}"
            )
        if not_consistent_seconds is not None and not_consistent_seconds < 0:
            raise ValueError(f"not_consistent_seconds must be >= 0 or None, got {not_consistent_seconds!r}")
        self.lock_seconds = lock_seconds
        self.clock = clock
        self.stale_version_error: StaleVersionError = stale_version_error
        self.not_consistent_reads = not_consistent_reads
        self.not_consistent_seconds = not_consistent_seconds
        if constraint_violations not in ("reject", "update-failed"):
            raise ValueError(
                f"constraint_violations must be 'reject' or 'update-failed', got {constraint_violations!r}"
            )
        self.constraint_violations: ConstraintViolations = constraint_violations
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

    def metadata(self, datastore_id: str, image_set_id: str, version_id: int | None = None) -> dict[str, Any]:
        """GetImageSetMetadata: the document of ``version_id`` (None: the latest).

        A version still being applied (or, with ``not_consistent_seconds``, applied
        a moment ago) answers the E2 409 when ``not_consistent_reads`` is on;
        otherwise it shows the content it replaces.

        Raises:
            ApiError: ResourceNotFoundException (no such image set or version),
                ConflictException "not consistent yet".
        """
        image_set = self.image_set(datastore_id, image_set_id)
        v = image_set.version(version_id)
        if self.not_consistent_reads and v.consistent_at is not None and self.clock() < v.consistent_at:
            raise ApiError("ConflictException", NOT_CONSISTENT_MESSAGE)
        if version_id is None and v.workflow_status in _APPLYING:
            return image_set.applied_metadata()
        return v.metadata

    def settle_all(self, image_set_ids: frozenset[str] | None = None) -> int:
        """End every open apply window now, as if its time had come (tests need no sleeps).

        Args:
            image_set_ids: only these image sets; all when None.

        Returns:
            How many applies were finished.
        """
        done = 0
        now = self.clock()
        for ds in self.datastores.values():
            for image_set in ds.image_sets.values():
                if image_set_ids is not None and image_set.image_set_id not in image_set_ids:
                    continue
                for v in image_set.versions:  # E2's "not consistent yet" ends with the apply
                    if v.consistent_at is not None:
                        v.consistent_at = min(v.consistent_at, now)
                if image_set.locked_until is None:
                    continue
                image_set.locked_until = min(image_set.locked_until, now)
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

        The checks, in order: the image set exists, is not DELETED, ``latest_version``
        is its latest version (else the E1 answer, also while LOCKED: the request's
        precondition fails whatever the lock, **our choice of order**), it is not
        LOCKED (409, our choice of code), the update is valid.

        Raises:
            ApiError: ResourceNotFoundException (no such image set; with
                ``stale_version_error="not-found"`` also a stale version),
                ConflictException (stale version in "conflict" mode, LOCKED,
                DELETED) or ValidationException; a refused write changes nothing.
        """
        image_set = self.image_set(datastore_id, image_set_id)
        if image_set.deleted:
            raise ApiError("ConflictException", "image set is DELETED")
        current = image_set.latest.version_id
        if latest_version != current:
            raise ApiError(_STALE_CODES[self.stale_version_error], STALE_VERSION_MESSAGE)
        self._check_writable(image_set)
        targets = [image_set]
        failures: dict[str, str] = {}  # image set -> why its apply will fail (update-failed mode)
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
                violations: list[str] = []
                docs: tuple[tuple[DocumentKind, Mapping[str, Any] | None], ...] = (
                    ("updatable", updatable),
                    ("removable", removable),
                )
                for kind, doc in docs:
                    if doc is not None:
                        rules, values = check_document_split(
                            doc, kind=kind, force=force, primary=target.is_primary, metadata=base
                        )
                        problems += rules
                        violations += values
                if problems:
                    raise ApiError("ValidationException", "; ".join(problems))
                if violations and self.constraint_violations == "reject":
                    raise ApiError("ValidationException", "; ".join(violations))
                if violations:
                    failures[target.image_set_id] = _failure_message(violations)
                new_docs.append(apply_update(base, updatable, removable))
        now = self.clock()
        window = self.lock_seconds if self.not_consistent_seconds is None else self.not_consistent_seconds
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
                    consistent_at=now + window,
                )
            )
            target.pending_metadata = doc
            target.pending_failure = target.fail_next_apply or failures.get(target.image_set_id)
            target.fail_next_apply = None
            target.locked_until = now + self.lock_seconds
        return image_set

    def _check_writable(self, image_set: ImageSet) -> None:
        if image_set.deleted:
            raise ApiError("ConflictException", "image set is DELETED")
        if image_set.locked_until is not None:
            raise ApiError("ConflictException", "image set is LOCKED by an update in progress")
