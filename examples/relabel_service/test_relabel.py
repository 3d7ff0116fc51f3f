"""Tests of the relabel service, written as its users would: only async_hi.testing's public fixtures.

Each behaviour is checked through each client the service supports (boto3,
aiobotocore, async-hi's own), against the emulator over real HTTP, and judged
from the emulator's call log and version histories, never from the service's
own report alone. No test sleeps: LOCKED windows end by ``hi_emulator.settle()``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from relabel import Report, relabel_study, relabel_study_aioboto, relabel_study_boto3

from async_hi.emulator import FaultConfig
from async_hi.testing import EmulatorHarness

UPD = "UpdateImageSetMetadata"
LABEL = "CHEST CT (REVIEWED)"
#: half the updates answered 429, from a fixed seed: the same updates are throttled on every run
THROTTLES = FaultConfig(seed=3, throttle_rate=0.5, operations=frozenset({UPD}))


def a_study(emu: EmulatorHarness, count: int = 3) -> list[str]:
    return list(emu.seed(count, same_study=True, primary=True).image_set_ids)


def assert_labelled_once(emu: EmulatorHarness, image_set_id: str, *, before: int = 1) -> None:
    """The image set carries the label, written by one applied update on top of ``before`` versions."""
    emu.settle()
    history = emu.history(image_set_id)
    assert len(history) == before + 1
    assert history[-1].workflow_status == "UPDATED"
    assert history[-1].study["StudyDescription"] == LABEL
    assert all(v.study.get("StudyDescription") != LABEL for v in history[:-1])


def no_sleep_but_settle(emu: EmulatorHarness) -> Any:
    """A sleep for the service that ends every open apply window instead of waiting."""

    def sleep(seconds: float) -> None:
        emu.settle()

    return sleep


def async_no_sleep_but_settle(emu: EmulatorHarness) -> Any:
    async def sleep(seconds: float) -> None:
        emu.settle()

    return sleep


# -- boto3 --------------------------------------------------------------------------------------------


def test_boto3_relabels_each_image_set_of_the_study_once(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    ids = a_study(hi_emulator)
    hi_emulator.update(ids[2], updatable={"Study": {"DICOM": {"StudyDescription": LABEL}}})  # done already
    hi_emulator.settle()

    report = relabel_study_boto3(hi_boto3, hi_emulator.datastore_id, ids, LABEL)

    assert report == Report(relabelled={ids[0]: "2", ids[1]: "2"}, unchanged=[ids[2]])
    assert hi_emulator.calls(UPD, status=200) == 2
    assert hi_emulator.calls(UPD, image_set_id=ids[2]) == 0
    for i in ids[:2]:
        assert_labelled_once(hi_emulator, i)
    (first, _) = hi_emulator.call_log(UPD)
    assert first.updated == ("Study.StudyDescription",)
    assert first.params["latestVersionId"] == "1"


def test_boto3_rereads_after_a_conflict_and_keeps_the_other_writers_change(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    hi_emulator.configure(lock_seconds=math.inf)  # the other writer's update stays LOCKED until settled
    ids = a_study(hi_emulator, 2)
    other = {"Study": {"DICOM": {"AccessionNumber": "ACC-OTHER"}}}
    hi_emulator.concurrent_update(ids[0], updatable=other, after="GetImageSetMetadata")

    report = relabel_study_boto3(
        hi_boto3, hi_emulator.datastore_id, ids, LABEL, sleep=no_sleep_but_settle(hi_emulator)
    )

    assert report.relabelled == {ids[0]: "3", ids[1]: "2"}
    assert hi_emulator.calls(UPD, status=(404, 409), image_set_id=ids[0]) == 1  # the stale write
    assert_labelled_once(hi_emulator, ids[0], before=2)
    assert hi_emulator.history(ids[0])[-1].study["AccessionNumber"] == "ACC-OTHER"


def test_boto3_retries_throttled_updates(hi_emulator: EmulatorHarness) -> None:
    hi_emulator.configure(faults=THROTTLES)
    # the service's own retries, not botocore's
    client = hi_emulator.boto3_client(retries={"total_max_attempts": 1})
    ids = a_study(hi_emulator)

    report = relabel_study_boto3(client, hi_emulator.datastore_id, ids, LABEL, sleep=lambda s: None)

    assert sorted(report.relabelled) == sorted(ids)
    assert hi_emulator.calls(UPD, status=429) >= 1
    assert hi_emulator.calls(UPD, status=200) == 3
    for i in ids:
        assert_labelled_once(hi_emulator, i)


def test_boto3_skips_a_deleted_image_set(hi_emulator: EmulatorHarness, hi_boto3: Any) -> None:
    ids = a_study(hi_emulator)
    hi_emulator.delete(ids[1])

    report = relabel_study_boto3(hi_boto3, hi_emulator.datastore_id, ids, LABEL)

    assert report.deleted == [ids[1]]
    assert sorted(report.relabelled) == sorted([ids[0], ids[2]])
    assert hi_emulator.calls(UPD, image_set_id=ids[1]) == 0
    assert [v.state for v in hi_emulator.history(ids[1])] == ["DELETED"]


# -- aiobotocore (under anyio: asyncio and trio) ------------------------------------------------------


@pytest.mark.anyio
async def test_aioboto_relabels_each_image_set_of_the_study_once(
    hi_emulator: EmulatorHarness, hi_aioboto: Any
) -> None:
    ids = a_study(hi_emulator)

    report = await relabel_study_aioboto(hi_aioboto, hi_emulator.datastore_id, ids, LABEL)

    assert report == Report(relabelled=dict.fromkeys(ids, "2"))
    assert hi_emulator.calls(UPD, status=200) == 3
    for i in ids:
        assert_labelled_once(hi_emulator, i)


@pytest.mark.anyio
async def test_aioboto_rereads_after_a_conflict(hi_emulator: EmulatorHarness, hi_aioboto: Any) -> None:
    hi_emulator.configure(lock_seconds=math.inf)
    ids = a_study(hi_emulator, 2)
    hi_emulator.concurrent_update(
        ids[1], updatable={"Study": {"DICOM": {"AccessionNumber": "ACC-42"}}}, after="GetImageSetMetadata"
    )

    report = await relabel_study_aioboto(
        hi_aioboto, hi_emulator.datastore_id, ids, LABEL, sleep=async_no_sleep_but_settle(hi_emulator)
    )

    assert report.relabelled == {ids[0]: "2", ids[1]: "3"}
    assert hi_emulator.calls(UPD, status=(404, 409)) == 1
    assert_labelled_once(hi_emulator, ids[1], before=2)
    assert hi_emulator.history(ids[1])[-1].study["AccessionNumber"] == "ACC-42"


@pytest.mark.anyio
async def test_aioboto_retries_throttled_updates(hi_emulator: EmulatorHarness) -> None:
    hi_emulator.configure(faults=THROTTLES)
    ids = a_study(hi_emulator)

    async with hi_emulator.aioboto_client(retries={"total_max_attempts": 1}) as client:
        report = await relabel_study_aioboto(client, hi_emulator.datastore_id, ids, LABEL, backoff=0.001)

    assert sorted(report.relabelled) == sorted(ids)
    assert hi_emulator.calls(UPD, status=429) >= 1
    for i in ids:
        assert_labelled_once(hi_emulator, i)


@pytest.mark.anyio
async def test_aioboto_skips_a_deleted_image_set(hi_emulator: EmulatorHarness, hi_aioboto: Any) -> None:
    ids = a_study(hi_emulator, 2)
    hi_emulator.delete(ids[0])

    report = await relabel_study_aioboto(hi_aioboto, hi_emulator.datastore_id, ids, LABEL)

    assert report == Report(relabelled={ids[1]: "2"}, deleted=[ids[0]])
    assert hi_emulator.calls(UPD, image_set_id=ids[0]) == 0


# -- async-hi's HealthImagingClient (under pytest-asyncio) --------------------------------------------


@pytest.mark.asyncio
async def test_client_relabels_each_image_set_of_the_study_once(
    hi_emulator: EmulatorHarness, hi_client: Any
) -> None:
    ids = a_study(hi_emulator)

    report = await relabel_study(hi_client, hi_emulator.datastore_id, ids, LABEL)
    hi_emulator.settle()
    again = await relabel_study(hi_client, hi_emulator.datastore_id, ids, LABEL)

    assert report == Report(relabelled=dict.fromkeys(ids, "2"))
    assert hi_emulator.calls(UPD, status=200) == 3
    for i in ids:
        assert_labelled_once(hi_emulator, i)
    assert again == Report(unchanged=ids)


@pytest.mark.asyncio
async def test_client_conflict_with_another_writer(hi_emulator: EmulatorHarness, hi_client: Any) -> None:
    ids = a_study(hi_emulator, 2)
    hi_emulator.concurrent_update(
        ids[0], updatable={"Study": {"DICOM": {"AccessionNumber": "ACC-OTHER"}}}, after="GetImageSetMetadata"
    )

    report = await relabel_study(hi_client, hi_emulator.datastore_id, ids, LABEL)

    assert report.relabelled == {ids[0]: "3", ids[1]: "2"}
    # the write at the version the service had read was refused, then the client rebased and wrote again
    assert hi_emulator.calls(UPD, status=(404, 409), image_set_id=ids[0]) == 1
    assert_labelled_once(hi_emulator, ids[0], before=2)
    assert hi_emulator.history(ids[0])[-1].study["AccessionNumber"] == "ACC-OTHER"


@pytest.mark.asyncio
async def test_client_retries_throttled_updates(hi_emulator: EmulatorHarness, hi_client: Any) -> None:
    hi_emulator.configure(faults=THROTTLES)
    ids = a_study(hi_emulator)

    report = await relabel_study(hi_client, hi_emulator.datastore_id, ids, LABEL)

    assert sorted(report.relabelled) == sorted(ids)
    assert hi_emulator.calls(UPD, status=429) >= 1
    for i in ids:
        assert_labelled_once(hi_emulator, i)


@pytest.mark.anyio
async def test_client_skips_a_deleted_image_set(hi_emulator: EmulatorHarness, hi_client: Any) -> None:
    ids = a_study(hi_emulator)
    hi_emulator.delete(ids[2])

    report = await relabel_study(hi_client, hi_emulator.datastore_id, ids, LABEL)

    assert report.deleted == [ids[2]]
    assert sorted(report.relabelled) == sorted(ids[:2])
    assert hi_emulator.calls(UPD, image_set_id=ids[2]) == 0
