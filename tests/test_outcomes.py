"""Issue 11, "outcomes that never lie": one test (or more) per break, against the real emulator.

Outcomes are judged from the emulator's version histories, never from the
client's own counters.
"""

from __future__ import annotations

from typing import Any

import pytest

from async_hi import (
    DEFAULT_QUOTAS,
    HealthImagingClient,
    LimiterConfig,
    Quota,
    RetryPolicy,
    UpdateBuilder,
    UpdateFinished,
    update_many,
)
from async_hi.emulator import Emulator

pytestmark = pytest.mark.anyio

FAST = LimiterConfig(quotas={op: Quota(rate=500.0, burst=10) for op in DEFAULT_QUOTAS}, headroom=0.0)
QUICK = RetryPolicy(base_delay=0.01, max_delay=0.05, poll_base=0.005, poll_max=0.02, max_attempts=30)


def client(emu: Emulator, **kw: Any) -> HealthImagingClient:
    kw.setdefault("limiter_config", FAST)
    kw.setdefault("retry", QUICK)
    return emu.client(**kw)


# -- 4. a failed apply is never "applied" ------------------------------------------------------


async def test_update_failed_on_a_direct_call_is_not_called_applied(emulator: Emulator) -> None:
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.store.image_set(d, i).fail_next_apply = "injected failure"
    events: list[object] = []
    async with client(emulator, on_event=events.append) as hi:
        r = await hi.update_image_set_metadata(
            UpdateBuilder(d, i).study(StudyDescription="X").build(), wait=True
        )
    history = emulator.history(d, i)
    assert [v["workflowStatus"] for v in history] == ["CREATED", "UPDATE_FAILED"]
    assert r.failed
    assert r.outcome == "update-failed"
    assert [e.outcome for e in events if isinstance(e, UpdateFinished)] == ["update-failed"]


async def test_update_failed_has_the_same_word_in_update_many(emulator: Emulator) -> None:
    seeded = emulator.seed(2)
    d = seeded.datastore_id
    bad, good = seeded.image_set_ids
    emulator.store.image_set(d, bad).fail_next_apply = "injected failure"
    updates = [UpdateBuilder(d, i).study(StudyDescription="X").build() for i in (bad, good)]
    async with client(emulator) as hi:

        async def apply(u: Any) -> Any:
            return await hi.update_image_set_metadata(u, wait=True)

        async with update_many(updates, apply=apply) as run:
            outcomes = {o.request.image_set_id: o async for o in run}
    assert outcomes[bad].status == "update-failed"
    assert outcomes[bad].result.outcome == "update-failed"
    assert not outcomes[bad].ok
    assert outcomes[good].status == "applied" == outcomes[good].result.outcome
    assert [v["workflowStatus"] for v in emulator.history(d, bad)] == ["CREATED", "UPDATE_FAILED"]
    assert [v["workflowStatus"] for v in emulator.history(d, good)] == ["CREATED", "UPDATED"]


# -- 5. checked too late, or not at all ------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_by_build(bad: float) -> None:
    from async_hi import InvalidUpdateError

    builder = UpdateBuilder("a" * 32, "b" * 32).study(StudyDescription="X").instance(
        "1.2", "1.2.3", {"SliceThickness": bad}
    )
    with pytest.raises(InvalidUpdateError, match="NaN or Infinity"):
        builder.build()


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_fail_the_dry_run(tmp_path: Any, text: str) -> None:
    from async_hi import ManifestError, read_manifest

    ids = f'"datastoreId": "{"a" * 32}", "imageSetId": "{"b" * 32}"'
    line = f'{{{ids}, "updatable": {{"Study": {{"DICOM": {{"StudyID": {text}}}}}}}}}'
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    csv = tmp_path / "m.csv"
    csv.write_text(
        "datastore_id,image_set_id,level,attribute,value\n"
        f"{'a' * 32},{'b' * 32},study,StudyDescription,json:{text}\n"
    )
    for manifest in (path, csv):
        (item,) = list(read_manifest(manifest))
        assert isinstance(item, ManifestError), manifest
        assert "not valid JSON" in item.problem


def test_revert_to_version_zero_is_refused_at_construction() -> None:
    from async_hi import InvalidUpdateError, MetadataUpdate

    with pytest.raises(InvalidUpdateError, match="1 or more"):
        MetadataUpdate.revert("a" * 32, "b" * 32, 0)


async def test_revert_to_a_version_that_does_not_exist_spends_no_write(emulator: Emulator) -> None:
    from async_hi import InvalidUpdateError, MetadataUpdate

    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    emulator.reconfigure(lock_seconds=0.0)
    for n in range(2):
        change = {"Study": {"DICOM": {"StudyDescription": f"{n}"}}}
        emulator.store.update(d, i, latest_version=n + 1, updatable=change)
    async with client(emulator) as hi:
        with pytest.raises(InvalidUpdateError, match="99 does not exist: the image set is at version 3"):
            await hi.update_image_set_metadata(MetadataUpdate.revert(d, i, 99))
        # a version hint is not a read: the client reads before refusing
        with pytest.raises(InvalidUpdateError, match="at version 3"):
            await hi.update_image_set_metadata(MetadataUpdate.revert(d, i, 4), version_hint="2")
        stats = hi.stats()
    assert stats["UpdateImageSetMetadata"].calls == 0
    assert len(emulator.history(d, i)) == 3


