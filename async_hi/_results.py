"""Typed results of the client's operations (frozen dataclasses, built from botocore's parsed responses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["ImageSetInfo", "UpdateOutcome", "UpdateResult", "VersionInfo"]

_APPLYING = ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY")


def _ts(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSetInfo:
    """GetImageSet: one version of an image set and the image set's state."""

    datastore_id: str
    image_set_id: str
    version_id: str
    state: str
    workflow_status: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    message: str | None = None
    arn: str | None = None
    is_primary: bool | None = None
    forced: bool = False

    @property
    def locked(self) -> bool:
        """An update is being applied: every write is refused until it ends."""
        return self.state == "LOCKED" or (self.workflow_status or "") in _APPLYING

    @property
    def deleted(self) -> bool:
        """The image set is DELETED (no update will ever be accepted)."""
        return self.state == "DELETED"

    @classmethod
    def from_response(cls, r: Mapping[str, Any]) -> ImageSetInfo:
        """Build from a GetImageSet answer (botocore's parsed dict)."""
        return cls(
            datastore_id=r["datastoreId"],
            image_set_id=r["imageSetId"],
            version_id=r["versionId"],
            state=r["imageSetState"],
            workflow_status=r.get("imageSetWorkflowStatus"),
            created_at=_ts(r.get("createdAt")),
            updated_at=_ts(r.get("updatedAt")),
            deleted_at=_ts(r.get("deletedAt")),
            message=r.get("message"),
            arn=r.get("imageSetArn"),
            is_primary=r.get("isPrimary"),
            forced=bool((r.get("overrides") or {}).get("forced", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionInfo:
    """One item of ListImageSetVersions (newest first)."""

    image_set_id: str
    version_id: str
    state: str
    workflow_status: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    message: str | None = None
    is_primary: bool | None = None
    forced: bool = False

    @classmethod
    def from_response(cls, r: Mapping[str, Any]) -> VersionInfo:
        """Build from one item of a ListImageSetVersions answer (botocore's parsed dict)."""
        return cls(
            image_set_id=r["imageSetId"],
            version_id=r["versionId"],
            state=r["imageSetState"],
            # the model spells this member with a capital I
            workflow_status=r.get("ImageSetWorkflowStatus") or r.get("imageSetWorkflowStatus"),
            created_at=_ts(r.get("createdAt")),
            updated_at=_ts(r.get("updatedAt")),
            deleted_at=_ts(r.get("deletedAt")),
            message=r.get("message"),
            is_primary=r.get("isPrimary"),
            forced=bool((r.get("overrides") or {}).get("forced", False)),
        )


#: What became of one update: the one vocabulary of direct calls and ``update_many``.
#:
#: - ``"applied"``: this client's write was accepted (HTTP 200) and, with ``wait=True``,
#:   applied (``UPDATED``). Without ``wait`` the apply may still be running (``done`` is False).
#: - ``"already-applied"``: an earlier attempt's answer was lost and the change is present in
#:   the version that attempt would have created; this client's write may or may not be the
#:   one that made it (only said of changes that do not depend on what they read: see
#:   ``async_hi._conflict``).
#: - ``"dropped"``: the rebase function returned None; nothing was written.
#: - ``"update-failed"``: the write was accepted but the service could not apply it
#:   (``UPDATE_FAILED``, seen with ``wait=True``); the version changed nothing. Never "applied".
UpdateOutcome = Literal["applied", "already-applied", "dropped", "update-failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateResult:
    """The end of one update.

    Attributes:
        latest_version_id: the version the update created (the version left
            unchanged when ``outcome == "dropped"``).
        state, workflow_status, message: as last seen; after ``wait=True`` the
            final ones (``UPDATED`` or ``UPDATE_FAILED`` with its message).
        outcome: see :data:`UpdateOutcome`.
        attempts: write attempts sent; conflicts: refusals of a stale version or a LOCKED image set.
        base_version_id: the version the successful write was sent against.
    """

    datastore_id: str
    image_set_id: str
    latest_version_id: str
    state: str
    workflow_status: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    message: str | None = None
    outcome: UpdateOutcome = "applied"
    attempts: int = 0
    conflicts: int = 0
    base_version_id: str | None = None

    @property
    def failed(self) -> bool:
        """The service could not apply the update (``UPDATE_FAILED``)."""
        return self.workflow_status == "UPDATE_FAILED"

    @property
    def done(self) -> bool:
        """The apply has ended (or nothing was written)."""
        return self.outcome == "dropped" or (self.workflow_status or "") not in _APPLYING
