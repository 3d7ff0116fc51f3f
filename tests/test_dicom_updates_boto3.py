"""Metadata updates on imported real studies, through boto3, as healthimaging-semantics.md says.

Imported image sets are primary: patient- and series-level elements cannot be
changed, UIDs not even with force; study-level elements can (across the study
with includeStudyImageSets); instance-level private tags need force and their
VR; an instance can be removed.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from async_hi.emulator import EmulatorThread

DATA = Path(pydicom.data.data_manager.DATA_ROOT) / "test_files"
#: one study of two series (2 and 5 instances), and a CT with GE private groups
STUDY = DATA / "dicomdirtests" / "98892001"
CT_SMALL = DATA / "CT_small.dcm"


@dataclass
class Imported:
    emu: EmulatorThread
    client: Any
    datastore_id: str
    #: SeriesInstanceUID -> image set id
    by_series: dict[str, str]

    def metadata(self, isid: str, version: str | None = None) -> dict[str, Any]:
        kwargs = {"versionId": version} if version else {}
        r = self.client.get_image_set_metadata(datastoreId=self.datastore_id, imageSetId=isid, **kwargs)
        doc: dict[str, Any] = json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))
        return doc

    def update(
        self,
        isid: str,
        *,
        updatable: dict[str, Any] | None = None,
        removable: dict[str, Any] | None = None,
        version: str = "1",
        **params: Any,
    ) -> dict[str, Any]:
        dicom = {}
        if updatable is not None:
            dicom["updatableAttributes"] = json.dumps({"SchemaVersion": 1.1, **updatable}).encode()
        if removable is not None:
            dicom["removableAttributes"] = json.dumps({"SchemaVersion": 1.1, **removable}).encode()
        r: dict[str, Any] = self.client.update_image_set_metadata(
            datastoreId=self.datastore_id,
            imageSetId=isid,
            latestVersionId=version,
            updateImageSetMetadataUpdates={"DICOMUpdates": dicom},
            **params,
        )
        return r

    def wait_active(self, isid: str) -> dict[str, Any]:
        for _ in range(300):
            r: dict[str, Any] = self.client.get_image_set(datastoreId=self.datastore_id, imageSetId=isid)
            if r["imageSetState"] == "ACTIVE":
                return r
            time.sleep(0.01)
        raise AssertionError("image set stayed LOCKED")

    def refused(self, isid: str, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as info:
            self.update(isid, **kwargs)
        err = info.value.response
        assert err["Error"]["Code"] == "ValidationException"
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        # a refused write changes nothing
        r = self.client.get_image_set(datastoreId=self.datastore_id, imageSetId=isid)
        assert (r["versionId"], r["imageSetState"]) == (kwargs.get("version", "1"), "ACTIVE")
        message: str = err["Error"]["Message"]
        return message


def _import(emu: EmulatorThread, *, primary: bool = True) -> Imported:
    report = emu.call(lambda: emu.emulator.import_dicom([STUDY, CT_SMALL], primary=primary))
    assert [s.primary for s in report.image_sets] == [primary] * 3
    client = boto3.client(
        "medical-imaging",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
        **emu.client_kwargs(),
    )
    imported = Imported(emu, client, report.datastore_id, {})
    for isid in report.image_set_ids:
        (suid,) = imported.metadata(isid)["Study"]["Series"]
        imported.by_series[suid] = isid
    return imported


@pytest.fixture
def imported(emulator_thread: EmulatorThread) -> Imported:
    return _import(emulator_thread)


def _series(imported: Imported, isid: str) -> tuple[str, dict[str, Any]]:
    ((suid, series),) = imported.metadata(isid)["Study"]["Series"].items()
    return suid, series


def _ct(imported: Imported) -> str:
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    return imported.by_series[ds.SeriesInstanceUID]


def test_patient_level_update_is_refused_on_primary_and_accepted_on_non_primary(
    imported: Imported, emulator_thread: EmulatorThread
) -> None:
    isid = _ct(imported)
    before = imported.metadata(isid)
    change = {"Patient": {"DICOM": {"PatientName": "RENAMED^PATIENT"}}}
    message = imported.refused(isid, updatable=change)
    assert "PatientName" in message
    assert "primary" in message
    assert "RENAMED" not in message
    assert imported.metadata(isid) == before

    other = _import(emulator_thread, primary=False)
    isid2 = _ct(other)
    assert other.update(isid2, updatable=change)["latestVersionId"] == "2"
    other.wait_active(isid2)
    assert other.metadata(isid2)["Patient"]["DICOM"]["PatientName"] == "RENAMED^PATIENT"


def test_series_level_update_is_refused_on_primary(imported: Imported) -> None:
    isid = _ct(imported)
    suid, series = _series(imported, isid)
    assert series["DICOM"]["Manufacturer"] == "GE MEDICAL SYSTEMS"
    change = {"Study": {"Series": {suid: {"DICOM": {"Manufacturer": "OTHER"}}}}}
    assert "Manufacturer" in imported.refused(isid, updatable=change)
    assert "Manufacturer" in imported.refused(isid, updatable=change, force=True)


def test_study_level_update_applies_and_reaches_the_whole_study(imported: Imported) -> None:
    study_sets = [isid for isid in imported.by_series.values() if isid != _ct(imported)]
    first, second = study_sets
    change = {"Study": {"DICOM": {"StudyDescription": "REVIEWED"}}}
    r = imported.update(first, updatable=change, includeStudyImageSets=True)
    assert (r["latestVersionId"], r["imageSetState"], r["imageSetWorkflowStatus"]) == (
        "2",
        "LOCKED",
        "UPDATING",
    )
    for isid in (first, second):
        final = imported.wait_active(isid)
        assert (final["versionId"], final["imageSetWorkflowStatus"]) == ("2", "UPDATED")
        assert imported.metadata(isid)["Study"]["DICOM"]["StudyDescription"] == "REVIEWED"
        assert imported.metadata(isid, "1")["Study"]["DICOM"].get("StudyDescription") != "REVIEWED"
    # the CT of another study is untouched
    ct = imported.client.get_image_set(datastoreId=imported.datastore_id, imageSetId=_ct(imported))
    assert ct["versionId"] == "1"


def test_private_tag_needs_force_and_its_vr_only_when_new(imported: Imported) -> None:
    isid = _ct(imported)
    suid, series = _series(imported, isid)
    ((iuid, inst),) = series["Instances"].items()
    assert (inst["DICOM"]["00091002"], inst["DICOMVRs"]["00091002"]) == ("CT01", "SH")
    instance = {"DICOM": {"00091002": "CT02"}, "DICOMVRs": {"00091002": "SH"}}
    change = {"Study": {"Series": {suid: {"Instances": {iuid: instance}}}}}
    assert "00091002 needs force" in imported.refused(isid, updatable=change)
    new_tag = {"Study": {"Series": {suid: {"Instances": {iuid: {"DICOM": {"00091099": "NEW"}}}}}}}
    assert "00091099 is new: it needs its VR in DICOMVRs" in imported.refused(
        isid, updatable=new_tag, force=True
    )

    assert imported.update(isid, updatable=change, force=True)["latestVersionId"] == "2"
    final = imported.wait_active(isid)
    assert final["overrides"] == {"forced": True}
    after = imported.metadata(isid)["Study"]["Series"][suid]["Instances"][iuid]
    assert (after["DICOM"]["00091002"], after["DICOMVRs"]["00091002"]) == ("CT02", "SH")

    # E3 (aws/aws-cli update-image-set-metadata.rst, example 6): an existing private tag with force
    # and no DICOMVRs: its VR is known
    no_vr = {"Study": {"Series": {suid: {"Instances": {iuid: {"DICOM": {"00091002": "CT03"}}}}}}}
    assert imported.update(isid, updatable=no_vr, force=True, version="2")["latestVersionId"] == "3"
    imported.wait_active(isid)
    after = imported.metadata(isid)["Study"]["Series"][suid]["Instances"][iuid]
    assert (after["DICOM"]["00091002"], after["DICOMVRs"]["00091002"]) == ("CT03", "SH")


def test_uids_cannot_change_on_primary_even_with_force(imported: Imported) -> None:
    isid = _ct(imported)
    suid, series = _series(imported, isid)
    (iuid,) = series["Instances"]
    change = {"Study": {"Series": {suid: {"Instances": {iuid: {"DICOM": {"SOPInstanceUID": "1.2.3"}}}}}}}
    assert "even with force" in imported.refused(isid, updatable=change, force=True)


def test_removing_an_instance(imported: Imported) -> None:
    isid = next(i for i in imported.by_series.values() if len(_series(imported, i)[1]["Instances"]) == 5)
    suid, series = _series(imported, isid)
    iuid = sorted(series["Instances"])[0]
    r = imported.update(isid, removable={"Study": {"Series": {suid: {"Instances": {iuid: {}}}}}})
    assert r["latestVersionId"] == "2"
    imported.wait_active(isid)
    now = imported.metadata(isid)["Study"]["Series"][suid]["Instances"]
    assert iuid not in now
    assert set(now) == set(series["Instances"]) - {iuid}
    assert iuid in imported.metadata(isid, "1")["Study"]["Series"][suid]["Instances"]


def test_the_same_update_runs_on_synthetic_and_imported_studies(populated_emulator_thread: Any) -> None:
    p = populated_emulator_thread
    assert len(p.image_set_ids) == (3 if p.source == "synthetic" else 49)
    client = boto3.client("medical-imaging", config=Config(inject_host_prefix=False), **p.emu.client_kwargs())
    view = Imported(p.emu, client, p.datastore_id, {})
    isid = p.image_set_ids[-1]
    refused = {"Patient": {"DICOM": {"PatientSex": "O"}}}
    assert "primary" in view.refused(isid, updatable=refused)
    view.update(isid, updatable={"Study": {"DICOM": {"StudyDescription": "BOTH"}}})
    assert view.wait_active(isid)["imageSetWorkflowStatus"] == "UPDATED"
    assert view.metadata(isid)["Study"]["DICOM"]["StudyDescription"] == "BOTH"


def test_imported_studies_are_primary_image_sets_for_boto3(imported_emulator_thread: Any) -> None:
    p = imported_emulator_thread
    client = boto3.client("medical-imaging", config=Config(inject_host_prefix=False), **p.emu.client_kwargs())
    for isid in p.image_set_ids:
        r = client.get_image_set(datastoreId=p.datastore_id, imageSetId=isid)
        assert (r["isPrimary"], r["versionId"], r["imageSetWorkflowStatus"]) == (True, "1", "CREATED")