# -- 6. leaks and misleads ---------------------------------------------------------------------

SECRET = "DOE^JANE"


async def test_service_reason_is_told_with_quoted_values_redacted_and_botocore_is_not_chained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    import httpx
    import respx

    from async_hi import ValidationError

    url, d, i = "https://hi.example.test", "d" * 32, "1" * 32
    text = f"Invalid value '{SECRET}' for PatientName: \"{SECRET}\" does not fit VR PN"
    reply = httpx.Response(400, json={"message": text}, headers={"x-amzn-ErrorType": "ValidationException"})
    with respx.mock(using="httpx") as mock:
        mock.post(url__startswith=f"{url}/datastore/{d}/imageSet/{i}/updateImageSetMetadata").mock(
            return_value=reply
        )
        async with HealthImagingClient(
            endpoint_url=url,
            region="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            transport="httpx",
            limiter_config=FAST,
            retry=QUICK,
        ) as hi:
            update = UpdateBuilder(d, i).patient(PatientName="X").build()
            try:
                await hi.update_image_set_metadata(update, version_hint="1")
            except ValidationError as exc:
                logging.getLogger("user-code").exception("update failed")
                error = exc
    assert SECRET not in str(error)
    assert "Invalid value '…' for PatientName" in str(error)  # the reason users need
    assert "does not fit VR PN" in str(error)
    assert error.service_message == text  # the full text, on the attribute
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert "update failed" in caplog.text
    assert "ValidationException" in caplog.text
    assert SECRET not in caplog.text
    assert "ClientError" not in caplog.text


def test_unknown_keys_are_treated_as_data_and_never_echoed_in_full(tmp_path: Any) -> None:
    from async_hi import InvalidUpdateError, read_manifest

    huge = "K" * 400_000
    with pytest.raises(InvalidUpdateError) as info:
        UpdateBuilder("a" * 32, "b" * 32).study({huge: "x"}).build()
    assert len(str(info.value)) < 300
    assert "KKKK" not in str(info.value)
    assert "400000 characters" in str(info.value)
    # swapped CSV columns: a value lands where the attribute belongs
    csv = tmp_path / "swapped.csv"
    csv.write_text(
        "datastore_id,image_set_id,level,value,attribute\n"
        f"{'a' * 32},{'b' * 32},patient,PatientName,{SECRET}\n"
        f"{'a' * 32},{'b' * 32},study,StudyDescription,CHEST\n"
    )
    problems = [str(item) for item in read_manifest(csv)]
    assert len(problems) == 1
    assert SECRET not in problems[0]
    assert "CHEST" not in problems[0]
    assert "is not a DICOM keyword" in problems[0]


async def test_the_emulator_does_not_echo_unknown_keys_either(emulator: Emulator) -> None:
    from async_hi import ValidationError

    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    update = UpdateBuilder(d, i).study(StudyDescription="X").build()
    # past the client's own checks (the body is built once, at construction): the service refuses
    update._blobs["updatable"] = b'{"SchemaVersion": 1.1, "Study": {"DICOM": {"%s": "x"}}}' % SECRET.encode()
    async with client(emulator) as hi:
        with pytest.raises(ValidationError) as info:
            await hi.update_image_set_metadata(update)
    assert SECRET not in str(info.value)
    assert SECRET not in (info.value.service_message or "")
    assert "is not a DICOM keyword" in str(info.value)


# -- 7. trio + aiohttp ---------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_the_transport_is_httpx_unless_aiohttp_is_asked_for(anyio_backend: str) -> None:
    import time

    from async_hi.emulator import EmulatorThread

    with EmulatorThread(lock_seconds=0.01, quotas=None) as et:
        seeded = et.call(lambda: et.emulator.seed(1))
        d, i = seeded.datastore_id, seeded.image_set_ids[0]
        async with et.client(limiter_config=FAST, retry=QUICK) as hi:
            assert hi.transport == "httpx"
            r = await hi.update_image_set_metadata(UpdateBuilder(d, i).study(StudyDescription="T").build())
        assert r.outcome == "applied"
        history = et.call(lambda: et.emulator.history(d, i))
        assert [v["origin"] for v in history] == ["created", "update"]
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="cannot run under trio"):
            async with et.client(transport="aiohttp", limiter_config=FAST, retry=QUICK):
                pass
        assert time.monotonic() - t0 < 1.0  # at once, not after 43 s of retries
        assert len(et.call(lambda: et.emulator.history(d, i))) == 2


async def test_under_asyncio_the_default_transport_is_aiohttp(emulator: Emulator) -> None:
    async with client(emulator) as hi:
        assert hi.transport == "aiohttp"
        await hi.get_image_set(*_one(emulator))


def _one(emu: Emulator) -> tuple[str, str]:
    seeded = emu.seed(1)
    return seeded.datastore_id, seeded.image_set_ids[0]
