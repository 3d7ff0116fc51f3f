"""What tests read back from the emulator: the call log (:class:`Call`) and version histories
(:class:`ImageSetVersion`), as frozen data copied out of the emulator's state."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from async_hi.emulator._app import RequestRecord
from async_hi.emulator._store import Version

__all__ = ["Call", "ImageSetVersion", "matches"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One AWS request the emulator answered (or dropped), oldest first in the log.

    Attribute values never appear here unless the test asked for them with
    ``configure(record_values=True)`` (then ``documents`` holds the decoded update).

    Attributes:
        operation: ``"UpdateImageSetMetadata"``, ``"GetImageSet"``, ``"GetImageSetMetadata"``,
            ``"ListImageSetVersions"`` (``"Unknown"`` for an unknown route).
        status: the HTTP status; 0 when the connection was dropped without an answer.
        error_type: the ``x-amzn-ErrorType`` of an error answer (``"ConflictException"``...).
        datastore_id, image_set_id: from the request's path.
        params: the URI and query parameters named and typed as boto3 takes them
            (``{"datastoreId", "imageSetId", "latestVersionId": "1", "force": True}``);
            empty when they did not validate (the answer was a 400).
        updated, removed: for an update, ``"Level.Keyword"`` of every attribute it sets or
            removes (``"Study.StudyDescription"``); a whole series or instance removed is
            ``"Series"`` or ``"Instance"``. Names only: no values, no UIDs.
        revert_to_version_id: for a revert, the version it restores.
        documents: ``{"updatableAttributes", "removableAttributes"}`` as decoded, only when
            recording values was asked for; else None.
        fault: the injected fault it drew (``"error"``, ``"throttle"``, ``"drop"``, ``"lost"``, ``"slow"``).
        request_id: the ``x-amzn-RequestId`` it was given.
        at: monotonic seconds when it arrived.
    """

    operation: str
    status: int
    error_type: str | None
    datastore_id: str | None
    image_set_id: str | None
    params: Mapping[str, Any]
    updated: tuple[str, ...]
    removed: tuple[str, ...]
    revert_to_version_id: str | None
    documents: Mapping[str, Any] | None
    fault: str | None
    request_id: str
    at: float

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return 200 <= self.status < 300

    @classmethod
    def from_record(cls, r: RequestRecord) -> Call:
        """Build from the emulator's own record of one request."""
        return cls(
            operation=r.operation,
            status=r.status,
            error_type=r.error_code,
            datastore_id=r.datastore_id,
            image_set_id=r.image_set_id,
            params=dict(r.params or {}),
            updated=r.updated,
            removed=r.removed,
            revert_to_version_id=r.revert_to_version_id,
            documents=copy.deepcopy(r.documents) if r.documents is not None else None,
            fault=r.fault,
            request_id=r.request_id,
            at=r.at,
        )


def matches(
    r: RequestRecord,
    operation: str | None,
    status: int | Collection[int] | None,
    error: str | None,
    image_set_id: str | None,
) -> bool:
    """Whether a logged request passes the ``calls()`` filters (None: any)."""
    if operation is not None and r.operation != operation:
        return False
    if status is not None:
        if isinstance(status, int):
            if r.status != status:
                return False
        elif r.status not in status:
            return False
    if error is not None and r.error_code != error:
        return False
    return image_set_id is None or r.image_set_id == image_set_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSetVersion:
    """One version of an image set, as the emulator holds it (oldest first in a history).

    Attributes:
        version_id: ``"1"``, ``"2"``... as the service spells them.
        workflow_status: ``CREATED``, ``UPDATING``, ``UPDATED``, ``UPDATE_FAILED``, ``IMPORTED``...
        state: the image set's state when this was its latest version (``ACTIVE``, ``LOCKED``,
            ``DELETED``); older versions are ``ACTIVE`` (``DELETED`` once the image set is).
        message: the failure message of an ``UPDATE_FAILED`` version.
        forced: written with ``force=true``.
        origin: what made it: ``"created"``, ``"update"``, ``"revert"``, ``"study-consistency"``,
            ``"import"``.
        created_at, updated_at: epoch seconds.
        metadata: the version's metadata document (a copy; while ``UPDATING``, the content it replaces).
    """

    version_id: str
    workflow_status: str
    state: str
    message: str | None
    forced: bool
    origin: str
    created_at: float
    updated_at: float
    metadata: Mapping[str, Any]

    @property
    def patient(self) -> Mapping[str, Any]:
        """The patient-level DICOM attributes of this version."""
        return dict(self.metadata.get("Patient", {}).get("DICOM", {}))

    @property
    def study(self) -> Mapping[str, Any]:
        """The study-level DICOM attributes of this version."""
        return dict(self.metadata.get("Study", {}).get("DICOM", {}))

    @classmethod
    def from_version(cls, v: Version, *, state: str) -> ImageSetVersion:
        """Build from the emulator store's version; ``state`` is the image set's state now."""
        return cls(
            version_id=str(v.version_id),
            workflow_status=v.workflow_status,
            state=state,
            message=v.message,
            forced=v.forced,
            origin=v.origin,
            created_at=v.created_at,
            updated_at=v.updated_at,
            metadata=copy.deepcopy(v.metadata),
        )
