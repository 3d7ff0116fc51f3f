"""The metadata-update document: its rules and how an update applies.

``updatableAttributes`` and ``removableAttributes`` are JSON documents shaped
like the image set metadata (``Patient`` / ``Study`` / ``Series`` /
``Instances``). :func:`check_document` enforces the service's document rules
(levels, never-updatable and force-only attributes, private tags, unknown
series/instance UIDs, primary image sets) and :func:`apply_update` computes
the metadata an accepted update produces. The client's builder checks with
them before spending quota; the emulator checks and applies with them.

Problems never contain attribute values (PHI); UIDs appear only as a short
digest (:func:`mask_uid`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from async_hi.levels import (
    FORCE_ONLY,
    NEVER_UPDATABLE,
    Level,
    is_private_tag,
    keyword_vr,
    level_of,
    resolve_keyword,
)

__all__ = [
    "DocumentKind",
    "apply_update",
    "check_document",
    "key_label",
    "mask_uid",
]

DocumentKind = Literal["updatable", "removable"]
_UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}


def mask_uid(uid: str) -> str:
    """A stable short digest of a UID, safe to print."""
    return "uid#" + hashlib.sha256(uid.encode()).hexdigest()[:8]


def key_label(key: object, known: Iterable[str] = ()) -> str:
    """How a key nobody recognises is named in a message: as data, never in full.

    An unknown key may be a value in the wrong place (swapped CSV columns) or
    hundreds of kilobytes long, so it is shown as a short digest and its length;
    a close match among ``known`` names (dictionary keywords, never input) is
    suggested when the key is short.
    """
    if not isinstance(key, str):
        return f"a {type(key).__name__} key"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    label = f"key#{digest} ({len(key)} characters)"
    if len(key) <= 64:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
        if close:
            label += f" (did you mean {close[0]}?)"
    return label


def check_document(
    doc: Any,
    *,
    kind: DocumentKind,
    force: bool = False,
    primary: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> list[str]:
    """Check one decoded update document against the service's rules.

    Args:
        doc: the decoded ``updatableAttributes`` or ``removableAttributes`` JSON.
        kind: which of the two it is.
        force: whether the request carries ``force=true``.
        primary: whether the target image set is primary.
        metadata: the image set's current metadata; when given, every series and
            instance UID the document names must exist in it.

    Returns:
        Problems, each a sentence naming the place and the rule; empty if none.
    """
    c = _Checker(kind=kind, force=force, primary=primary, metadata=metadata)
    c.document(doc)
    return c.problems


class _Checker:
    def __init__(
        self,
        *,
        kind: DocumentKind,
        force: bool,
        primary: bool,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.kind = kind
        self.force = force
        self.primary = primary
        self.metadata = metadata
        self.problems: list[str] = []
        self.unknown = 0

    def bad(self, msg: str) -> None:
        self.problems.append(f"{self.kind}Attributes: {msg}")

    def _object(self, value: Any, where: str) -> bool:
        if not isinstance(value, dict):
            self.bad(f"{where} must be a JSON object")
            return False
        return True

    def _keys(self, value: dict[str, Any], where: str, allowed: set[str]) -> None:
        extra = [k for k in value if k not in allowed]
        if extra:
            names = ", ".join(key_label(k, allowed) for k in extra[:5])
            if len(extra) > 5:
                names += f" and {len(extra) - 5} more"
            self.bad(f"{where} has unexpected key(s) {names}; allowed: {', '.join(sorted(allowed))}")

    def document(self, doc: Any) -> None:
        if not self._object(doc, "the document"):
            return
        self._keys(doc, "the document", {"SchemaVersion", "Patient", "Study"})
        if "SchemaVersion" in doc and doc["SchemaVersion"] not in ("1.1", 1.1):
            self.bad('SchemaVersion must be "1.1" (or 1.1)')
        if not any(k in doc for k in ("Patient", "Study")):
            self.bad("the document names neither Patient nor Study")
        if "Patient" in doc and self._object(doc["Patient"], "Patient"):
            self._keys(doc["Patient"], "Patient", {"DICOM"})
            self.dicom(doc["Patient"].get("DICOM"), Level.PATIENT, "Patient.DICOM")
        if "Study" in doc and self._object(doc["Study"], "Study"):
            study = doc["Study"]
            self._keys(study, "Study", {"DICOM", "Series"})
            self.dicom(study.get("DICOM"), Level.STUDY, "Study.DICOM")
            if "Series" in study and self._object(study["Series"], "Study.Series"):
                for uid, series in study["Series"].items():
                    self.series(uid, series)

    def _known_series(self) -> Mapping[str, Any] | None:
        if self.metadata is None:
            return None
        series = self.metadata.get("Study", {}).get("Series", {})
        return series if isinstance(series, Mapping) else {}

    def series(self, uid: str, series: Any) -> None:
        where = f"series {mask_uid(uid)}"
        known = self._known_series()
        if known is not None and uid not in known:
            self.bad(f"{where} is not in the image set")
            return
        if not self._object(series, where):
            return
        self._keys(series, where, {"DICOM", "Instances"})
        self.dicom(series.get("DICOM"), Level.SERIES, f"{where} DICOM")
        instances = series.get("Instances")
        if instances is None or not self._object(instances, f"{where} Instances"):
            return
        known_instances: Mapping[str, Any] | None = None
        if known is not None:
            known_instances = known[uid].get("Instances", {})
        for iuid, inst in instances.items():
            iwhere = f"instance {mask_uid(iuid)}"
            if known_instances is not None and iuid not in known_instances:
                self.bad(f"{iwhere} is not in {where}")
                continue
            if not self._object(inst, iwhere):
                continue
            self._keys(inst, iwhere, {"DICOM", "DICOMVRs"})
            self.dicom(inst.get("DICOM"), Level.INSTANCE, f"{iwhere} DICOM")
            vrs = inst.get("DICOMVRs")
            if vrs is not None and self._object(vrs, f"{iwhere} DICOMVRs"):
                for tag, vr in vrs.items():
                    if not is_private_tag(tag):
                        self.bad(f"{iwhere} DICOMVRs {key_label(tag)} is not a private tag")
                    elif self.kind == "updatable" and not (isinstance(vr, str) and len(vr) == 2):
                        self.bad(f"{iwhere} DICOMVRs {tag} must be a two-letter VR")
            if self.kind == "updatable":
                dicom = inst.get("DICOM") if isinstance(inst.get("DICOM"), dict) else {}
                for tag in dicom:
                    if is_private_tag(tag) and not (isinstance(vrs, dict) and tag in vrs):
                        self.bad(f"{iwhere} private tag {tag} needs its VR in DICOMVRs")

    def dicom(self, attrs: Any, level: Level, where: str) -> None:
        if attrs is None:
            return
        if not self._object(attrs, where):
            return
        for key, value in attrs.items():
            self.attribute(key, value, level, where)

    def attribute(self, key: str, value: Any, level: Level, where: str) -> None:
        if is_private_tag(key):
            if level is not Level.INSTANCE:
                self.bad(f"{where}: private tag {key} is only allowed at instance level")
            elif not self.force:
                self.bad(f"{where}: private tag {key} needs force=true")
            return
        keyword = resolve_keyword(key)
        if keyword is None:
            self.unknown += 1  # suggestions cost milliseconds: only for the first few
            known = _keywords() if self.unknown <= 10 else ()
            self.bad(f"{where}: {key_label(key, known)} is not a DICOM keyword or tag")
            return
        if keyword in NEVER_UPDATABLE:
            self.bad(f"{where}: {keyword} can never be updated or removed")
            return
        home = level_of(keyword)
        if home is not level:
            self.bad(f"{where}: {keyword} belongs at {home.value} level, not {level.value}")
            return
        if self.primary and level in (Level.PATIENT, Level.SERIES):
            self.bad(f"{where}: {level.value}-level {keyword} cannot be changed on a primary image set")
            return
        if keyword in _UID_KEYS and self.primary:
            self.bad(f"{where}: {keyword} cannot be changed on a primary image set, even with force")
            return
        if keyword in FORCE_ONLY and not self.force:
            self.bad(f"{where}: {keyword} needs force=true")
            return
        if self.kind == "removable" and keyword in _UID_KEYS:
            self.bad(f"{where}: {keyword} cannot be removed")
            return
        if self.force:
            return
        if keyword_vr(keyword) == "SQ":
            self.bad(f"{where}: sequence {keyword} needs force=true")
        elif self.kind == "updatable" and isinstance(value, list) and len(value) > 1:
            self.bad(f"{where}: multi-valued {keyword} needs force=true")


@functools.lru_cache(maxsize=1)
def _keywords() -> tuple[str, ...]:
    from pydicom.datadict import keyword_dict

    return tuple(k for k in keyword_dict if k)


def apply_update(
    metadata: Mapping[str, Any],
    updatable: Mapping[str, Any] | None,
    removable: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The metadata after an update: ``updatable`` merged in, then ``removable`` taken out.

    The inputs are assumed to have passed :func:`check_document`. A series or
    instance whose ``DICOM`` gets a new UID is re-keyed under it; an empty
    object in ``removable`` removes the whole series or instance.
    """
    doc = copy.deepcopy(dict(metadata))
    if updatable:
        _merge(doc, updatable)
    if removable:
        _remove(doc, removable)
    return doc


