"""boto3, unmodified, against the emulator: round trips and modeled errors."""

from __future__ import annotations

import base64
import gzip
import json
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from async_hi.emulator import EmulatorThread


def client(emu: EmulatorThread, **config: Any) -> Any:
    cfg = Config(inject_host_prefix=False, retries={"max_attempts": 1}, **config)
    return boto3.client("medical-imaging", config=cfg, **emu.client_kwargs())


def wait_active(c: Any, d: str, i: str) -> dict[str, Any]:
    for _ in range(200):
        r: dict[str, Any] = c.get_image_set(datastoreId=d, imageSetId=i)
        if r["imageSetState"] == "ACTIVE":
            return r
        time.sleep(0.01)
    raise AssertionError("image set stayed LOCKED")


def metadata(c: Any, d: str, i: str, version: str | None = None) -> dict[str, Any]:
    kwargs = {"versionId": version} if version else {}
    r = c.get_image_set_metadata(datastoreId=d, imageSetId=i, **kwargs)
    assert r["contentEncoding"] == "gzip"
    doc: dict[str, Any] = json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))
    return doc


def study_update(description: str) -> dict[str, Any]:
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": description}}}
    return {"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}}


def test_round_trip_update_get_metadata_versions_revert(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    c = client(emu)

    before = metadata(c, d, i)
    r = c.update_image_set_metadata(
        datastoreId=d, imageSetId=i, latestVersionId="1", updateImageSetMetadataUpdates=study_update("NEW")
    )
    assert r["latestVersionId"] == "2"
    assert r["imageSetState"] == "LOCKED"
    assert r["imageSetWorkflowStatus"] == "UPDATING"

    final = wait_active(c, d, i)
    assert final["versionId"] == "2"
    assert final["imageSetWorkflowStatus"] == "UPDATED"
    after = metadata(c, d, i)
    assert after["Study"]["DICOM"]["StudyDescription"] == "NEW"
    assert metadata(c, d, i, "1") == before  # the old version is unchanged

    r = c.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="2",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )
    assert r["latestVersionId"] == "3"
    wait_active(c, d, i)
    reverted = metadata(c, d, i)
    assert reverted["Study"] == before["Study"]

    versions = c.list_image_set_versions(datastoreId=d, imageSetId=i)["imageSetPropertiesList"]
    assert [v["versionId"] for v in versions] == ["3", "2", "1"]
    # the model's capital-I member survives botocore's parser
    assert versions[0]["ImageSetWorkflowStatus"] == "UPDATED"


def test_list_versions_pages_with_paginator(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    c = client(emu)
    for n in range(1, 6):
        c.update_image_set_metadata(
            datastoreId=d,
            imageSetId=i,
            latestVersionId=str(n),
            updateImageSetMetadataUpdates=study_update(f"D{n}"),
        )
        wait_active(c, d, i)
    pages = list(
        c.get_paginator("list_image_set_versions").paginate(
            datastoreId=d, imageSetId=i, PaginationConfig={"PageSize": 2}
        )
    )
    assert len(pages) == 3
    ids = [v["versionId"] for p in pages for v in p["imageSetPropertiesList"]]
    assert ids == ["6", "5", "4", "3", "2", "1"]


@pytest.mark.parametrize("mode", ["not-found", "conflict"])
def test_modeled_errors_raise_modeled_exceptions(emulator_thread: EmulatorThread, mode: str) -> None:
    emu = emulator_thread
    emu.call(lambda: emu.emulator.reconfigure(stale_version_error=mode))
    seeded = emu.call(lambda: emu.emulator.seed(1))
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    c = client(emu)
    stale = c.exceptions.ResourceNotFoundException if mode == "not-found" else c.exceptions.ConflictException
    with pytest.raises(stale, match="is not the latest"):
        c.update_image_set_metadata(
            datastoreId=d, imageSetId=i, latestVersionId="7", updateImageSetMetadataUpdates=study_update("X")
        )
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_image_set(datastoreId=d, imageSetId="0" * 32)
    # the classic mistake: JSON base64-encoded by hand, then again by the SDK
    doc = base64.b64encode(json.dumps({"Study": {"DICOM": {"StudyDescription": "X"}}}).encode())
    with pytest.raises(c.exceptions.ValidationException, match="base64"):
        c.update_image_set_metadata(
            datastoreId=d,
            imageSetId=i,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": doc}},
        )
    # nothing above changed the image set
    assert c.get_image_set(datastoreId=d, imageSetId=i)["versionId"] == "1"


def test_wrong_credentials_are_refused(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    kwargs = dict(emu.client_kwargs(), aws_secret_access_key="wrong")
    c = boto3.client(
        "medical-imaging", config=Config(inject_host_prefix=False, retries={"max_attempts": 1}), **kwargs
    )
    with pytest.raises(c.exceptions.ClientError) as info:
        c.get_image_set(datastoreId=seeded.datastore_id, imageSetId=seeded.image_set_ids[0])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_host_prefix_must_be_disabled_for_a_custom_endpoint(
    emulator_thread: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    # default botocore: the request goes to runtime-127.0.0.1, which does not resolve
    prefixed = boto3.client(
        "medical-imaging",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
        **emu.client_kwargs(),
    )
    with pytest.raises(EndpointConnectionError, match=r"runtime-127\.0\.0\.1"):
        prefixed.get_image_set(datastoreId=d, imageSetId=i)
    # the environment switch works as well as Config(inject_host_prefix=False)
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
    plain = boto3.client("medical-imaging", config=Config(retries={"max_attempts": 1}), **emu.client_kwargs())
    assert plain.get_image_set(datastoreId=d, imageSetId=i)["versionId"] == "1"
