"""UpdateBuilder: the documents it builds, and the rules it enforces before any quota is spent."""

from __future__ import annotations

import json

import pytest

from async_hi import MAX_BLOB_BYTES, InvalidUpdateError, MetadataUpdate, UpdateBuilder

D, ISET = "a" * 32, "b" * 32
S, S2, SOP = "1.2.3.4", "1.2.3.5", "1.2.3.4.1"


def test_levels_private_tags_and_removals_build_one_document_each() -> None:
    u = (
        UpdateBuilder(D, ISET, force=True)
        .patient(PatientName="DOE^JANE")
        .study(StudyDescription="CHEST")
        .series(S, SeriesDescription="AX")
        .instance(S, SOP, {"00091001": "vendor"}, vrs={"00091001": "LO"}, InstanceNumber="3")
        .remove_study("AccessionNumber")
        .remove_series(S2)
        .remove_instance(S, "1.2.3.4.9")
        .remove_instance_attributes(S, SOP, "ImageComments")
        .build()
    )
    upd = json.loads(u.blob("updatable") or b"")
    rem = json.loads(u.blob("removable") or b"")
    assert upd == {
        "SchemaVersion": 1.1,
        "Patient": {"DICOM": {"PatientName": "DOE^JANE"}},
        "Study": {
            "DICOM": {"StudyDescription": "CHEST"},
            "Series": {
                S: {
                    "DICOM": {"SeriesDescription": "AX"},
                    "Instances": {
                        SOP: {
                            "DICOM": {"00091001": "vendor", "InstanceNumber": "3"},
                            "DICOMVRs": {"00091001": "LO"},
                        }
                    },
                }
            },
        },
    }
    assert rem["Study"]["DICOM"] == {"AccessionNumber": ""}
    assert rem["Study"]["Series"][S2] == {}
    assert rem["Study"]["Series"][S]["Instances"]["1.2.3.4.9"] == {}
    assert rem["Study"]["Series"][S]["Instances"][SOP] == {"DICOM": {"ImageComments": ""}}
    # the payload carries raw JSON bytes: botocore base64-encodes them once
    payload = u.payload()["DICOMUpdates"]
    assert payload["updatableAttributes"] == u.blob("updatable")
    assert payload["updatableAttributes"].startswith(b"{")


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda b: b.patient(StudyDescription="x"), "belongs at Study level"),
        (lambda b: b.study(NotAKeyword="x"), "(11 characters) is not a DICOM keyword"),
        (lambda b: b.study(StudyInstanceUID="1.2"), "StudyInstanceUID needs force=true"),
        (lambda b: b.instance(S, SOP, {"00091001": "v"}, vrs={"00091001": "LO"}), "needs force=true"),
        (lambda b: b.instance(S, SOP, {"00091001": "v"}).force(), "needs its VR in DICOMVRs"),
        (lambda b: b.series(S, {"00091001": "v"}).force(), "only allowed at instance level"),
        (lambda b: b.instance(S, SOP, Rows=1, Checksum=3), "Checksum can never be updated"),
        (lambda b: b, "holds no attribute"),
    ],
)
def test_rules_are_checked_before_sending_and_values_never_echoed(build: object, needle: str) -> None:
    builder = UpdateBuilder(D, ISET)
    with pytest.raises(InvalidUpdateError) as info:
        build(builder).build()  # type: ignore[operator]
    assert needle in str(info.value)
    assert "DOE" not in str(info.value)


def test_size_limit_is_checked_on_the_json_built_once() -> None:
    big = "x" * (MAX_BLOB_BYTES + 1)
    with pytest.raises(InvalidUpdateError, match=f"more than {MAX_BLOB_BYTES}"):
        UpdateBuilder(D, ISET).study(StudyDescription=big).build()


def test_an_attribute_given_twice_is_refused() -> None:
    with pytest.raises(InvalidUpdateError, match="StudyDescription given twice"):
        UpdateBuilder(D, ISET).study({"StudyDescription": "a"}, StudyDescription="b")


def test_revert_convenience() -> None:
    r = MetadataUpdate.revert(D, ISET, 1, latest_version_id="3")
    assert r.is_revert
    assert r.payload() == {"revertToVersionId": "1"}
    assert r.latest_version_id == "3"
    with pytest.raises(InvalidUpdateError, match="decimal"):
        MetadataUpdate.revert(D, ISET, "one")


def test_ids_are_checked() -> None:
    with pytest.raises(InvalidUpdateError, match="image_set_id must be 32 characters"):
        UpdateBuilder(D, "short").study(StudyDescription="x").build()