def _merge(doc: dict[str, Any], upd: Mapping[str, Any]) -> None:
    if "Patient" in upd:
        doc.setdefault("Patient", {}).setdefault("DICOM", {}).update(upd["Patient"].get("DICOM", {}))
    study_upd = upd.get("Study")
    if not study_upd:
        return
    study = doc.setdefault("Study", {})
    study.setdefault("DICOM", {}).update(study_upd.get("DICOM", {}))
    series_all = study.setdefault("Series", {})
    for suid, s_upd in study_upd.get("Series", {}).items():
        series = series_all.setdefault(suid, {"DICOM": {}, "Instances": {}})
        series.setdefault("DICOM", {}).update(s_upd.get("DICOM", {}))
        instances = series.setdefault("Instances", {})
        for iuid, i_upd in s_upd.get("Instances", {}).items():
            inst = instances.setdefault(iuid, {"DICOM": {}})
            inst.setdefault("DICOM", {}).update(i_upd.get("DICOM", {}))
            if i_upd.get("DICOMVRs"):
                inst.setdefault("DICOMVRs", {}).update(i_upd["DICOMVRs"])
            new_iuid = inst["DICOM"].get("SOPInstanceUID")
            if isinstance(new_iuid, str) and new_iuid != iuid:
                instances[new_iuid] = instances.pop(iuid)
        new_suid = series["DICOM"].get("SeriesInstanceUID")
        if isinstance(new_suid, str) and new_suid != suid:
            series_all[new_suid] = series_all.pop(suid)


