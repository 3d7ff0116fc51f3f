"""Coalescing: two queued updates of one image set as one call, when provably equivalent.

Every call saved is 4 s of the account's update quota at the default rate, so
the bulk runner merges consecutive queued updates of the same image set.
:func:`merge_updates` returns the merged request, or None when it cannot
*prove* that one call has exactly the effect of the two in order.

Why the merge is exact. The service applies a request as "``updatable`` merged
in, then ``removable`` taken out" (:func:`async_hi.document.apply_update`),
attribute by attribute at each place (patient, study, a series, an instance).
For one attribute, the result of any sequence of sets and removes depends on
the *last* operation only: last a set -> present with that value; last a
remove -> absent. So for ``A`` then ``B`` the merged request puts each
attribute in ``updatable`` (with the last value set) when its last operation
is a set, and in ``removable`` when its last operation is a remove; a set
followed by a remove and a remove followed by a set both come out exactly. A
whole series or instance removed (``{}`` in ``removable``) swallows every
operation below it.

Refused (None), because equivalence would depend on things a merge cannot see:

- a revert, ``includeStudyImageSets``, different ``force`` or ``primary``, a
  ``latestVersionId`` on the second request (the caller pinned a version),
  different image sets;
- UID changes (``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``:
  they re-key series and instances, so the second request may name a UID that
  only exists after the first);
- private tags, ``DICOMVRs`` and tags written as 8 hex digits (a tag and its
  keyword are one element to the service but two keys to a merge);
- the second request naming a series or instance the first removes whole (the
  service would refuse the second request on its own);
- an instance-level attribute removed by the first and set by the second
  (removing also drops the element's entry in ``DICOMVRs``, which a set
  cannot restore);
- a removal naming a value (a conditional removal) of an attribute an earlier
  request of the call touches: the service removes only when the value given
  is the one there (E4 of healthimaging-semantics.md), which in sequence is the
  earlier request's and merged the stored one; a removal without a value
  (``""``, filled in by the client when it writes) merges as before;
- a merged document over the 30,000-byte blob limit.

One difference remains by design: when the *first* request would be refused by
the service, the merged call is refused too; the bulk runner then sends the
requests one by one (see ``_bulk``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from async_hi._updates import InvalidUpdateError, MetadataUpdate

__all__ = ["merge_updates"]

_UID_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")

#: a place in the document: ("Patient",), ("Study",), ("Series", s), ("Instance", s, i)
_Place = tuple[str, ...]
#: place -> {attribute: ("set" | "remove", value)}, in first-touch order
_Ops = dict[_Place, dict[str, tuple[str, Any]]]


class _Refuse(Exception):
    """The merge cannot be proven equivalent (internal)."""


def _dicom(node: Any) -> Mapping[str, Any]:
    dicom = node.get("DICOM") if isinstance(node, Mapping) else None
    if dicom is None:
        return {}
    if not isinstance(dicom, Mapping):
        raise _Refuse
    for key in dicom:
        if key in _UID_KEYS or _HEX8.fullmatch(key):
            raise _Refuse
    return dicom


def _walk(doc: Mapping[str, Any] | None) -> list[tuple[_Place, Any]]:
    """Every place the document names, with its node (parents before children)."""
    if doc is None:
        return []
    out: list[tuple[_Place, Any]] = []
    if "Patient" in doc:
        out.append((("Patient",), doc["Patient"]))
    study = doc.get("Study")
    if isinstance(study, Mapping):
        out.append((("Study",), study))
        for suid, series in (study.get("Series") or {}).items():
            out.append((("Series", suid), series))
            if not isinstance(series, Mapping):
                raise _Refuse
            for iuid, inst in (series.get("Instances") or {}).items():
                if not isinstance(inst, Mapping) or inst.get("DICOMVRs"):
                    raise _Refuse
                out.append((("Instance", suid, iuid), inst))
    return out


def _is_whole(place: _Place, node: Any) -> bool:
    return place[0] in ("Series", "Instance") and isinstance(node, Mapping) and not node


def _under(place: _Place, removed: set[_Place]) -> bool:
    if place[0] == "Series":
        return place in removed
    if place[0] == "Instance":
        return ("Series", place[1]) in removed or place in removed
    return False


def _record(ops: _Ops, wholes: set[_Place], update: MetadataUpdate) -> None:
    """Apply one request's operations to the running per-attribute last-operation table."""
    for place, node in _walk(update.updatable):
        if _under(place, wholes):
            raise _Refuse  # names a series/instance already removed: the service would refuse it
        for key, value in _dicom(node).items():
            slot = ops.setdefault(place, {})
            if place[0] == "Instance" and slot.get(key, ("", None))[0] == "remove":
                raise _Refuse  # remove-then-set at instance level loses DICOMVRs: not provable
            slot.pop(key, None)  # keep "last operation" order honest for readers of the table
            slot[key] = ("set", value)
    for place, node in _walk(update.removable):
        if _under(place, wholes):
            raise _Refuse
        if _is_whole(place, node):
            wholes.add(place)
            continue
        for key, value in _dicom(node).items():
            slot = ops.setdefault(place, {})
            if key in slot and value != "":
                # a removal names the value it removes (E4 of healthimaging-semantics.md): in
                # sequence it meets the value an earlier request of the call left, merged it would
                # meet the stored one. Only a removal without a value ("": the client fills in
                # the stored one when it writes) means the same either way.
                raise _Refuse
            slot.pop(key, None)
            slot[key] = ("remove", value)


