"""What an update names, and what a version shows: the client's own reading, for the exactly-once proof.

The proof (:mod:`async_hi._conflict`) and reconciliation (:mod:`async_hi._reconcile`)
must judge a version of the image set *without* computing what the service
would store: a client that reused the emulator's apply function
(``document.apply_update``) would agree with the emulator by construction and
could never notice a service that stores values differently (trims, reformats,
normalises). So this module does not apply anything. It reads two things:

- :func:`named_changes`: the attributes an update *names*, from its documents
  alone: the values it sets, the keys it removes, the series and instances it
  removes whole, the UIDs it re-keys.
- :func:`flatten`: a metadata document as attribute-level leaves keyed by path
  (``("Study", "DICOM", "StudyDescription")``, ``("Series", uid, "Instances",
  uid, "DICOM", key)``, ...), plus one marker leaf per series and instance.

and answers two questions about a version ``after`` made from ``before``:

- :func:`outside_named`: does the version change a path the update does not
  name? Then it is provably not this update's write: a version is one write,
  and a write changes only what it names (a service that normalised what it
  stores would still change only those paths).
- :func:`shows`: does the version hold exactly the values the update sets
  (compared strictly: ``1`` is not ``true``, ``"1.1"`` is not ``1.1``) and none
  of the keys it removes?
- :func:`plausibly_shows`: could it hold them as a service that normalises
  what it stores would (:func:`could_be_stored_as`, a generous equivalence)?
  If not, the version is provably not this update's write either.

A revert names everything: it is judged by :func:`same_content` against the
service's own document of the version reverted to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from async_hi._updates import MetadataUpdate

__all__ = [
    "Named",
    "changed_paths",
    "could_be_stored_as",
    "flatten",
    "named_changes",
    "outside_named",
    "plausibly_shows",
    "same_content",
    "shows",
    "strictly_equal",
]

Path = tuple[str, ...]
#: the value of a series or instance marker leaf (present)
_PRESENT = ("present",)
_SKIPPED_TOP = ("SchemaVersion", "DatastoreID", "ImageSetID")


@dataclass(slots=True)
class Named:
    """The paths one update (or several, in order) names.

    Attributes:
        sets: path -> value the update sets (paths as they are after any re-keying).
        removes: paths the update removes (as after any re-keying).
        whole: prefixes under which anything may change: a series or instance removed
            whole, or re-keyed (its old and its new UID).
        gone: prefixes under which nothing may remain: removed whole, or the old UID of a re-key.
        objects: series and instance prefixes the update addresses (their markers may appear).
    """

    sets: dict[Path, Any] = field(default_factory=dict)
    removes: set[Path] = field(default_factory=set)
    whole: set[Path] = field(default_factory=set)
    gone: set[Path] = field(default_factory=set)
    objects: set[Path] = field(default_factory=set)

    def covers(self, path: Path) -> bool:
        """Whether a change at ``path`` can come from this update."""
        if path in self.sets or path in self.removes:
            return True
        if any(path[: len(p)] == p for p in self.whole):
            return True
        # the marker of a series or instance the update addresses
        return path in self.objects


def _dicom(node: Any) -> Mapping[str, Any]:
    if isinstance(node, Mapping):
        dicom = node.get("DICOM")
        if isinstance(dicom, Mapping):
            return dicom
    return {}


def _children(node: Any, key: str) -> Mapping[str, Any]:
    if isinstance(node, Mapping):
        child = node.get(key)
        if isinstance(child, Mapping):
            return child
    return {}


def _remove_whole(named: Named, prefix: Path) -> None:
    named.whole.add(prefix)
    named.gone.add(prefix)
    for path in [p for p in named.sets if p[: len(prefix)] == prefix]:
        del named.sets[path]  # set, then removed with its series or instance


def _walk_update(named: Named, doc: Any, *, removing: bool) -> None:
    """Add one document's paths (the updatable or the removable one) to ``named``."""
    if not isinstance(doc, Mapping):
        return

    def put(path: Path, value: Any) -> None:
        if removing:
            named.sets.pop(path, None)
            named.removes.add(path)
        else:
            named.removes.discard(path)
            named.sets[path] = value

    for key, value in _dicom(doc.get("Patient")).items():
        put(("Patient", "DICOM", key), value)
    study = doc.get("Study")
    for key, value in _dicom(study).items():
        put(("Study", "DICOM", key), value)
    for suid, series in _children(study, "Series").items():
        s_path: Path = ("Series", suid)
        named.objects.add(s_path)
        if removing and isinstance(series, Mapping) and not series:
            _remove_whole(named, s_path)  # {} removes the whole series
            continue
        s_dicom = _dicom(series)
        new_suid = s_dicom.get("SeriesInstanceUID")
        s_final = s_path
        if not removing and isinstance(new_suid, str) and new_suid != suid:
            s_final = ("Series", new_suid)
            named.whole.update({s_path, s_final})  # re-keyed: everything under both moves
            named.gone.add(s_path)
            named.objects.add(s_final)
        for key, value in s_dicom.items():
            put((*s_final, "DICOM", key), value)
        for iuid, inst in _children(series, "Instances").items():
            i_path: Path = (*s_final, "Instances", iuid)
            named.objects.add(i_path)
            if removing and isinstance(inst, Mapping) and not inst:
                _remove_whole(named, i_path)
                continue
            i_dicom = _dicom(inst)
            new_iuid = i_dicom.get("SOPInstanceUID")
            i_final = i_path
            if not removing and isinstance(new_iuid, str) and new_iuid != iuid:
                i_final = (*s_final, "Instances", new_iuid)
                named.whole.update({i_path, i_final})
                named.gone.add(i_path)
                named.objects.add(i_final)
            for key, value in i_dicom.items():
                put((*i_final, "DICOM", key), value)
                if removing:  # removing a private tag drops its VR too
                    named.removes.add((*i_final, "DICOMVRs", key))
            for key, value in _children(inst, "DICOMVRs").items():
                put((*i_final, "DICOMVRs", key), value)


