"""Evidence from real use: one test per row E1-E8 of healthimaging-semantics.md, on the emulator's defaults.

Each row is behaviour seen in code or recordings written against the *real*
service; each test cites its source and, where the evidence is a client's
behaviour, drives the emulator with that client (boto3, the AWS CLI) the way
the source does. All sources were read in the public repositories named
(aws/aws-cli, aws-samples/aws-healthimaging-samples, awsdocs/aws-doc-sdk-examples,
DIAGNijmegen/rse-grand-challenge) and the AWS HealthImaging developer guide.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from async_hi import HealthImagingClient, RetryPolicy, UpdateBuilder
from async_hi.emulator import EmulatorThread, pydicom_test_data_paths
from tests.test_emulator_awscli import aws, out

STALE = "Requested version(s) of ImageSet(s) is not the latest."
STUDY_X = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "X"}}}
NOT_CONSISTENT = "Requested ImageSet metadata is not consistent yet. Please retry after a few seconds."


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    """The emulator with its defaults, except a LOCKED window long enough to observe (0.5 s) and no quotas."""
    with EmulatorThread(lock_seconds=0.5, quotas=None) as thread:
        yield thread


def boto3_client(emu: EmulatorThread) -> BaseClient:
    return boto3.client(
        "medical-imaging",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
        **emu.client_kwargs(),
    )


def blob(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def metadata(c: BaseClient, d: str, i: str, version: str | None = None) -> dict[str, Any]:
    kwargs = {"versionId": version} if version else {}
    r = c.get_image_set_metadata(datastoreId=d, imageSetId=i, **kwargs)
    doc: dict[str, Any] = json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))
    return doc


def wait_active(c: BaseClient, d: str, i: str) -> dict[str, Any]:
    for _ in range(400):
        r: dict[str, Any] = c.get_image_set(datastoreId=d, imageSetId=i)
        if r["imageSetState"] == "ACTIVE":
            return r
        time.sleep(0.01)
    raise AssertionError("the image set stayed LOCKED")


def seeded(emu: EmulatorThread, **kwargs: Any) -> tuple[str, str]:
    s = emu.call(lambda: emu.emulator.seed(1, **kwargs))
    return s.datastore_id, s.image_set_ids[0]


def test_E1_a_stale_version_is_404_not_the_latest_and_production_code_takes_it_as_already_updated(
    emu: EmulatorThread,
) -> None:
    # Source: DIAGNijmegen/rse-grand-challenge app/grandchallenge/cases/tasks.py,
    # revert_image_set_to_initial_version: update_image_set_metadata(..., latestVersionId=str(version_id),
    # updateImageSetMetadataUpdates={"revertToVersionId": "1"}, force=False); on ClientError with
    # Code == "ResourceNotFoundException" and Message == "Requested version(s) of ImageSet(s) is not
    # the latest." it passes ("already updated"). Driven here with boto3 exactly so.
    c = boto3_client(emu)
    d, i = seeded(emu)
    c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob(STUDY_X)}},
    )
    wait_active(c, d, i)

    def revert_image_set_to_initial_version(version_id: int) -> str:
        try:
            c.update_image_set_metadata(
                datastoreId=d,
                imageSetId=i,
                latestVersionId=str(version_id),
                updateImageSetMetadataUpdates={"revertToVersionId": "1"},
                force=False,
            )
        except ClientError as error:
            if (
                error.response["Error"]["Code"] == "ResourceNotFoundException"
                and error.response["Error"]["Message"] == STALE
            ):
                return "already updated"
            raise
        return "reverted"

    assert revert_image_set_to_initial_version(1) == "already updated"  # version 2 is the latest
    with pytest.raises(c.exceptions.ResourceNotFoundException) as info:  # the modeled class too
        c.update_image_set_metadata(
            datastoreId=d,
            imageSetId=i,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"revertToVersionId": "1"},
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert [
        v["versionId"]
        for v in c.list_image_set_versions(datastoreId=d, imageSetId=i)["imageSetPropertiesList"]
    ] == ["2", "1"]  # the refused write changed nothing
    assert revert_image_set_to_initial_version(2) == "reverted"


def test_E2_metadata_is_not_consistent_yet_right_after_an_update_and_callers_retry(
    emu: EmulatorThread,
) -> None:
    # Sources: DIAGNijmegen/rse-grand-challenge app/grandchallenge/cases/tasks.py,
    # handle_health_imaging_import_job_event: a ConflictException whose Message contains "Requested
    # ImageSet metadata is not consistent yet. Please retry after a few seconds." raises RetryStep;
    # aws-samples/aws-healthimaging-samples imaging-viewer-ui/src/components/Metadata/Metadata.jsx:
    # a 409 from GetImageSetMetadata -> "Try retrieving metadata in a few moments after the
    # operation is complete."
    c = boto3_client(emu)
    d, i = seeded(emu)
    c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob(STUDY_X)}},
    )
    for version in (None, "2"):  # the latest, and the version being applied
        with pytest.raises(c.exceptions.ConflictException) as info:
            metadata(c, d, i, version)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
        assert NOT_CONSISTENT in info.value.response["Error"]["Message"]
    # the caller retries after a few moments: the new content
    for _ in range(200):
        try:
            doc = metadata(c, d, i)
            break
        except c.exceptions.ConflictException:
            time.sleep(0.02)
    else:
        raise AssertionError("still not consistent")
    assert doc["Study"]["DICOM"]["StudyDescription"] == "X"


def test_E2_our_client_retries_the_409_too(emu: EmulatorThread) -> None:
    d, i = seeded(emu)

    async def run() -> dict[str, Any]:
        async with HealthImagingClient(
            endpoint_url=emu.endpoint_url,
            region=emu.emulator.region,
            aws_access_key_id=emu.emulator.access_key_id,
            aws_secret_access_key=emu.emulator.secret_access_key,
            retry=RetryPolicy(base_delay=0.05, max_delay=0.2),
        ) as hi:
            await hi.update_image_set_metadata(UpdateBuilder(d, i).study(StudyDescription="Y").build())
            doc = await hi.get_image_set_metadata(d, i)  # right away: 409s, retried
            assert hi.stats()["GetImageSetMetadata"].conflicts >= 1
            return doc

    assert anyio.run(run)["Study"]["DICOM"]["StudyDescription"] == "Y"


def test_E3_an_existing_private_tag_is_updated_with_force_and_no_dicomvrs(
    emu: EmulatorThread, tmp_path: Path
) -> None:
    # Source: aws/aws-cli awscli/examples/medical-imaging/update-image-set-metadata.rst, example 6
    # ("To update a private DICOM data element to an instance"): --force, an instance-level private
    # tag in DICOM and no DICOMVRs. Driven here with the AWS CLI as written (file:// updates).
    ct = next(p for p in pydicom_test_data_paths() if p.endswith("CT_small.dcm"))
    report = emu.call(lambda: emu.emulator.import_dicom([ct]))
    d, (i,) = report.datastore_id, report.image_set_ids
    c = boto3_client(emu)
    ((suid, series),) = metadata(c, d, i)["Study"]["Series"].items()
    ((iuid, inst),) = series["Instances"].items()
    assert "00091002" in inst["DICOM"]  # the private tag exists (with its VR in DICOMVRs)
    updates = tmp_path / "metadata-updates.json"
    doc = {
        "SchemaVersion": 1.1,
        "Study": {"Series": {suid: {"Instances": {iuid: {"DICOM": {"00091002": "GE_GENESIS_DD"}}}}}},
    }
    updates.write_text(json.dumps({"DICOMUpdates": {"updatableAttributes": json.dumps(doc)}}))
    ids = ["--datastore-id", d, "--image-set-id", i, "--latest-version-id", "1"]
    r = out(
        aws(
            emu,
            "update-image-set-metadata",
            *ids,
            "--force",
            "--update-image-set-metadata-updates",
            f"file://{updates}",
        )
    )
    assert (r["latestVersionId"], r["imageSetState"]) == ("2", "LOCKED")
    wait_active(c, d, i)
    after = metadata(c, d, i)["Study"]["Series"][suid]["Instances"][iuid]
    assert after["DICOM"]["00091002"] == "GE_GENESIS_DD"
    assert after["DICOMVRs"]["00091002"] == inst["DICOMVRs"]["00091002"]  # its VR is kept


def test_E4_a_removal_names_the_stored_value(emu: EmulatorThread) -> None:
    # Source: awsdocs/aws-doc-sdk-examples, the UpdateImageSetMetadata examples (Python, boto3, in the
    # AWS code library page python_3_medical-imaging_code_examples; JavaScript,
    # javascriptv3/example_code/medical-imaging): "# Attribute key and value must match the existing
    # attribute." above removableAttributes {"SchemaVersion": 1.1, "Study": {"DICOM":
    # {"StudyDescription": "CT CHEST"}}}. Driven here with boto3 as the Python example does (the JSON
    # text as the blob). Whether a mismatch is a 400 or an UPDATE_FAILED version is not public: the
    # emulator's default (our choice) is the 400.
    c = boto3_client(emu)
    d, i = seeded(emu)
    set_chest = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "CT CHEST"}}}
    c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(set_chest)}},
    )
    wait_active(c, d, i)
    other = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "CT HEAD"}}}
    with pytest.raises(c.exceptions.ValidationException) as info:
        c.update_image_set_metadata(
            datastoreId=d,
            imageSetId=i,
            latestVersionId="2",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"removableAttributes": json.dumps(other)}},
        )
    assert "does not match the stored value" in info.value.response["Error"]["Message"]
    assert "CT HEAD" not in info.value.response["Error"]["Message"]
    assert c.get_image_set(datastoreId=d, imageSetId=i)["versionId"] == "2"
    # the example's own removal: key and value match
    r = c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="2",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"removableAttributes": json.dumps(set_chest)}},
    )
    assert r["latestVersionId"] == "3"
    wait_active(c, d, i)
    assert "StudyDescription" not in metadata(c, d, i)["Study"]["DICOM"]


def test_E5_a_value_that_does_not_fit_its_vr_is_refused_unless_force(emu: EmulatorThread) -> None:
    # Source: AWS HealthImaging developer guide, "DICOM metadata constraints"
    # (docs.aws.amazon.com/healthimaging/latest/devguide/dicom-metadata-constraints.html): "Cannot
    # update attributes with values that are not compatible with the attribute VR type unless the
    # force flag is set." A DA that is not a date, with boto3.
    c = boto3_client(emu)
    d, i = seeded(emu)
    bad_date = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDate": "2024-13-45"}}}
    updates = {"DICOMUpdates": {"updatableAttributes": blob(bad_date)}}
    with pytest.raises(c.exceptions.ValidationException) as info:
        c.update_image_set_metadata(
            datastoreId=d, imageSetId=i, latestVersionId="1", updateImageSetMetadataUpdates=updates
        )
    assert "StudyDate does not fit its VR DA" in info.value.response["Error"]["Message"]
    assert "2024-13-45" not in info.value.response["Error"]["Message"]  # no values echoed
    r = c.update_image_set_metadata(
        datastoreId=d, imageSetId=i, latestVersionId="1", updateImageSetMetadataUpdates=updates, force=True
    )
    assert r["latestVersionId"] == "2"
    assert wait_active(c, d, i)["overrides"] == {"forced": True}


def test_E6_imported_metadata_has_the_real_documents_shapes(emu: EmulatorThread) -> None:
    # Sources: aws-samples/aws-healthimaging-samples ahi-batch-image-frame-retrieve/test/usdoppler.json
    # (a real GetImageSetMetadata document: "SpecificCharacterSet": ["ISO-IR 100"], "ImageType":
    # [...], "FileMetaInformationVersion": "AAE=", "TransferSyntaxUID", private UN values such as
    # "7FDF1001": "AQA=" with their VR in DICOMVRs, "PixelData": null) and dicomweb-proxy/
    # InstanceDICOMizer.py (rebuilds DICOM from such documents: binary VRs base64-decoded, lists read
    # as multi-values). pydicom's CT_small.dcm, imported, then fetched with boto3.
    ct = next(p for p in pydicom_test_data_paths() if p.endswith("CT_small.dcm"))
    report = emu.call(lambda: emu.emulator.import_dicom([ct]))
    c = boto3_client(emu)
    doc = metadata(c, report.datastore_id, report.image_set_ids[0])
    ((inst,),) = [list(s["Instances"].values()) for s in doc["Study"]["Series"].values()]
    dicom = inst["DICOM"]
    assert doc["SchemaVersion"] == "1.1"
    assert dicom["SpecificCharacterSet"] == ["ISO_IR 100"]  # VM 1-n: a list with one value
    assert isinstance(dicom["ImageType"], list)
    assert dicom["FileMetaInformationVersion"] == "AAE="  # file meta kept, OB as base64
    assert dicom["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert dicom["MediaStorageSOPInstanceUID"] == dicom["SOPInstanceUID"]
    assert isinstance(dicom["00431028"], str)  # a private OB value: base64 text
    assert inst["DICOMVRs"]["00431028"] == "OB"
    assert dicom["PixelData"] is None
    assert isinstance(dicom["Rows"], int)  # US: a number
    assert isinstance(dicom["InstanceNumber"], str)  # IS: the digits as written
    frame = inst["ImageFrames"][0]
    assert set(frame) == {
        "ID",
        "PixelDataChecksumFromBaseToFullResolution",
        "MinPixelValue",
        "MaxPixelValue",
        "FrameSizeInBytes",
    }


def test_E7_the_update_answer_is_the_next_version_locked_and_updating(emu: EmulatorThread) -> None:
    # Sources: aws/aws-cli awscli/examples/medical-imaging/update-image-set-metadata.rst, examples 1-7
    # (output: "latestVersionId": "2" for --latest-version-id 1, "imageSetState": "LOCKED",
    # "imageSetWorkflowStatus": "UPDATING", createdAt/updatedAt epoch numbers);
    # aws-samples/aws-healthimaging-samples imaging-viewer-ui/src/components/Metadata/MetadataEditor.jsx
    # (sends the SchemaVersion of the fetched metadata, the string "1.1"). Example 1 with the AWS CLI.
    d, i = seeded(emu)
    doc = {"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "MX^MX"}}}
    ids = ["--datastore-id", d, "--image-set-id", i]
    raw = aws(
        emu,
        "update-image-set-metadata",
        *ids,
        "--latest-version-id",
        "1",
        "--update-image-set-metadata-updates",
        json.dumps({"DICOMUpdates": {"updatableAttributes": json.dumps(doc)}}),
    )
    r = json.loads(raw.stdout)
    assert (r["latestVersionId"], r["imageSetState"], r["imageSetWorkflowStatus"]) == (
        "2",
        "LOCKED",
        "UPDATING",
    )
    assert isinstance(r["createdAt"], (int, float))
    assert r["createdAt"] <= r["updatedAt"]
    assert (r["datastoreId"], r["imageSetId"]) == (d, i)
    # MetadataEditor.jsx: SchemaVersion as the fetched document's string "1.1"
    c = boto3_client(emu)
    wait_active(c, d, i)
    editor = {
        "SchemaVersion": metadata(c, d, i)["SchemaVersion"],
        "Study": {"DICOM": {"StudyDescription": "E"}},
    }
    assert editor["SchemaVersion"] == "1.1"
    r = c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="2",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob(editor)}},
    )
    assert r["latestVersionId"] == "3"


def test_E8_the_version_being_applied_is_listed_at_once_and_a_failed_one_has_a_message(
    emu: EmulatorThread,
) -> None:
    # Sources: aws-samples/aws-healthimaging-samples imaging-viewer-ui/src/components/Metadata/
    # Metadata.jsx (filters v.ImageSetWorkflowStatus !== 'UPDATING' out of the listed versions: the
    # version being applied is listed); aws/aws-cli awscli/examples/medical-imaging/
    # list-image-set-versions.rst (a failed version carries "message"; the member is spelled
    # "ImageSetWorkflowStatus"). With the AWS CLI.
    d, i = seeded(emu)
    c = boto3_client(emu)
    ids = ["--datastore-id", d, "--image-set-id", i]
    c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob(STUDY_X)}},
    )
    listed = out(aws(emu, "list-image-set-versions", *ids))["imageSetPropertiesList"]
    # the AWS CLI may take longer than the 0.5 s window to start: then it is already applied
    assert listed[0]["versionId"] == "2"
    assert listed[0]["ImageSetWorkflowStatus"] in ("UPDATING", "UPDATED")
    wait_active(c, d, i)
    emu.call(lambda: setattr(emu.emulator.image_set(d, i), "fail_next_apply", "INVALID_REQUEST: broken"))
    c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="2",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": blob(STUDY_X)}},
    )
    during = c.list_image_set_versions(datastoreId=d, imageSetId=i)["imageSetPropertiesList"][0]
    assert (during["versionId"], during["ImageSetWorkflowStatus"]) == ("3", "UPDATING")
    wait_active(c, d, i)
    listed = out(aws(emu, "list-image-set-versions", *ids))["imageSetPropertiesList"]
    assert [v["versionId"] for v in listed] == ["3", "2", "1"]
    assert (listed[0]["ImageSetWorkflowStatus"], listed[0]["message"]) == (
        "UPDATE_FAILED",
        "INVALID_REQUEST: broken",
    )
    assert "message" not in listed[1]
