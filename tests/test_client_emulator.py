"""HealthImagingClient against the real emulator (real aiobotocore, real SigV4, 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from async_hi import (
    DEFAULT_QUOTAS,
    HealthImagingClient,
    ImageSetDeletedError,
    LimiterConfig,
    MetadataUpdate,
    Quota,
    RetryPolicy,
    UpdateBuilder,
    UpdateResult,
    ValidationError,
)
from async_hi.emulator import Emulator, FaultConfig

pytestmark = pytest.mark.anyio

UPD = "UpdateImageSetMetadata"

#: the emulator's two answers to a stale latestVersion: the real service's 404 (evidence E1), the
#: API reference's 409. The client must behave the same against both.
MODES = ["not-found", "conflict"]

FAST = LimiterConfig(quotas={op: Quota(rate=200.0, burst=5) for op in DEFAULT_QUOTAS}, headroom=0.0)
QUICK = RetryPolicy(base_delay=0.02, max_delay=0.2, poll_base=0.01, poll_max=0.05, max_attempts=30)


def client(emu: Emulator, **kw: Any) -> HealthImagingClient:
    kw.setdefault("limiter_config", FAST)
    kw.setdefault("retry", QUICK)
    return HealthImagingClient(
        endpoint_url=emu.endpoint_url,
        region=emu.region,
        aws_access_key_id=emu.access_key_id,
        aws_secret_access_key=emu.secret_access_key,
        **kw,
    )


def study_update(d: str, i: str, desc: str, version: str | None = None) -> MetadataUpdate:
    return UpdateBuilder(d, i, latest_version_id=version).study(StudyDescription=desc).build()


def desc_of(doc: Mapping[str, Any]) -> Any:
    return doc["Study"]["DICOM"].get("StudyDescription")


def applied_descriptions(emu: Emulator, d: str, i: str) -> list[Any]:
    """StudyDescription of every applied update version, oldest first (a value twice = applied twice)."""
    return [
        desc_of(v["metadata"])
        for v in emu.history(d, i)
        if v["origin"] == "update" and v["workflowStatus"] == "UPDATED"
    ]


async def test_reads_are_typed_and_metadata_is_gunzipped(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    async with client(emulator) as hi:
        info = await hi.get_image_set(d, i)
        assert (info.version_id, info.state, info.workflow_status, info.locked) == (
            "1",
            "ACTIVE",
            "CREATED",
            False,
        )
        assert info.arn is not None
        assert info.arn.endswith(i)
        doc = await hi.get_image_set_metadata(d, i)
        assert doc["ImageSetID"] == i
        assert doc["Study"]["Series"]
        versions = await hi.list_image_set_versions(d, i)
        assert [v.version_id for v in versions] == ["1"]
        assert versions[0].workflow_status == "CREATED"  # the capital-I member is read


async def test_list_versions_reads_every_page(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.reconfigure(lock_seconds=0.0)
    for n in range(54):
        s = emulator.store.image_set(d, i)
        emulator.store.update(
            d,
            i,
            latest_version=s.latest.version_id,
            updatable={"Study": {"DICOM": {"StudyDescription": f"v{n}"}}},
        )
    async with client(emulator) as hi:
        versions = await hi.list_image_set_versions(d, i)
    assert [v.version_id for v in versions] == [str(n) for n in range(55, 0, -1)]
    assert hi.stats()["ListImageSetVersions"].calls == 2


async def test_update_wait_and_counters(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    events: list[object] = []
    async with client(emulator, on_event=events.append) as hi:
        r = await hi.update_image_set_metadata(study_update(d, i, "ONE"), wait=True)
        assert isinstance(r, UpdateResult)
        assert (r.latest_version_id, r.state, r.workflow_status, r.outcome, r.attempts) == (
            "2",
            "ACTIVE",
            "UPDATED",
            "applied",
            1,
        )
        stats = hi.stats()
    assert stats[UPD].calls == 1
    assert stats[UPD].successes == 1
    assert stats[UPD].rate == 200.0
    assert stats["GetImageSet"].calls >= 2  # the read before the write, the wait
    assert applied_descriptions(emulator, d, i) == ["ONE"]
    assert events


async def test_stale_caller_version_and_rebase(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    async with client(emulator) as hi:
        base = await hi.get_image_set_metadata(d, i)
        await hi.update_image_set_metadata(study_update(d, i, "THEIRS"), wait=True)  # v2 by "someone"
        calls: list[Any] = []

        def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate:
            calls.append(desc_of(fresh))
            return study_update(d, i, f"{desc_of(fresh)}+MINE")

        mine = study_update(d, i, f"{desc_of(base)}+MINE", version="1")  # computed from v1
        r = await hi.update_image_set_metadata(mine, wait=True, rebase=rebase)
    assert calls == ["THEIRS"]
    assert (r.base_version_id, r.latest_version_id) == ("2", "3")
    assert applied_descriptions(emulator, d, i) == ["THEIRS", "THEIRS+MINE"]


@pytest.mark.parametrize("mode", MODES)
async def test_two_clients_contend_for_one_image_set_nothing_lost_nothing_twice(mode: str) -> None:
    async with Emulator(lock_seconds=0.05, quotas=None, stale_version_error=mode) as emu:
        seeded = emu.seed(1)
        d, i = seeded.datastore_id, seeded.image_set_ids[0]
        async with client(emu) as a, client(emu) as b:
            results: list[UpdateResult] = []

            async def writer(hi: HealthImagingClient, name: str) -> None:
                for k in range(4):
                    results.append(await hi.update_image_set_metadata(study_update(d, i, f"{name}{k}")))

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, a, "A")
                tg.start_soon(writer, b, "B")
            conflicts = a.stats()[UPD].conflicts + b.stats()[UPD].conflicts
            waits = a.stats()["GetImageSet"].waits + b.stats()["GetImageSet"].waits
        await anyio.sleep(0.1)
        applied = applied_descriptions(emu, d, i)
    assert sorted(applied) == sorted(f"{n}{k}" for n in "AB" for k in range(4))  # each exactly once
    assert len(emu.history(d, i)) == 9
    assert conflicts + waits > 0  # they did meet LOCKED windows or stale versions
    assert sorted(int(r.latest_version_id) for r in results) == list(range(2, 10))


async def test_update_failed_is_reported_with_its_message(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.store.image_set(d, i).fail_next_apply = "injected apply failure"
    async with client(emulator) as hi:
        before = await hi.get_image_set_metadata(d, i)
        r = await hi.update_image_set_metadata(study_update(d, i, "NEVER"), wait=True)
        after = await hi.get_image_set_metadata(d, i)
    assert r.failed
    assert (r.workflow_status, r.message, r.latest_version_id) == (
        "UPDATE_FAILED",
        "injected apply failure",
        "2",
    )
    assert desc_of(after) == desc_of(before)
    assert [v["workflowStatus"] for v in emulator.history(d, i)] == ["CREATED", "UPDATE_FAILED"]


async def test_deleted_and_invalid_are_typed_errors_and_change_nothing(emulator: Emulator) -> None:
    seeded = emulator.seed(2)
    d, (i, j) = seeded.datastore_id, seeded.image_set_ids
    emulator.store.image_set(d, j).deleted = True
    async with client(emulator) as hi:
        with pytest.raises(ImageSetDeletedError):
            await hi.update_image_set_metadata(study_update(d, j, "X"))
        bad = UpdateBuilder(d, i).series("1.2.3.999", SeriesDescription="X").build()  # no such series
        with pytest.raises(ValidationError) as info:
            await hi.update_image_set_metadata(bad)
        assert "X" not in str(info.value)
        assert hi.stats()[UPD].calls == 1  # the deleted one never reached a write
    assert len(emulator.history(d, i)) == 1


@pytest.mark.parametrize(
    ("transport", "mode"), [("aiohttp", "not-found"), ("httpx", "not-found"), ("aiohttp", "conflict")]
)
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"throttle_rate": 0.5}, id="429-storm"),
        pytest.param({"error_rate": 0.4}, id="5xx"),
        pytest.param({"drop_rate": 0.3}, id="dropped-connections"),
        pytest.param({"lost_response_rate": 0.5}, id="lost-responses"),
    ],
)
async def test_faults_nothing_lost_nothing_applied_twice(
    transport: str, mode: str, faults: dict[str, float]
) -> None:
    async with Emulator(lock_seconds=0.02, quotas=None, stale_version_error=mode) as emu:
        seeded = emu.seed(5)
        d = seeded.datastore_id
        # faults on updates only: the draws then do not depend on how reads interleave, so the
        # seeded stream faults the same attempts every run
        emu.reconfigure(faults=FaultConfig(seed=11, operations=frozenset({UPD}), **faults))
        async with client(emu, transport=transport) as hi:
            async with anyio.create_task_group() as tg:
                for n, i in enumerate(seeded.image_set_ids):
                    tg.start_soon(hi.update_image_set_metadata, study_update(d, i, f"V{n}"))
            stats = hi.stats()
        emu.reconfigure(faults=FaultConfig())
        await anyio.sleep(0.05)
        for n, i in enumerate(seeded.image_set_ids):
            assert applied_descriptions(emu, d, i) == [f"V{n}"]
            assert len(emu.history(d, i)) == 2
    injected = sum(stats[op].throttles + stats[op].server_errors + stats[op].transport_errors for op in stats)
    assert injected > 0  # the faults did happen
    if "throttle_rate" in faults:
        assert stats[UPD].throttles > 0
        assert stats[UPD].rate < 200.0  # cut, and only for updates
        assert stats["GetImageSetMetadata"].rate == 200.0


@pytest.mark.parametrize("mode", MODES)
async def test_read_timeout_with_a_late_write_still_applies_once(mode: str) -> None:
    async with Emulator(lock_seconds=0.02, quotas=None, stale_version_error=mode) as emu:
        seeded = emu.seed(3)
        d = seeded.datastore_id
        emu.reconfigure(
            faults=FaultConfig(seed=1, slow_rate=0.6, slow_seconds=0.5, operations=frozenset({UPD}))
        )
        async with client(emu, read_timeout=0.2) as hi:
            async with anyio.create_task_group() as tg:
                for n, i in enumerate(seeded.image_set_ids):
                    tg.start_soon(hi.update_image_set_metadata, study_update(d, i, f"S{n}"))
            assert hi.stats()[UPD].transport_errors > 0
        await anyio.sleep(0.7)  # any write still sleeping in the emulator lands (or is refused) now
        for n, i in enumerate(seeded.image_set_ids):
            assert applied_descriptions(emu, d, i) == [f"S{n}"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_write_between_our_read_and_our_write_is_refused_then_a_locked_wait(
    emulator: Emulator, mode: str
) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.reconfigure(lock_seconds=0.3, stale_version_error=mode)
    intruded: list[bool] = []

    def intruder(**kwargs: Any) -> None:
        if not intruded:  # once: another writer's update lands just before ours leaves
            intruded.append(True)
            emulator.store.update(
                d, i, latest_version=1, updatable={"Study": {"DICOM": {"AccessionNumber": "OTHER"}}}
            )

    async with client(emulator) as hi:
        hi.raw.meta.events.register(f"before-send.medical-imaging.{UPD}", intruder)
        t0 = anyio.current_time()
        r = await hi.update_image_set_metadata(study_update(d, i, "MINE"), wait=True)
        waited = anyio.current_time() - t0
        stats = hi.stats()
    # the stale write was refused (404 "not the latest" or 409, by mode), taken as a conflict ...
    assert stats[UPD].conflicts == 1
    refused = [r for r in emulator.requests if r.operation == UPD and r.status != 200]
    assert [r.error_code for r in refused] == [
        "ResourceNotFoundException" if mode == "not-found" else "ConflictException"
    ]
    assert stats["GetImageSet"].waits >= 1  # ... the LOCKED window was polled, not hammered with writes
    assert stats[UPD].calls == 2
    assert waited >= 0.3
    assert (r.base_version_id, r.latest_version_id, r.conflicts) == ("2", "3", 1)
    final = emulator.history(d, i)[-1]["metadata"]["Study"]["DICOM"]
    assert final["AccessionNumber"] == "OTHER"
    assert final["StudyDescription"] == "MINE"
    assert applied_descriptions(emulator, d, i) == [desc_of(emulator.history(d, i)[0]["metadata"]), "MINE"]


# -- value constraints: removals name the stored value (E4), values fit their VR (E5) ---------


async def test_a_removal_without_a_value_is_given_the_stored_one_and_applies(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    async with client(emulator) as hi:
        before = await hi.get_image_set_metadata(d, i)
        assert before["Study"]["DICOM"].get("AccessionNumber")
        r = await hi.update_image_set_metadata(
            UpdateBuilder(d, i).remove_study("AccessionNumber").build(), wait=True
        )
        stats = hi.stats()
    assert (r.workflow_status, r.latest_version_id) == ("UPDATED", "2")
    assert "AccessionNumber" not in emulator.history(d, i)[-1]["metadata"]["Study"]["DICOM"]
    assert stats["GetImageSetMetadata"].calls == 2  # ours above, and the one that fetched the value


@pytest.mark.parametrize("mode", ["reject", "update-failed"])
async def test_a_removal_naming_another_value_is_refused_by_mode(emulator: Emulator, mode: str) -> None:
    # E4's form (a 400, or an UPDATE_FAILED version) is not public: "reject" is our default
    emulator.reconfigure(constraint_violations=mode)
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    conditional = UpdateBuilder(d, i).remove_study(AccessionNumber="NOT-THE-STORED-ONE").build()
    async with client(emulator) as hi:
        if mode == "reject":
            with pytest.raises(ValidationError) as info:
                await hi.update_image_set_metadata(conditional)
            assert "does not match the stored value" in (info.value.service_message or "")
            assert "NOT-THE-STORED-ONE" not in (info.value.service_message or "")
        else:
            r = await hi.update_image_set_metadata(conditional, wait=True)
            assert r.failed
            assert r.message is not None
            assert "does not match the stored value" in r.message
    history = emulator.history(d, i)
    assert (
        history[0]["metadata"]["Study"]["DICOM"]["AccessionNumber"]
        == (history[-1]["metadata"]["Study"]["DICOM"]["AccessionNumber"])
    )
    assert [v["workflowStatus"] for v in history] == (
        ["CREATED"] if mode == "reject" else ["CREATED", "UPDATE_FAILED"]
    )


async def test_a_value_that_does_not_fit_its_vr_needs_force(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    async with client(emulator) as hi:
        with pytest.raises(ValidationError) as info:
            await hi.update_image_set_metadata(UpdateBuilder(d, i).study(StudyDate="2024-05-01").build())
        assert "StudyDate does not fit its VR DA" in (info.value.service_message or "")
        forced = UpdateBuilder(d, i).study(StudyDate="2024-05-01").force().build()
        r = await hi.update_image_set_metadata(forced, wait=True)
    assert r.workflow_status == "UPDATED"
    assert emulator.history(d, i)[-1]["metadata"]["Study"]["DICOM"]["StudyDate"] == "2024-05-01"


async def test_writes_to_one_image_set_take_turns_in_order_and_a_cancelled_one_gives_its_turn_on() -> None:
    async with Emulator(lock_seconds=0, quotas=None) as emu:
        seeded = emu.seed(1, series=1, instances=1)
        d, i = seeded.datastore_id, seeded.image_set_ids[0]
        async with client(emu) as hi, anyio.create_task_group() as tg:
            for n in range(6):
                if n == 3:  # this one is cancelled while it waits for its turn
                    with anyio.CancelScope() as scope:
                        scope.cancel()
                        await hi.update_image_set_metadata(study_update(d, i, "W3"))
                    continue
                tg.start_soon(hi.update_image_set_metadata, study_update(d, i, f"W{n}"))
                await anyio.lowlevel.checkpoint()  # queued in this order
        refused = [r for r in emu.requests if r.operation == UPD and r.status != 200]
    assert refused == []  # never two writes racing for one version
    assert applied_descriptions(emu, d, i) == ["W0", "W1", "W2", "W4", "W5"]
    assert hi._writing == {}  # nothing left behind