def named_changes(updates: MetadataUpdate | Iterable[MetadataUpdate]) -> Named:
    """The paths ``updates`` (one, or several applied in order) set and remove.

    Reverts name no paths (judge them with :func:`same_content`).
    """
    named = Named()
    for update in [updates] if isinstance(updates, MetadataUpdate) else updates:
        _walk_update(named, update.updatable, removing=False)
        _walk_update(named, update.removable, removing=True)
    return named


def flatten(metadata: Mapping[str, Any]) -> dict[Path, Any]:
    """The document as leaves: every attribute by path, and a marker per series and instance."""
    out: dict[Path, Any] = {}
    for top, value in metadata.items():
        if top in _SKIPPED_TOP:
            continue
        if top == "Patient" and isinstance(value, Mapping):
            for key, v in _dicom(value).items():
                out[("Patient", "DICOM", key)] = v
            for key, v in value.items():
                if key != "DICOM":
                    out[("Patient", key)] = v
        elif top == "Study" and isinstance(value, Mapping):
            for key, v in _dicom(value).items():
                out[("Study", "DICOM", key)] = v
            for key, v in value.items():
                if key not in ("DICOM", "Series"):
                    out[("Study", key)] = v
            for suid, series in _children(value, "Series").items():
                _flatten_object(out, ("Series", suid), series, children="Instances")
        else:
            out[(top,)] = value
    return out


def _flatten_object(out: dict[Path, Any], path: Path, node: Any, *, children: str | None) -> None:
    out[path] = _PRESENT
    if not isinstance(node, Mapping):
        leaf: Path = (*path, "")
        out[leaf] = node
        return
    for key, v in node.items():
        if key == "DICOM" and isinstance(v, Mapping):
            for attr, value in v.items():
                leaf = (*path, "DICOM", attr)
                out[leaf] = value
        elif key == "DICOMVRs" and isinstance(v, Mapping):
            for tag, vr in v.items():
                leaf = (*path, "DICOMVRs", tag)
                out[leaf] = vr
        elif children is not None and key == children and isinstance(v, Mapping):
            for iuid, inst in v.items():
                _flatten_object(out, (*path, children, iuid), inst, children=None)
        else:
            leaf = (*path, key)
            out[leaf] = v  # frames, transfer syntax...: opaque leaves


def strictly_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``"1"`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


_MISSING = object()


def changed_paths(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[Path]:
    """Every leaf path whose value differs between two documents (or exists in one only)."""
    a, b = flatten(before), flatten(after)
    return {p for p in a.keys() | b.keys() if not strictly_equal(a.get(p, _MISSING), b.get(p, _MISSING))}


def outside_named(named: Named, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether ``after`` changes something (relative to ``before``) that the update does not name."""
    return any(not named.covers(p) for p in changed_paths(before, after))


def shows(named: Named, metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` holds exactly every value the update sets and none of the keys it removes."""
    leaves = flatten(metadata)
    for path, value in named.sets.items():
        if path not in leaves or not strictly_equal(leaves[path], value):
            return False
    if any(path in leaves for path in named.removes):
        return False
    return not any(p[: len(prefix)] == prefix for prefix in named.gone for p in leaves)


_DATE_TIME = re.compile(r"[0-9][0-9 .:+-]*")


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _canonical(value: Any) -> Any:
    """A value as any plausible normalising store would leave it: a generous equivalence."""
    if isinstance(value, (list, tuple)):
        items = [_canonical(v) for v in value]
        return items[0] if len(items) == 1 else tuple(items)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), repr(_canonical(v))) for k, v in value.items()))
    if isinstance(value, str):
        text = value.strip(" \x00\t\r\n")
        if "\\" in text:  # DICOM's multi-value separator: the same values as a list
            return _canonical(text.split("\\"))
        number = _number(text)
        if number is None and _DATE_TIME.fullmatch(text):  # 2020-01-31 / 20200131, 12:30 / 1230
            text = re.sub(r"[ .:+-]", "", text)
            number = _number(text)
        if number is not None:
            return number
        text = text.rstrip("^=").casefold()  # person names: empty trailing components
        return text or None
    return value


def could_be_stored_as(sent: Any, stored: Any) -> bool:
    """Whether a service that normalises what it stores could turn ``sent`` into ``stored``.

    Our choice, deliberately generous (only used to rule a version *out*): the
    same after trimming spaces and NULs, ignoring case, empty trailing
    person-name components, date/time separators, a one-element list for a
    single value, backslash-separated values for a list, numbers written
    another way, and empty for absent.
    """
    return bool(_canonical(sent) == _canonical(stored))


def plausibly_shows(named: Named, metadata: Mapping[str, Any]) -> bool:
    """:func:`shows`, up to :func:`could_be_stored_as`: every set value, and no removed key."""
    leaves = flatten(metadata)
    for path, value in named.sets.items():
        if not could_be_stored_as(value, leaves.get(path)):
            return False
    return not any(path in leaves for path in named.removes)


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two documents hold the same patient, study, series and instance content."""
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(strictly_equal(fa[p], fb[p]) for p in fa)
