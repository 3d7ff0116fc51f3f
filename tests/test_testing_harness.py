"""async_hi.testing: the harness behind the hi_* fixtures, exercised through the fixtures themselves.

Every check goes over real HTTP with real SigV4 (boto3 or aiobotocore) and is
judged from the emulator's own state (history, call log), never from what the
client says about itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from async_hi import Quota, UpdateBuilder
from async_hi.emulator import EmulatorConfig, FaultConfig, pydicom_test_data_paths
from async_hi.testing import TEST_DEFAULTS, Call, EmulatorHarness, ImageSetVersion, emulator

UPD = "UpdateImageSetMetadata"
GET = "GetImageSet"


def study_update(description: str) -> dict[str, Any]:
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": description}}}
    return {"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}}


def update(client: Any, d: str, i: str, version: str, description: str, **kw: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId=version,
        updateImageSetMetadataUpdates=study_update(description),
        **kw,
    )
    return result


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_the_fixture_hands_out_a_reset_emulator_with_clients_aimed_at_it(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    assert hi_emulator.calls() == 0
    seeded = hi_emulator.seed(2)
    assert seeded.datastore_id == hi_emulator.datastore_id
    got = hi_boto3.get_image_set(datastoreId=seeded.datastore_id, imageSetId=seeded.image_set_ids[1])
    assert got["versionId"] == "1"
    assert got["imageSetState"] == "ACTIVE"
    # the host prefix is off: the request reached the emulator, not runtime-127.0.0.1
    assert hi_emulator.calls(GET, status=200, image_set_id=seeded.image_set_ids[1]) == 1


def test_reset_forgets_data_knobs_and_calls_and_keeps_the_port(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    port = hi_emulator.endpoint_url
    seeded = hi_emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    hi_emulator.configure(lock_seconds=5.0, quotas={UPD: Quota(rate=0.01, burst=1)}, record_values=True)
    hi_emulator.concurrent_update(i, updatable={"Study": {"DICOM": {"AccessionNumber": "7"}}})
    hi_boto3.get_image_set(datastoreId=d, imageSetId=i)
    assert hi_emulator.calls() == 1

    hi_emulator.reset()

    assert hi_emulator.endpoint_url == port
    assert hi_emulator.calls() == 0
    assert hi_emulator.config.lock_seconds == 0.05
    assert hi_emulator.config.quotas is None
    with pytest.raises(ClientError) as gone:
        hi_boto3.get_image_set(datastoreId=d, imageSetId=i)
    assert error_code(gone) == "ResourceNotFoundException"
    assert hi_emulator.datastore_id != d
    # the same seeds again: the same synthetic metadata, new ids
    again = hi_emulator.seed(1)
    assert again.image_set_ids != seeded.image_set_ids
    assert hi_emulator.metadata(again.image_set_ids[0])["Study"]["DICOM"]["StudyInstanceUID"]


def test_the_call_log_names_parameters_and_attributes_but_no_values(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    seeded = hi_emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    update(hi_boto3, d, i, "1", "SECRET DESCRIPTION", force=True)
    hi_emulator.settle()
    with pytest.raises(ClientError):
        update(hi_boto3, d, i, "1", "SECRET DESCRIPTION")  # stale

    assert hi_emulator.calls(UPD, status=200) == 1
    assert hi_emulator.calls(UPD, status=(404, 409)) == 1
    assert hi_emulator.calls(UPD) == 2
    first, second = hi_emulator.call_log(UPD)
    assert isinstance(first, Call)
    assert first.ok
    assert not second.ok
    assert first.params == {"datastoreId": d, "imageSetId": i, "latestVersionId": "1", "force": True}
    assert first.updated == ("Study.StudyDescription",)
    assert first.removed == ()
    assert first.documents is None
    assert second.error_type in ("ConflictException", "ResourceNotFoundException")
    assert "SECRET" not in repr(hi_emulator.call_log())


def test_recording_values_is_opt_in(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    hi_emulator.configure(record_values=True)
    i = hi_emulator.seed(1).image_set_ids[0]
    update(hi_boto3, hi_emulator.datastore_id, i, "1", "CHEST")
    (call,) = hi_emulator.call_log(UPD)
    assert call.documents is not None
    assert call.documents["updatableAttributes"]["Study"]["DICOM"] == {"StudyDescription": "CHEST"}


def test_a_request_that_does_not_validate_is_logged_without_params(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    with pytest.raises(ClientError):
        hi_boto3.get_image_set(datastoreId=hi_emulator.datastore_id, imageSetId=i, versionId="x")
    (call,) = hi_emulator.call_log(GET)
    assert (call.status, call.error_type, call.params) == (400, "ValidationException", {})
    with pytest.raises(ValueError, match="unknown operation"):
        hi_emulator.calls("UpdateImageSet")


def test_settle_ends_every_open_apply_window_at_once(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    hi_emulator.configure(lock_seconds=math.inf)  # only settle() ends an apply
    seeded = hi_emulator.seed(3)
    d = seeded.datastore_id
    for i in seeded.image_set_ids:
        assert update(hi_boto3, d, i, "1", "NEW")["imageSetState"] == "LOCKED"
    assert [hi_emulator.state(i) for i in seeded.image_set_ids] == ["LOCKED"] * 3
    assert hi_emulator.settle(seeded.image_set_ids[0]) == 1
    assert hi_emulator.state(seeded.image_set_ids[1]) == "LOCKED"
    assert hi_emulator.settle() == 2
    assert hi_emulator.settle() == 0
    for i in seeded.image_set_ids:
        got = hi_boto3.get_image_set(datastoreId=d, imageSetId=i)
        assert (got["imageSetState"], got["imageSetWorkflowStatus"]) == ("ACTIVE", "UPDATED")


def test_history_is_data(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    d = hi_emulator.datastore_id
    original = hi_emulator.metadata(i)["Study"]["DICOM"]["StudyDescription"]
    update(hi_boto3, d, i, "1", "FIRST")
    hi_emulator.settle()
    hi_emulator.fail_next_apply(i, "Rejected by test")
    update(hi_boto3, d, i, "2", "SECOND")
    hi_emulator.settle()
    hi_boto3.update_image_set_metadata(
        datastoreId=d,
        imageSetId=i,
        latestVersionId="3",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )
    versions = hi_emulator.history(i)
    assert all(isinstance(v, ImageSetVersion) for v in versions)
    assert [v.version_id for v in versions] == ["1", "2", "3", "4"]
    assert [v.origin for v in versions] == ["created", "update", "update", "revert"]
    assert [v.workflow_status for v in versions[:3]] == ["CREATED", "UPDATED", "UPDATE_FAILED"]
    assert versions[2].message == "Rejected by test"
    assert versions[3].state == "LOCKED"  # the revert is still being applied
    assert [v.study["StudyDescription"] for v in versions[:3]] == [original, "FIRST", "FIRST"]
    hi_emulator.settle()
    assert hi_emulator.history(i)[3].study["StudyDescription"] == original
    assert hi_emulator.metadata(i, version=2)["Study"]["DICOM"]["StudyDescription"] == "FIRST"
    with pytest.raises(LookupError):
        hi_emulator.history("0" * 32)


def test_a_quota_knob_throttles_that_operation_only(hi_emulator: EmulatorHarness) -> None:
    hi_emulator.configure(quotas={UPD: Quota(rate=0.01, burst=1)})
    client = hi_emulator.boto3_client(retries={"total_max_attempts": 1})
    seeded = hi_emulator.seed(2)
    d, (a, b) = seeded.datastore_id, seeded.image_set_ids
    update(client, d, a, "1", "ONE")
    with pytest.raises(ClientError) as throttled:
        update(client, d, b, "1", "TWO")
    assert error_code(throttled) == "ThrottlingException"
    for _ in range(5):
        client.get_image_set(datastoreId=d, imageSetId=b)
    assert hi_emulator.calls(UPD, status=429) == 1
    assert hi_emulator.calls(GET, status=200) == 5
    assert [v.version_id for v in hi_emulator.history(b)] == ["1"]  # a throttled write changed nothing


def test_fault_rates_with_a_seed_repeat_exactly(hi_emulator: EmulatorHarness) -> None:
    client = hi_emulator.boto3_client(retries={"total_max_attempts": 1})

    def run() -> list[int]:
        hi_emulator.reset()
        hi_emulator.configure(faults=FaultConfig(seed=42, error_rate=0.3, throttle_rate=0.3))
        seeded = hi_emulator.seed(1)
        for _ in range(20):
            with contextlib.suppress(ClientError):
                client.get_image_set(datastoreId=seeded.datastore_id, imageSetId=seeded.image_set_ids[0])
        return [c.status for c in hi_emulator.call_log()]

    first = run()
    assert first == run()
    assert {200, 429, 500} <= set(first)
    faults = {c.fault for c in hi_emulator.call_log() if not c.ok}
    assert faults == {"error", "throttle"}
    hi_emulator.configure(faults=None)
    assert hi_emulator.config.faults.active is False


def test_bad_knob_values_are_refused_with_their_name(hi_emulator: EmulatorHarness) -> None:
    with pytest.raises(ValueError, match="lock_seconds"):
        hi_emulator.configure(lock_seconds=-1)
    with pytest.raises(TypeError, match="no_such_option"):
        hi_emulator.configure(no_such_option=1)
    with pytest.raises(ValueError, match="after must be one of"):
        hi_emulator.concurrent_update("x", updatable={}, after="Nothing")
    assert hi_emulator.config.lock_seconds == 0.05


def test_concurrent_update_lands_between_a_read_and_a_write(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    d = hi_emulator.datastore_id
    hi_emulator.concurrent_update(i, updatable={"Study": {"DICOM": {"AccessionNumber": "OTHER"}}})
    version = hi_boto3.get_image_set(datastoreId=d, imageSetId=i)["versionId"]
    assert version == "1"  # the answer left before the other writer's update...
    with pytest.raises(ClientError) as conflict:
        update(hi_boto3, d, i, version, "MINE")  # ...which makes this write stale
    assert error_code(conflict) in ("ConflictException", "ResourceNotFoundException")
    history = hi_emulator.history(i)
    assert [v.origin for v in history] == ["created", "update"]
    hi_emulator.settle()
    assert hi_emulator.history(i)[1].study["AccessionNumber"] == "OTHER"
    # once only: the next read is followed by nothing
    hi_boto3.get_image_set(datastoreId=d, imageSetId=i)
    assert len(hi_emulator.history(i)) == 2


def test_a_concurrent_update_the_service_would_refuse(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    i = hi_emulator.seed(1, primary=True).image_set_ids[0]
    with pytest.raises(ValueError, match="would refuse"):  # checked at once: never updatable
        hi_emulator.concurrent_update(i, updatable={"Study": {"DICOM": {"ImageSetID": "x"}}})
    with pytest.raises(ValueError, match="would refuse"):  # StudyID needs force
        hi_emulator.concurrent_update(i, updatable={"Study": {"DICOM": {"StudyID": "9"}}})
    # refused only when it lands: reported by the next harness call
    hi_emulator.concurrent_update(i, updatable={"Study": {"DICOM": {"StudyDescription": "X"}}})
    hi_emulator.delete(i)
    hi_boto3.get_image_set(datastoreId=hi_emulator.datastore_id, imageSetId=i)
    with pytest.raises(RuntimeError, match=r"concurrent_update .* failed: ConflictException"):
        hi_emulator.history(i)
    assert len(hi_emulator.history(i)) == 1


def test_other_writers_and_deleted_image_sets(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    seeded = hi_emulator.seed(2)
    d, (a, b) = seeded.datastore_id, seeded.image_set_ids
    assert hi_emulator.update(a, updatable={"Study": {"DICOM": {"StudyDescription": "OTHER"}}}) == "2"
    with pytest.raises(ValueError, match="ConflictException"):
        hi_emulator.update(a, updatable={"Study": {"DICOM": {"StudyDescription": "AGAIN"}}})  # LOCKED
    with pytest.raises(RuntimeError, match="settle"):
        hi_emulator.delete(a)
    hi_emulator.delete(b)
    assert hi_emulator.state(b) == "DELETED"
    assert hi_boto3.get_image_set(datastoreId=d, imageSetId=b)["imageSetState"] == "DELETED"
    with pytest.raises(ClientError) as refused:
        update(hi_boto3, d, b, "1", "X")
    assert error_code(refused) == "ConflictException"
    assert hi_emulator.calls(UPD, error="ConflictException", image_set_id=b) == 1


def test_seeding_a_study_and_explicit_metadata(hi_emulator: EmulatorHarness) -> None:
    study = hi_emulator.seed(3, same_study=True, primary=True)
    uids = {hi_emulator.metadata(i)["Study"]["DICOM"]["StudyInstanceUID"] for i in study.image_set_ids}
    assert len(uids) == 1
    other = hi_emulator.seed(1)
    assert hi_emulator.metadata(other.image_set_ids[0])["Study"]["DICOM"]["StudyInstanceUID"] not in uids
    mine = hi_emulator.add_image_set({"Patient": {"DICOM": {"PatientID": "P1"}}, "Study": {"DICOM": {}}})
    doc = hi_emulator.metadata(mine)
    assert (doc["ImageSetID"], doc["DatastoreID"]) == (mine, hi_emulator.datastore_id)
    elsewhere = hi_emulator.create_datastore("second")
    moved = hi_emulator.seed(1, datastore_id=elsewhere)
    assert moved.datastore_id == elsewhere
    assert hi_emulator.history(moved.image_set_ids[0], datastore_id=elsewhere)[0].version_id == "1"


def test_dicom_files_through_the_importer(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    paths = [p for p in pydicom_test_data_paths() if Path(p).name in ("CT_small.dcm", "MR_small.dcm")]
    assert len(paths) == 2
    report = hi_emulator.import_dicom(paths)
    assert len(report.image_set_ids) == 2
    for i in report.image_set_ids:
        got = hi_boto3.get_image_set(datastoreId=hi_emulator.datastore_id, imageSetId=i)
        assert (got["isPrimary"], got["imageSetWorkflowStatus"]) == (True, "CREATED")


def test_env_points_a_default_boto3_client_at_the_emulator(
    hi_emulator: EmulatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in hi_emulator.env().items():
        monkeypatch.setenv(key, value)
    i = hi_emulator.seed(1).image_set_ids[0]
    client = boto3.session.Session().client("medical-imaging")  # nothing passed: all from the environment
    assert client.get_image_set(datastoreId=hi_emulator.datastore_id, imageSetId=i)["versionId"] == "1"
    blob = client.get_image_set_metadata(datastoreId=hi_emulator.datastore_id, imageSetId=i)
    assert blob["contentEncoding"] == "gzip"
    assert hi_emulator.calls(status=200) == 2


def test_the_context_manager_for_unittest_and_scripts() -> None:
    with emulator(lock_seconds=0.01) as emu:
        assert emu.config.quotas is None
        assert emu.config.lock_seconds == 0.01
        seeded = emu.seed(1)
        client = emu.boto3_client()
        assert client.get_image_set(datastoreId=seeded.datastore_id, imageSetId=seeded.image_set_ids[0])
        host, port = emu.endpoint_url.removeprefix("http://").split(":")
        assert "running" not in repr(emu)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=5):
        pass
    with pytest.raises(RuntimeError, match="not running"):
        emu.calls()


def test_update_documents_are_base64_on_the_wire(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    # boto3 base64-encodes blobs itself; the log shows what the service decoded
    i = hi_emulator.seed(1).image_set_ids[0]
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "X"}}}
    encoded = base64.b64encode(json.dumps(doc).encode())
    with pytest.raises(ClientError) as twice:
        hi_boto3.update_image_set_metadata(
            datastoreId=hi_emulator.datastore_id,
            imageSetId=i,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": encoded}},
        )
    assert error_code(twice) == "ValidationException"
    assert hi_emulator.calls(UPD, status=400) == 1


@pytest.mark.asyncio
async def test_async_fixtures_under_pytest_asyncio(
    hi_emulator: EmulatorHarness, hi_client: Any, hi_aioboto: Any
) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    d = hi_emulator.datastore_id
    result = await hi_client.update_image_set_metadata(
        UpdateBuilder(d, i).study(StudyDescription="ASYNCIO").build(), wait=True
    )
    assert result.latest_version_id == "2"
    got = await hi_aioboto.get_image_set(datastoreId=d, imageSetId=i)
    assert got["imageSetWorkflowStatus"] == "UPDATED"
    assert hi_emulator.history(i)[-1].study["StudyDescription"] == "ASYNCIO"


@pytest.mark.asyncio(loop_scope="module")
async def test_async_fixtures_on_a_module_scoped_loop(hi_emulator: EmulatorHarness, hi_client: Any) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    info = await hi_client.get_image_set(hi_emulator.datastore_id, i)
    assert info.version_id == "1"


@pytest.mark.anyio
async def test_async_fixtures_under_anyio(
    hi_emulator: EmulatorHarness, hi_client: Any, hi_aioboto: Any
) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    d = hi_emulator.datastore_id
    result = await hi_client.update_image_set_metadata(
        UpdateBuilder(d, i).study(StudyDescription="ANYIO").build(), wait=True
    )
    assert result.workflow_status == "UPDATED"
    got = await hi_aioboto.get_image_set(datastoreId=d, imageSetId=i)
    assert got["versionId"] == "2"
    assert hi_emulator.calls(UPD, status=200) == 1


@pytest.mark.skipif(
    not hasattr(EmulatorConfig(), "stale_version_error"),
    reason="the emulator has no stale-version mode yet (#10)",
)
def test_the_stale_version_answer_is_a_knob(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    i = hi_emulator.seed(1).image_set_ids[0]
    d = hi_emulator.datastore_id
    update(hi_boto3, d, i, "1", "FIRST")
    hi_emulator.settle()
    answers = []
    for mode in ("conflict", "not-found"):
        hi_emulator.configure(stale_version_error=mode)
        with pytest.raises(ClientError) as stale:
            update(hi_boto3, d, i, "1", "STALE")
        answers.append((error_code(stale), stale.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert answers == [("ConflictException", 409), ("ResourceNotFoundException", 404)]
    hi_emulator.reset()
    assert hi_emulator.config == EmulatorConfig(**TEST_DEFAULTS)
