"""The httpx transport mocked by respx: wire details the emulator does not produce, and one run under trio."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import respx

from async_hi import (
    DEFAULT_QUOTAS,
    HealthImagingClient,
    ImageSetDeletedError,
    LimiterConfig,
    Quota,
    RetryPolicy,
    UpdateBuilder,
)
from async_hi.emulator import EmulatorThread, FaultConfig

pytestmark = pytest.mark.anyio

URL = "https://hi.example.test"
D, ISET = "d" * 32, "1" * 32
BASE = f"{URL}/datastore/{D}/imageSet/{ISET}"
FAST = LimiterConfig(quotas={op: Quota(rate=200.0, burst=5) for op in DEFAULT_QUOTAS}, headroom=0.0)


def mocked_client(**kw: Any) -> HealthImagingClient:
    return HealthImagingClient(
        endpoint_url=URL,
        region="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        transport="httpx",
        limiter_config=FAST,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05, poll_base=0.01, poll_max=0.02),
        **kw,
    )


def image_set(version: str, state: str = "ACTIVE", status: str = "UPDATED") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "datastoreId": D,
            "imageSetId": ISET,
            "versionId": version,
            "imageSetState": state,
            "imageSetWorkflowStatus": status,
            "createdAt": 1700000000.5,
            "updatedAt": 1700000001.0,
        },
    )


def accepted(version: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "datastoreId": D,
            "imageSetId": ISET,
            "latestVersionId": version,
            "imageSetState": "LOCKED",
            "imageSetWorkflowStatus": "UPDATING",
        },
    )


def error(status: int, code: str | None, **headers: str) -> httpx.Response:
    hdrs = dict(headers)
    if code:
        hdrs["x-amzn-ErrorType"] = code
    return httpx.Response(status, json={"message": "m"}, headers=hdrs)


def update() -> Any:
    return UpdateBuilder(D, ISET).study(StudyDescription="X").build()


async def test_retry_after_is_honoured_and_a_lone_429_does_not_cut_the_rate() -> None:
    sent: list[float] = []
    answers = [error(429, "ThrottlingException", **{"Retry-After": "0.3"}), accepted("2")]

    def on_update(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        assert "latestVersion=1" in str(request.url)
        return answers.pop(0)

    with respx.mock(assert_all_called=True, using="httpx") as mock:
        mock.post(f"{BASE}/getImageSet").mock(return_value=image_set("1"))
        mock.post(url__startswith=f"{BASE}/updateImageSetMetadata").mock(side_effect=on_update)
        async with mocked_client() as hi:
            r = await hi.update_image_set_metadata(update())
            stats = hi.stats()
    assert r.latest_version_id == "2"
    assert r.attempts == 2
    assert sent[1] - sent[0] >= 0.29
    assert stats["UpdateImageSetMetadata"].throttles == 1
    assert stats["UpdateImageSetMetadata"].rate == 200.0  # one 429 is not sustained throttling
    assert stats["GetImageSet"].rate == 200.0


async def test_409_then_deleted_is_a_typed_error() -> None:
    reads = [image_set("1"), image_set("1", state="DELETED", status="DELETED")]
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/getImageSet").mock(side_effect=lambda req: reads.pop(0))
        route = mock.post(url__startswith=f"{BASE}/updateImageSetMetadata").mock(
            return_value=error(409, "ConflictException")
        )
        async with mocked_client() as hi:
            with pytest.raises(ImageSetDeletedError):
                await hi.update_image_set_metadata(update())
    assert route.call_count == 1


async def test_bare_503_is_ambiguous_checked_then_resent_at_the_same_version() -> None:
    answers = [error(503, None), accepted("2")]
    with respx.mock(using="httpx") as mock:
        reads = mock.post(f"{BASE}/getImageSet").mock(return_value=image_set("1"))
        route = mock.post(url__startswith=f"{BASE}/updateImageSetMetadata").mock(
            side_effect=lambda req: answers.pop(0)
        )
        async with mocked_client() as hi:
            r = await hi.update_image_set_metadata(update())
            stats = hi.stats()
    assert route.call_count == 2
    assert all("latestVersion=1" in str(c.request.url) for c in route.calls)  # never at a newer version
    assert reads.call_count == 2  # the read after the 503 proved the version had not moved
    assert r.outcome == "applied"
    assert stats["UpdateImageSetMetadata"].server_errors == 1


async def test_amz_retry_after_is_read_as_milliseconds() -> None:
    # (GetImageSetMetadata's gzip stream is tested against the emulator: respx hands aiobotocore
    # an already-read response, which its streaming body cannot iterate again)
    answers = [error(429, "ThrottlingException", **{"x-amz-retry-after": "200"}), image_set("7")]
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/getImageSet").mock(side_effect=lambda req: answers.pop(0))
        async with mocked_client() as hi:
            t0 = time.monotonic()
            info = await hi.get_image_set(D, ISET)
            assert time.monotonic() - t0 >= 0.19
    assert info.version_id == "7"
    assert info.created_at is not None


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_with_httpx_and_lost_responses(anyio_backend: str) -> None:
    with EmulatorThread(lock_seconds=0.02, quotas=None) as et:
        emu = et.emulator
        seeded = et.call(lambda: emu.seed(3))
        d = seeded.datastore_id
        et.call(lambda: emu.reconfigure(faults=FaultConfig(seed=4, lost_response_rate=0.5)))
        async with HealthImagingClient(
            endpoint_url=et.endpoint_url,
            region=emu.region,
            aws_access_key_id=emu.access_key_id,
            aws_secret_access_key=emu.secret_access_key,
            transport="httpx",
            limiter_config=FAST,
            retry=RetryPolicy(base_delay=0.01, max_delay=0.05, poll_base=0.01, poll_max=0.05),
        ) as hi:
            outcomes = []
            for n, i in enumerate(seeded.image_set_ids):
                u = UpdateBuilder(d, i).study(StudyDescription=f"T{n}").build()
                outcomes.append((await hi.update_image_set_metadata(u, wait=True)).outcome)
        for n, i in enumerate(seeded.image_set_ids):
            history = et.call(lambda i=i: emu.history(d, i))
            assert [v["workflowStatus"] for v in history] == ["CREATED", "UPDATED"]
            assert history[-1]["metadata"]["Study"]["DICOM"]["StudyDescription"] == f"T{n}"
    assert "already-applied" in outcomes