def _build(ops: _Ops, wholes: set[_Place], kind: str, schema: Any) -> dict[str, Any] | None:
    doc: dict[str, Any] = {}
    for place, slot in ops.items():
        if _under(place, wholes):
            continue  # a whole removal swallows everything below it
        attrs = {k: v for k, (op, v) in slot.items() if op == kind}
        if not attrs:
            continue
        if place[0] == "Patient":
            node = doc.setdefault("Patient", {})
        elif place[0] == "Study":
            node = doc.setdefault("Study", {})
        elif place[0] == "Series":
            node = doc.setdefault("Study", {}).setdefault("Series", {}).setdefault(place[1], {})
        else:
            series = doc.setdefault("Study", {}).setdefault("Series", {}).setdefault(place[1], {})
            node = series.setdefault("Instances", {}).setdefault(place[2], {})
        node.setdefault("DICOM", {}).update(attrs)
    if kind == "remove":
        for place in sorted(wholes):
            if place[0] == "Instance" and ("Series", place[1]) in wholes:
                continue
            series_all = doc.setdefault("Study", {}).setdefault("Series", {})
            if place[0] == "Series":
                series_all[place[1]] = {}
            else:
                series_all.setdefault(place[1], {}).setdefault("Instances", {})[place[2]] = {}
    if not doc:
        return None
    if schema is not None:
        doc = {"SchemaVersion": schema, **doc}
    return doc


def _compatible(first: MetadataUpdate, second: MetadataUpdate) -> bool:
    return (
        first.datastore_id == second.datastore_id
        and first.image_set_id == second.image_set_id
        and not first.is_revert
        and not second.is_revert
        and first.force == second.force
        and first.primary == second.primary
        and not first.include_study_image_sets
        and not second.include_study_image_sets
        and second.latest_version_id is None
    )


def merge_updates(first: MetadataUpdate, second: MetadataUpdate) -> MetadataUpdate | None:
    """One request with exactly the effect of ``first`` then ``second``, or None.

    Args:
        first: the earlier request (its ``latest_version_id`` is kept).
        second: the later request, for the same image set.

    Returns:
        The merged request, or None when equivalence cannot be proven (see the
        module docstring for the rules).
    """
    if not _compatible(first, second):
        return None
    ops: _Ops = {}
    wholes: set[_Place] = set()
    schema = None
    for update in (first, second):
        for doc in (update.updatable, update.removable):
            if doc is not None and "SchemaVersion" in doc:
                schema = doc["SchemaVersion"]
    try:
        _record(ops, wholes, first)
        _record(ops, wholes, second)
    except _Refuse:
        return None
    updatable = _build(ops, wholes, "set", schema)
    removable = _build(ops, wholes, "remove", schema)
    if updatable is None and removable is None:
        return None
    try:
        return MetadataUpdate(
            datastore_id=first.datastore_id,
            image_set_id=first.image_set_id,
            updatable=updatable,
            removable=removable,
            force=first.force,
            latest_version_id=first.latest_version_id,
            primary=first.primary,
        )
    except InvalidUpdateError:
        return None