def _remove(doc: dict[str, Any], rem: Mapping[str, Any]) -> None:
    if "Patient" in rem:
        pd = doc.get("Patient", {}).get("DICOM", {})
        for key in rem["Patient"].get("DICOM", {}):
            pd.pop(key, None)
    study_rem = rem.get("Study")
    if not study_rem:
        return
    study = doc.get("Study", {})
    sd = study.get("DICOM", {})
    for key in study_rem.get("DICOM", {}):
        sd.pop(key, None)
    series_all = study.get("Series", {})
    for suid, s_rem in study_rem.get("Series", {}).items():
        if suid not in series_all:
            continue
        if not s_rem:
            del series_all[suid]
            continue
        series = series_all[suid]
        for key in s_rem.get("DICOM", {}):
            series.get("DICOM", {}).pop(key, None)
        instances = series.get("Instances", {})
        for iuid, i_rem in s_rem.get("Instances", {}).items():
            if iuid not in instances:
                continue
            if not i_rem:
                del instances[iuid]
                continue
            inst = instances[iuid]
            for key in i_rem.get("DICOM", {}):
                inst.get("DICOM", {}).pop(key, None)
                inst.get("DICOMVRs", {}).pop(key, None)
            for key in i_rem.get("DICOMVRs", {}):
                inst.get("DICOMVRs", {}).pop(key, None)
