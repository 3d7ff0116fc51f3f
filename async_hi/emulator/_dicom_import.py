"""Import DICOM P10 files into the emulator's image sets, as HealthImaging's import does.

Two steps. :func:`read_dicom` is pure (paths in, :class:`DicomBatch` out): it
expands files, folders and globs, reads each file's header with pydicom
(``stop_before_pixels``: no pixel data is read or decoded), skips what is not
a DICOM P10 file or lacks a UID an image set needs, and groups instances
into image set drafts. :func:`add_to_store` then places the drafts in a
datastore and returns an :class:`ImportReport` (paths, counts, reasons and
ids; never attribute values).

Grouping and primary image sets follow the developer guide ("Understanding
image sets"): an image set holds instances of one series; instances are
grouped by the elements it lists (PatientID, StudyInstanceUID, StudyDate,
AccessionNumber, StudyID; SeriesInstanceUID, SeriesNumber), so instances of
one series that disagree on one of them form separate image sets. Placing a
draft:

- no primary image set holds its series and none of its study disagrees on a
  study-level grouping element: a new **primary** image set;
- a primary image set holds its series with the same grouping elements: the
  instances go into it as a **new version** (workflow status IMPORTED; the
  most recently received values win, a re-imported instance replaces its
  copy), as the guide says a re-imported instance does;
- otherwise (a grouping element conflicts, or that primary image set is
  LOCKED by an update, **our choice**): a new **non-primary** image set.

``primary=False`` makes every draft a new non-primary image set.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.errors import InvalidDicomError

from async_hi.emulator._dicom_report import ImportedImageSet, ImportReport, SkippedFile
from async_hi.emulator._dicom_values import instance_parts, stored_transfer_syntax
from async_hi.emulator._store import ImageSet, Store
from async_hi.levels import Level

__all__ = [
    "DicomBatch",
    "ImageSetDraft",
    "ImportReport",
    "ImportedImageSet",
    "SkippedFile",
    "add_to_store",
    "pydicom_test_data_paths",
    "read_dicom",
]

#: The elements HealthImaging groups instances by, per level of the document.
GROUPING: tuple[tuple[Level, str], ...] = (
    (Level.PATIENT, "PatientID"),
    (Level.STUDY, "StudyInstanceUID"),
    (Level.STUDY, "StudyDate"),
    (Level.STUDY, "AccessionNumber"),
    (Level.STUDY, "StudyID"),
    (Level.SERIES, "SeriesInstanceUID"),
    (Level.SERIES, "SeriesNumber"),
)
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(slots=True)
class ImageSetDraft:
    """The instances of one series with the same grouping elements: one image set to be."""

    study_uid: str
    series_uid: str
    #: grouping element values (PHI: compared, never printed)
    grouping: tuple[Any, ...]
    metadata: dict[str, Any]
    paths: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DicomBatch:
    """What :func:`read_dicom` made of some paths."""

    drafts: tuple[ImageSetDraft, ...]
    skipped: tuple[SkippedFile, ...]
    #: regular files considered
    files: int
    #: files loaded as instances
    instances: int
    #: files holding an instance an earlier file of the batch already held (the later copy wins)
    duplicates: int
    #: elements pydicom could not decode (kept as null)
    undecodable_elements: int


def pydicom_test_data_paths() -> list[str]:
    """The test files shipped inside the installed pydicom package, sorted.

    Only local files: unlike ``pydicom.data.get_testdata_files()``, this never
    downloads the extra files pydicom fetches from GitHub.
    """
    root = Path(pydicom.data.data_manager.DATA_ROOT)
    found = (p for sub in ("test_files", "charset_files") for p in (root / sub).rglob("*"))
    return sorted(str(p) for p in found if p.is_file() and p.suffix != ".py")


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[SkippedFile]]:
    """Files named by ``paths`` (files, folders searched recursively, globs), each once."""
    files: list[Path] = []
    missing: list[SkippedFile] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for raw in paths:
        text = os.path.expanduser(os.fspath(raw))
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else []
        targets = matches or [Path(text)]
        for target in targets:
            if target.is_dir():
                for p in sorted(target.rglob("*")):
                    if p.is_file():
                        add(p)
            elif target.is_file():
                add(target)
            else:
                what = "the pattern matches nothing" if glob.has_magic(text) else "no such file or folder"
                missing.append(SkippedFile(text, what))
    return files, missing


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom logs and warns with element values (``Invalid value for VR IS: ...``): PHI."""
    logger = logging.getLogger("pydicom")
    drop = _DropAll()
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings(), pydicom_config.disable_value_validation():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeFilter(drop)


