"""Coalescing: the merged request has exactly the effect of the requests in order."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from async_hi._coalesce import merge_updates
from async_hi._updates import InvalidUpdateError, MetadataUpdate
from async_hi.document import apply_update, check_document
from async_hi.emulator._seed import synthetic_metadata

DS = "d" * 32
IS = "a" * 32
META = synthetic_metadata(random.Random(7), series=2, instances=2)
SERIES = list(META["Study"]["Series"])
INSTANCES = [(s, i) for s in SERIES for i in META["Study"]["Series"][s]["Instances"]]

# attributes per place: some present in the synthetic metadata, some absent
PATIENT_KEYS = ["PatientName", "PatientSex", "PatientBirthDate", "PatientWeight"]
STUDY_KEYS = ["StudyDescription", "AccessionNumber", "StudyDate", "PatientAge"]
SERIES_KEYS = ["SeriesDescription", "BodyPartExamined", "ProtocolName"]
INSTANCE_KEYS = ["InstanceNumber", "ImageComments", "AcquisitionDate"]
VALUES = st.sampled_from(["A", "B", "C", ""])


def upd(
    updatable: dict[str, Any] | None = None, removable: dict[str, Any] | None = None, **kw: Any
) -> MetadataUpdate:
    return MetadataUpdate(datastore_id=DS, image_set_id=IS, updatable=updatable, removable=removable, **kw)


@st.composite
def documents(draw: st.DrawFn, *, removable: bool) -> dict[str, Any] | None:
    doc: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        place = draw(
            st.sampled_from(["patient", "study", "series", "instance", "whole-series", "whole-instance"])
        )
        if place == "patient":
            doc.setdefault("Patient", {}).setdefault("DICOM", {})[draw(st.sampled_from(PATIENT_KEYS))] = draw(
                VALUES
            )
        elif place == "study":
            doc.setdefault("Study", {}).setdefault("DICOM", {})[draw(st.sampled_from(STUDY_KEYS))] = draw(
                VALUES
            )
        elif place == "series":
            s = draw(st.sampled_from(SERIES))
            node = doc.setdefault("Study", {}).setdefault("Series", {}).setdefault(s, {})
            node.setdefault("DICOM", {})[draw(st.sampled_from(SERIES_KEYS))] = draw(VALUES)
        elif place == "instance":
            s, i = draw(st.sampled_from(INSTANCES))
            series = doc.setdefault("Study", {}).setdefault("Series", {}).setdefault(s, {})
            node = series.setdefault("Instances", {}).setdefault(i, {})
            node.setdefault("DICOM", {})[draw(st.sampled_from(INSTANCE_KEYS))] = draw(VALUES)
        elif removable and place == "whole-series" and draw(st.integers(0, 3)) == 0:
            doc.setdefault("Study", {}).setdefault("Series", {})[draw(st.sampled_from(SERIES))] = {}
        elif removable and place == "whole-instance" and draw(st.integers(0, 2)) == 0:
            s, i = draw(st.sampled_from(INSTANCES))
            doc.setdefault("Study", {}).setdefault("Series", {}).setdefault(s, {}).setdefault(
                "Instances", {}
            )[i] = {}
    return doc or None


@st.composite
def updates(draw: st.DrawFn) -> MetadataUpdate:
    u = draw(documents(removable=False))
    r = draw(documents(removable=True))
    assume(u is not None or r is not None)
    try:
        return upd(u, r)
    except InvalidUpdateError:
        assume(False)
        raise


def sequential(meta: dict[str, Any], seq: list[MetadataUpdate]) -> dict[str, Any] | None:
    """The metadata after applying each request in order, or None if the service refuses one."""
    for u in seq:
        for kind, doc in (("updatable", u.updatable), ("removable", u.removable)):
            if doc is not None and check_document(doc, kind=kind, metadata=meta):  # type: ignore[arg-type]
                return None
        meta = apply_update(meta, u.updatable, u.removable)
    return meta


def valid_on(meta: dict[str, Any], u: MetadataUpdate) -> bool:
    return not any(
        doc is not None and check_document(doc, kind=kind, metadata=meta)  # type: ignore[arg-type]
        for kind, doc in (("updatable", u.updatable), ("removable", u.removable))
    )


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(st.lists(updates(), min_size=2, max_size=6))
def test_greedy_merge_equals_sequential_application(seq: list[MetadataUpdate]) -> None:
    expected = sequential(META, seq)
    assume(expected is not None)
    # greedy, as the bulk runner does: merge while provable, else start a new call
    calls: list[MetadataUpdate] = [seq[0]]
    for u in seq[1:]:
        merged = merge_updates(calls[-1], u)
        if merged is None:
            calls.append(u)
        else:
            calls[-1] = merged
    meta = META
    for call in calls:
        assert valid_on(meta, call), "a merged call would be refused where the sequence is accepted"
        meta = apply_update(meta, call.updatable, call.removable)
    assert meta == expected


def study(**attrs: str) -> dict[str, Any]:
    return {"Study": {"DICOM": attrs}}


def test_set_then_remove_and_remove_then_set_at_study_level() -> None:
    m = merge_updates(upd(study(StudyDescription="X")), upd(removable=study(StudyDescription="")))
    assert m is not None
    assert m.updatable is None
    assert m.removable == study(StudyDescription="")
    m = merge_updates(upd(removable=study(StudyDescription="")), upd(study(StudyDescription="Y")))
    assert m is not None
    assert m.updatable == study(StudyDescription="Y")
    assert m.removable is None
    m = merge_updates(upd(study(StudyDescription="X", AccessionNumber="1")), upd(study(StudyDescription="Y")))
    assert m is not None
    assert m.updatable == study(StudyDescription="Y", AccessionNumber="1")


def test_whole_series_removal_swallows_earlier_changes_below_it() -> None:
    s = SERIES[0]
    first = upd(
        {"Study": {"Series": {s: {"DICOM": {"SeriesDescription": "X"}}}, "DICOM": {"StudyDate": "20200101"}}}
    )
    second = upd(removable={"Study": {"Series": {s: {}}}})
    m = merge_updates(first, second)
    assert m is not None
    assert m.updatable == {"Study": {"DICOM": {"StudyDate": "20200101"}}}
    assert m.removable == {"Study": {"Series": {s: {}}}}
    assert apply_update(META, m.updatable, m.removable) == sequential(META, [first, second])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (upd(study(StudyDescription="X")), upd(revert_to_version_id="1")),
        (upd(revert_to_version_id="1"), upd(study(StudyDescription="X"))),
        (upd(study(StudyDescription="X")), upd(study(StudyDescription="X"), force=True)),
        (upd(study(StudyDescription="X")), upd(study(StudyDescription="X"), latest_version_id="3")),
        (upd(study(StudyDescription="X"), include_study_image_sets=True), upd(study(StudyDescription="Y"))),
        (upd(study(StudyDescription="X")), upd(study(StudyDescription="Y"), primary=True)),
        (
            upd(study(StudyDescription="X")),
            MetadataUpdate(datastore_id=DS, image_set_id="b" * 32, updatable=study(StudyDescription="Y")),
        ),
        (upd(study(StudyInstanceUID="1.2.3"), force=True), upd(study(StudyDescription="Y"), force=True)),
        (upd(study(StudyDescription="X")), upd({"Study": {"DICOM": {"00081030": "Y"}}})),
        (
            upd(removable={"Study": {"Series": {SERIES[0]: {}}}}),
            upd({"Study": {"Series": {SERIES[0]: {"DICOM": {"SeriesDescription": "X"}}}}}),
        ),
        (
            upd(removable={"Study": {"Series": {SERIES[0]: {}}}}),
            upd(removable={"Study": {"Series": {SERIES[0]: {}}}}),
        ),
        (
            upd(removable={"Study": {"Series": {INSTANCES[0][0]: {"Instances": {INSTANCES[0][1]: {}}}}}}),
            upd(
                {
                    "Study": {
                        "Series": {
                            INSTANCES[0][0]: {
                                "Instances": {INSTANCES[0][1]: {"DICOM": {"ImageComments": "X"}}}
                            }
                        }
                    }
                }
            ),
        ),
        (
            upd(
                removable={
                    "Study": {
                        "Series": {
                            INSTANCES[0][0]: {
                                "Instances": {INSTANCES[0][1]: {"DICOM": {"ImageComments": ""}}}
                            }
                        }
                    }
                }
            ),
            upd(
                {
                    "Study": {
                        "Series": {
                            INSTANCES[0][0]: {
                                "Instances": {INSTANCES[0][1]: {"DICOM": {"ImageComments": "X"}}}
                            }
                        }
                    }
                }
            ),
        ),
        (
            upd(
                {
                    "Study": {
                        "Series": {
                            INSTANCES[0][0]: {
                                "Instances": {
                                    INSTANCES[0][1]: {
                                        "DICOM": {"00091001": "X"},
                                        "DICOMVRs": {"00091001": "LO"},
                                    }
                                }
                            }
                        }
                    }
                },
                force=True,
            ),
            upd(study(StudyDescription="Y"), force=True),
        ),
        (upd(study(StudyDescription="X" * 20000)), upd(study(AccessionNumber="Y" * 20000))),
    ],
    ids=[
        "revert-second",
        "revert-first",
        "force-differs",
        "second-pins-version",
        "include-study",
        "primary-differs",
        "other-image-set",
        "uid-change",
        "hex-tag",
        "set-in-removed-series",
        "series-removed-twice",
        "set-in-removed-instance",
        "instance-remove-then-set",
        "private-tag",
        "too-big",
    ],
)
def test_refused_merges(first: MetadataUpdate, second: MetadataUpdate) -> None:
    assert merge_updates(first, second) is None


def test_merge_keeps_first_pinned_version_and_schema_version() -> None:
    first = upd({"SchemaVersion": 1.1, **study(StudyDescription="X")}, latest_version_id="5")
    m = merge_updates(first, upd(study(AccessionNumber="Y")))
    assert m is not None
    assert m.latest_version_id == "5"
    assert m.updatable == {"SchemaVersion": 1.1, **study(StudyDescription="X", AccessionNumber="Y")}
