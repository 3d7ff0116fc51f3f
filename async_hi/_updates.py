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
from async_hi._errors import HealthImagingError
from async_hi.document import DocumentKind, check_document

__all__ = ["MAX_BLOB_BYTES", "InvalidUpdateError", "MetadataUpdate", "UpdateBuilder"]

MAX_BLOB_BYTES = int(contract.shape("DICOMAttribute").metadata["max"])
"""The largest ``updatableAttributes``/``removableAttributes`` document, in bytes (botocore's model)."""
_ID = "[0-9a-z]{32}"
_VERSION = re.compile(r"[0-9]+")


class InvalidUpdateError(HealthImagingError, ValueError):
    """An update that the service would refuse, found before any quota is spent.

    ``problems`` lists every rule broken; none of them quotes an attribute value.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid metadata update: " + "; ".join(self.problems))


def _canonical(doc: Mapping[str, Any]) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON, and the service refuses them
    return json.dumps(
        doc, separators=(",", ":"), ensure_ascii=False, sort_keys=False, allow_nan=False
    ).encode()


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, Mapping):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


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
            elif value is not None and int(value) < 1:
                problems.append(f"{name} must be 1 or more (versions are numbered from 1)")
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
            if _has_non_finite(doc):
                problems.append(f"{kind}Attributes: holds NaN or Infinity, which JSON cannot carry")
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

    @classmethod
    def revert(
        cls,
        datastore_id: str,
        image_set_id: str,
        to_version_id: str | int,
        *,
        latest_version_id: str | None = None,
    ) -> MetadataUpdate:
        """A revert: the next version's content will equal version ``to_version_id``.

        Args:
            datastore_id: the datastore.
            image_set_id: the image set.
            to_version_id: the version to go back to.
            latest_version_id: the version expected to be current (None: read it before writing).
        """
        return cls(
            datastore_id=datastore_id,
            image_set_id=image_set_id,
            revert_to_version_id=str(to_version_id),
            latest_version_id=latest_version_id,
        )

    @property
    def is_revert(self) -> bool:
        """This update reverts to an earlier version instead of changing attributes."""
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


_SCHEMA_VERSION = 1.1  # what AWS's examples send; the service also accepts the string "1.1"
_AttrMap = Mapping[str, Any] | None


class UpdateBuilder:
    """Assemble an update attribute by attribute, level by level, then :meth:`build` it once.

    Args:
        datastore_id: the datastore.
        image_set_id: the image set.
        force: send ``force=true`` (needed for UIDs, StudyID, private tags,
            sequences and multi-valued attributes).
        include_study_image_sets: apply to every primary image set of the study.
        latest_version_id: the version the update is computed against (None:
            the client reads the current one just before writing).
        primary: whether the target is a primary image set (stricter rules).

    Example::

        update = (
            UpdateBuilder(datastore_id, image_set_id)
            .patient(PatientName="DOE^JANE")
            .study(StudyDescription="CHEST")
            .series(series_uid, SeriesDescription="AX T1")
            .instance(series_uid, sop_uid, {"00091001": "x"}, vrs={"00091001": "LO"})
            .remove_study("AccessionNumber")
            .force()
            .build()
        )

    Attributes are given as keywords (``PatientName=...``) or, for tags that
    are not Python identifiers, as a mapping (``{"00091001": ...}``). Every
    rule is checked by :meth:`build` (via :class:`MetadataUpdate`), before any
    quota is spent; problems name keywords and levels, never values.
    """

    def __init__(
        self,
        datastore_id: str,
        image_set_id: str,
        *,
        force: bool = False,
        include_study_image_sets: bool = False,
        latest_version_id: str | None = None,
        primary: bool | None = None,
    ) -> None:
        self._ids = (datastore_id, image_set_id)
        self._force = force
        self._study_sets = include_study_image_sets
        self._latest = latest_version_id
        self._primary = primary
        self._upd: dict[str, Any] = {}
        self._rem: dict[str, Any] = {}

    # -- updates ---------------------------------------------------------------

    def patient(self, attrs: _AttrMap = None, /, **keywords: Any) -> UpdateBuilder:
        """Set patient-level attributes."""
        _dicom(self._upd, ("Patient",)).update(_merged(attrs, keywords))
        return self

    def study(self, attrs: _AttrMap = None, /, **keywords: Any) -> UpdateBuilder:
        """Set study-level attributes."""
        _dicom(self._upd, ("Study",)).update(_merged(attrs, keywords))
        return self

    def series(self, series_uid: str, attrs: _AttrMap = None, /, **keywords: Any) -> UpdateBuilder:
        """Set attributes of the series ``series_uid`` (a new SeriesInstanceUID re-keys it; needs force)."""
        _dicom(self._upd, ("Study", "Series", series_uid)).update(_merged(attrs, keywords))
        return self

    def instance(
        self,
        series_uid: str,
        sop_uid: str,
        attrs: _AttrMap = None,
        /,
        *,
        vrs: Mapping[str, str] | None = None,
        **keywords: Any,
    ) -> UpdateBuilder:
        """Set attributes of one instance; private tags (``"00091001"``) need a VR in ``vrs`` and force."""
        path = ("Study", "Series", series_uid, "Instances", sop_uid)
        _dicom(self._upd, path).update(_merged(attrs, keywords))
        if vrs:
            _node(self._upd, path).setdefault("DICOMVRs", {}).update(vrs)
        return self

    # -- removals --------------------------------------------------------------

    def remove_patient(self, *keywords: str, **current: Any) -> UpdateBuilder:
        """Remove patient-level attributes (``current`` values may be given; they are not compared)."""
        _dicom(self._rem, ("Patient",)).update(_removals(keywords, current))
        return self

    def remove_study(self, *keywords: str, **current: Any) -> UpdateBuilder:
        """Remove study-level attributes."""
        _dicom(self._rem, ("Study",)).update(_removals(keywords, current))
        return self

    def remove_series_attributes(self, series_uid: str, *keywords: str, **current: Any) -> UpdateBuilder:
        """Remove attributes of one series."""
        _dicom(self._rem, ("Study", "Series", series_uid)).update(_removals(keywords, current))
        return self

    def remove_instance_attributes(
        self, series_uid: str, sop_uid: str, *keywords: str, **current: Any
    ) -> UpdateBuilder:
        """Remove attributes (or private tags) of one instance."""
        path = ("Study", "Series", series_uid, "Instances", sop_uid)
        _dicom(self._rem, path).update(_removals(keywords, current))
        return self

    def remove_series(self, series_uid: str) -> UpdateBuilder:
        """Remove the whole series ``series_uid`` from the image set."""
        _node(self._rem, ("Study", "Series")).__setitem__(series_uid, {})
        return self

    def remove_instance(self, series_uid: str, sop_uid: str) -> UpdateBuilder:
        """Remove one whole instance from its series."""
        _node(self._rem, ("Study", "Series", series_uid, "Instances")).__setitem__(sop_uid, {})
        return self

    # -- options and result ----------------------------------------------------

    def force(self, value: bool = True) -> UpdateBuilder:
        """Send ``force=true``."""
        self._force = value
        return self

    def build(self) -> MetadataUpdate:
        """The validated :class:`MetadataUpdate` (JSON built once).

        Raises:
            InvalidUpdateError: nothing to do, or any rule broken.
        """
        if not self._upd and not self._rem:
            raise InvalidUpdateError(["the builder holds no attribute to update or remove"])
        return MetadataUpdate(
            datastore_id=self._ids[0],
            image_set_id=self._ids[1],
            updatable={"SchemaVersion": _SCHEMA_VERSION, **self._upd} if self._upd else None,
            removable={"SchemaVersion": _SCHEMA_VERSION, **self._rem} if self._rem else None,
            force=self._force,
            include_study_image_sets=self._study_sets,
            latest_version_id=self._latest,
            primary=self._primary,
        )

    def __repr__(self) -> str:
        d, i = self._ids
        return f"UpdateBuilder(datastore_id={d!r}, image_set_id={i!r}, force={self._force})"


def _node(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = doc
    for key in path:
        node = node.setdefault(key, {})
    return node


def _dicom(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = _node(doc, path).setdefault("DICOM", {})
    return node


def _merged(attrs: _AttrMap, keywords: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(attrs or {})
    clash = sorted(set(out) & set(keywords))
    if clash:
        raise InvalidUpdateError([f"attribute(s) {', '.join(clash)} given twice"])
    out.update(keywords)
    return out


def _removals(keywords: tuple[str, ...], current: Mapping[str, Any]) -> dict[str, Any]:
    # the service does not compare the value given for a removal; "" stands for "whatever it is"
    out: dict[str, Any] = dict.fromkeys(keywords, "")
    out.update(current)
    return out