def _uid(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


class _Reader:
    def __init__(self) -> None:
        # keyed by the grouping values as JSON (values may be lists)
        self.drafts: dict[str, ImageSetDraft] = {}
        self.skipped: list[SkippedFile] = []
        self.instances = 0
        self.duplicates = 0
        self.undecodable = 0

    def read(self, path: Path) -> None:
        name = str(path)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            self.skipped.append(SkippedFile(name, "not a DICOM P10 file (no DICM prefix or file meta)"))
            return
        except OSError as exc:
            self.skipped.append(SkippedFile(name, f"cannot be read ({type(exc).__name__})"))
            return
        except Exception as exc:  # pydicom raises many kinds on malformed files
            self.skipped.append(SkippedFile(name, f"cannot be parsed ({type(exc).__name__})"))
            return
        try:
            self.add(name, ds)
        except Exception as exc:
            self.skipped.append(SkippedFile(name, f"cannot be converted ({type(exc).__name__})"))

    def add(self, name: str, ds: Any) -> None:
        uids = {k: _uid(ds, k) for k in _REQUIRED_UIDS}
        lacking = [k for k, v in uids.items() if v is None]
        if lacking:
            self.skipped.append(SkippedFile(name, f"lacks {', '.join(lacking)}"))
            return
        transfer_syntax = _uid(getattr(ds, "file_meta", {}), "TransferSyntaxUID")
        if transfer_syntax is None:
            self.skipped.append(SkippedFile(name, "lacks TransferSyntaxUID in its file meta"))
            return
        stored = stored_transfer_syntax(transfer_syntax, ds)
        if stored is None:
            self.skipped.append(SkippedFile(name, f"transfer syntax {transfer_syntax} is not supported"))
            return
        study_uid, series_uid, iuid = (str(uids[k]) for k in _REQUIRED_UIDS)
        parts = instance_parts(ds, iuid)
        grouping = tuple(parts.by_level[level].get(kw) for level, kw in GROUPING)
        key = json.dumps(grouping)
        draft = self.drafts.get(key)
        if draft is None:
            draft = ImageSetDraft(
                study_uid=study_uid,
                series_uid=series_uid,
                grouping=grouping,
                metadata={
                    "SchemaVersion": "1.1",
                    "Patient": {"DICOM": {}},
                    "Study": {"DICOM": {}, "Series": {series_uid: {"DICOM": {}, "Instances": {}}}},
                },
            )
            self.drafts[key] = draft
        md = draft.metadata
        # the most recently read file wins for patient, study and series values
        md["Patient"]["DICOM"].update(parts.by_level[Level.PATIENT])
        md["Study"]["DICOM"].update(parts.by_level[Level.STUDY])
        series = md["Study"]["Series"][series_uid]
        series["DICOM"].update(parts.by_level[Level.SERIES])
        if iuid in series["Instances"]:
            self.duplicates += 1
        series["Instances"][iuid] = {
            "DICOM": parts.by_level[Level.INSTANCE],
            "DICOMVRs": parts.vrs,
            "StoredTransferSyntaxUID": stored,
            "ImageFrames": parts.image_frames,
        }
        draft.paths.append(name)
        self.instances += 1
        self.undecodable += parts.undecodable


def read_dicom(paths: Iterable[str | os.PathLike[str]]) -> DicomBatch:
    """Read DICOM P10 headers and group them into image set drafts (no store involved).

    Args:
        paths: files, folders (searched recursively) and glob patterns.

    Returns:
        The drafts in first-seen order, and every file skipped with its reason.
    """
    files, missing = expand_paths(paths)
    reader = _Reader()
    reader.skipped.extend(missing)
    with _quiet_pydicom():
        for path in files:
            reader.read(path)
    return DicomBatch(
        drafts=tuple(reader.drafts.values()),
        skipped=tuple(reader.skipped),
        files=len(files) + len(missing),
        instances=reader.instances,
        duplicates=reader.duplicates,
        undecodable_elements=reader.undecodable,
    )


def _grouping_of(metadata: dict[str, Any], series_uid: str) -> tuple[Any, ...]:
    series = metadata.get("Study", {}).get("Series", {}).get(series_uid, {})
    where = {
        Level.PATIENT: metadata.get("Patient", {}).get("DICOM", {}),
        Level.STUDY: metadata.get("Study", {}).get("DICOM", {}),
        Level.SERIES: series.get("DICOM", {}),
    }
    return tuple(where[level].get(kw) for level, kw in GROUPING)


def _conflict(draft: ImageSetDraft, image_set: ImageSet, *, same_series: bool) -> str | None:
    """The first grouping keyword on which ``draft`` disagrees with ``image_set``, if any."""
    theirs = _grouping_of(image_set.applied_metadata(), draft.series_uid)
    for (level, keyword), mine, other in zip(GROUPING, draft.grouping, theirs, strict=True):
        if (same_series or level is not Level.SERIES) and mine != other:
            return keyword
    return None


def _merge(base: dict[str, Any], draft: ImageSetDraft) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    new = draft.metadata
    doc.setdefault("Patient", {}).setdefault("DICOM", {}).update(copy.deepcopy(new["Patient"]["DICOM"]))
    study = doc.setdefault("Study", {})
    study.setdefault("DICOM", {}).update(copy.deepcopy(new["Study"]["DICOM"]))
    incoming = new["Study"]["Series"][draft.series_uid]
    series = study.setdefault("Series", {}).setdefault(draft.series_uid, {"DICOM": {}, "Instances": {}})
    series.setdefault("DICOM", {}).update(copy.deepcopy(incoming["DICOM"]))
    series.setdefault("Instances", {}).update(copy.deepcopy(incoming["Instances"]))
    return doc


def _place(store: Store, datastore_id: str, draft: ImageSetDraft, primary: bool) -> ImportedImageSet:
    count = len(draft.metadata["Study"]["Series"][draft.series_uid]["Instances"])

    def create(is_primary: bool, note: str | None) -> ImportedImageSet:
        s = store.add_image_set(datastore_id, draft.metadata, primary=is_primary)
        return ImportedImageSet(s.image_set_id, is_primary, 1, count, "created", note)

    if not primary:
        return create(False, "imported with primary=False")
    study_sets = []
    for candidate in list(store.datastores[datastore_id].image_sets.values()):
        if candidate.is_primary and not candidate.deleted:
            store.settle(candidate)
            if candidate.study_uid() == draft.study_uid:
                study_sets.append(candidate)
    holder = next(
        (s for s in study_sets if draft.series_uid in s.applied_metadata()["Study"]["Series"]), None
    )
    for other in study_sets:
        keyword = _conflict(draft, other, same_series=other is holder)
        if keyword is not None:
            return create(False, f"{keyword} conflicts with primary image set {other.image_set_id}")
    if holder is None:
        return create(True, None)
    if holder.state != "ACTIVE":
        return create(False, f"primary image set {holder.image_set_id} was {holder.state}")
    version = store.add_version(holder, _merge(holder.applied_metadata(), draft))
    return ImportedImageSet(holder.image_set_id, True, version.version_id, count, "new version")


def add_to_store(store: Store, datastore_id: str, batch: DicomBatch, *, primary: bool = True) -> ImportReport:
    """Place ``batch``'s drafts in a datastore (see the module docstring for how).

    Args:
        store: the emulator's store (call on the emulator's loop).
        datastore_id: an existing datastore.
        batch: what :func:`read_dicom` read.
        primary: False makes every draft a new non-primary image set.

    Raises:
        KeyError: there is no such datastore.
    """
    if datastore_id not in store.datastores:
        raise KeyError(f"no datastore {datastore_id!r}")
    placed: list[ImportedImageSet] = []
    skipped = list(batch.skipped)
    failed = 0
    for draft in batch.drafts:
        try:
            placed.append(_place(store, datastore_id, draft, primary))
        except Exception as exc:  # report, never stop half-way unexplained
            failed += len(draft.paths)
            reason = f"could not be added to the store ({type(exc).__name__})"
            skipped.extend(SkippedFile(p, reason) for p in draft.paths)
    return ImportReport(
        datastore_id=datastore_id,
        files=batch.files,
        imported=batch.instances - failed,
        duplicates=batch.duplicates,
        undecodable_elements=batch.undecodable_elements,
        skipped=tuple(skipped),
        image_sets=tuple(placed),
    )
