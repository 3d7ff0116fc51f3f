"""Typed metadata updates: one request, validated and serialised once.

A :class:`MetadataUpdate` is what every layer passes around (the client, the
bulk runner, manifests, the journal). It holds the decoded update documents,
checks them against the service's document rules at construction, and builds
the JSON bytes of each blob exactly once (``body()``), so nothing is ever
base64-encoded twice: botocore encodes the bytes for the wire.

Use :class:`UpdateBuilder` to assemble documents attribute by attribute, or
construct a ``MetadataUpdate`` from documents you already have.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from async_hi import contract
from async_hi.document import DocumentKind, check_document

__all__ = ["MAX_BLOB_BYTES", "InvalidUpdateError", "MetadataUpdate"]

MAX_BLOB_BYTES = int(contract.shape("DICOMAttribute").metadata["max"])
_ID = "[0-9a-z]{32}"
_VERSION = re.compile(r"[0-9]+")


class InvalidUpdateError(ValueError):
    """An update that the service would refuse, found before any quota is spent.

    ``problems`` lists every rule broken; none of them quotes an attribute value.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid metadata update: " + "; ".join(self.problems))


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=False).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataUpdate:
    """One UpdateImageSetMetadata request.

    Exactly one of (``updatable`` and/or ``removable``) or ``revert_to_version_id``.

    Args:
        datastore_id: the datastore, ``[0-9a-z]{32}``.
        image_set_id: the image set, ``[0-9a-z]{32}``.
        updatable: the ``updatableAttributes`` document (decoded JSON), or None.
        removable: the ``removableAttributes`` document (decoded JSON), or None.
        revert_to_version_id: revert to this version instead of updating.
        force: send ``force=true`` (UIDs, StudyID, private tags, sequences).
        include_study_image_sets: apply to every primary image set of the study.
        latest_version_id: the version the caller expects; None lets the
            client read the current one just before writing.
        primary: the target is a primary image set (extra rules); None: unknown.

    Raises:
        InvalidUpdateError: any rule broken (ids, union, sizes, document rules).
    """

    datastore_id: str
    image_set_id: str
    updatable: Mapping[str, Any] | None = None
    removable: Mapping[str, Any] | None = None
    revert_to_version_id: str | None = None
    force: bool = False
    include_study_image_sets: bool = False
    latest_version_id: str | None = None
    primary: bool | None = None
    _blobs: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("datastore_id", "image_set_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not contract.matches(_ID, value):
                problems.append(f"{name} must be 32 characters of [0-9a-z]")
        for name in ("revert_to_version_id", "latest_version_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _VERSION.fullmatch(value)):
                problems.append(f"{name} must be a decimal string")
        has_docs = self.updatable is not None or self.removable is not None
        if has_docs and self.revert_to_version_id is not None:
            problems.append("give either attribute documents or revert_to_version_id, not both")
        elif not has_docs and self.revert_to_version_id is None:
            problems.append("give updatable and/or removable documents, or revert_to_version_id")
        if self.revert_to_version_id is not None and self.include_study_image_sets:
            problems.append("include_study_image_sets cannot be combined with a revert")
        kinds: tuple[tuple[DocumentKind, Mapping[str, Any] | None], ...] = (
            ("updatable", self.updatable),
            ("removable", self.removable),
        )
        for kind, doc in kinds:
            if doc is None:
                continue
            problems += check_document(doc, kind=kind, force=self.force, primary=bool(self.primary))
            if not isinstance(doc, Mapping):
                continue
            try:
                blob = _canonical(doc)
            except (TypeError, ValueError):
                problems.append(f"{kind}Attributes: not JSON-serialisable")
                continue
            if len(blob) > MAX_BLOB_BYTES:
                problems.append(f"{kind}Attributes: {len(blob)} bytes of JSON, more than {MAX_BLOB_BYTES}")
            self._blobs[kind] = blob
        if problems:
            raise InvalidUpdateError(problems)

    @property
    def is_revert(self) -> bool:
        return self.revert_to_version_id is not None

    def blob(self, kind: str) -> bytes | None:
        """The JSON bytes of the ``"updatable"`` or ``"removable"`` document (built once)."""
        return self._blobs.get(kind)

    def payload(self) -> dict[str, Any]:
        """The ``updateImageSetMetadataUpdates`` union for botocore (raw bytes; it base64-encodes)."""
        if self.revert_to_version_id is not None:
            return {"revertToVersionId": self.revert_to_version_id}
        dicom: dict[str, bytes] = {}
        if "updatable" in self._blobs:
            dicom["updatableAttributes"] = self._blobs["updatable"]
        if "removable" in self._blobs:
            dicom["removableAttributes"] = self._blobs["removable"]
        return {"DICOMUpdates": dicom}

    def digest(self) -> str:
        """A SHA-256 of what the request changes (no values leak through a digest this long)."""
        h = hashlib.sha256()
        h.update(f"{self.datastore_id}/{self.image_set_id}".encode())
        h.update(f"|force={self.force}|study={self.include_study_image_sets}".encode())
        h.update(f"|revert={self.revert_to_version_id}".encode())
        h.update(b"|u=" + self._blobs.get("updatable", b""))
        h.update(b"|r=" + self._blobs.get("removable", b""))
        return h.hexdigest()

    def __repr__(self) -> str:
        # documents hold PHI: show their shape, never their values
        parts = [f"datastore_id={self.datastore_id!r}", f"image_set_id={self.image_set_id!r}"]
        if self.revert_to_version_id is not None:
            parts.append(f"revert_to_version_id={self.revert_to_version_id!r}")
        for kind in ("updatable", "removable"):
            if kind in self._blobs:
                parts.append(f"{kind}=<{len(self._blobs[kind])} bytes>")
        if self.force:
            parts.append("force=True")
        if self.latest_version_id is not None:
            parts.append(f"latest_version_id={self.latest_version_id!r}")
        return f"MetadataUpdate({', '.join(parts)})"
