"""Throttling and seeded fault injection, seen through raw signed HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from async_hi.contract import Quota
from async_hi.emulator import Emulator, FaultConfig
from async_hi.emulator._faults import FaultInjector, Throttle
from tests.conftest import RawClient
from tests.test_emulator_wire import STUDY_UPDATE

pytestmark = pytest.mark.anyio


def test_fault_draws_are_reproducible_from_the_seed() -> None:
    config = FaultConfig(seed=7, error_rate=0.1, throttle_rate=0.1, drop_rate=0.1, lost_response_rate=0.1)
    ops = ["UpdateImageSetMetadata", "GetImageSet"] * 200
    first = FaultInjector(config)
    second = FaultInjector(config)
    a = [first.draw(op).kind for op in ops]
    b = [second.draw(op).kind for op in ops]
    assert a == b
    kinds = set(a)
    assert {"error", "throttle", "drop", "lost", None} <= kinds
    # "lost" only ever happens to updates (a read has nothing to apply)
    assert all(kind != "lost" for kind, op in zip(a, ops, strict=True) if op == "GetImageSet")
    other = FaultInjector(FaultConfig(seed=8, error_rate=0.1, throttle_rate=0.1, drop_rate=0.1))
    assert [other.draw(op).kind for op in ops] != a


@pytest.mark.parametrize(
    "bad",
    [
        {"error_rate": 1.5},
        {"drop_rate": -0.1},
        {"error_rate": 0.6, "drop_rate": 0.6},
        {"operations": frozenset({"X"})},
    ],
)
def test_fault_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="FaultConfig"):
        FaultConfig(**bad)  # type: ignore[arg-type]


def test_throttle_bucket_starts_full_and_refills_at_the_rate() -> None:
    now = [0.0]
    t = Throttle({"UpdateImageSetMetadata": Quota(rate=0.25, burst=1)}, clock=lambda: now[0])
    assert t.allow("UpdateImageSetMetadata")
    assert not t.allow("UpdateImageSetMetadata")
    now[0] = 3.9
    assert not t.allow("UpdateImageSetMetadata")
    now[0] = 4.0
    assert t.allow("UpdateImageSetMetadata")
    assert t.allow("GetImageSet")  # no quota configured: never throttled


async def test_default_quota_throttles_the_second_update() -> None:
    async with Emulator(lock_seconds=0.0) as emu:  # documented quotas on by default
        s = emu.seed(2)
        raw = RawClient(emu)
        try:
            ok = await raw.send(
                raw.url(s.datastore_id, s.image_set_ids[0], "updateImageSetMetadata", "latestVersion=1"),
                STUDY_UPDATE,
            )
            throttled = await raw.send(
                raw.url(s.datastore_id, s.image_set_ids[1], "updateImageSetMetadata", "latestVersion=1"),
                STUDY_UPDATE,
            )
            read = await raw.send(raw.url(s.datastore_id, s.image_set_ids[1], "getImageSet"))
        finally:
            await raw.aclose()
        assert ok.status_code == 200
        assert throttled.status_code == 429
        assert throttled.headers["x-amzn-ErrorType"] == "ThrottlingException"
        assert read.status_code == 200  # a throttle on updates never slows reads
        assert [v["versionId"] for v in emu.history(s.datastore_id, s.image_set_ids[1])] == ["1"]


@pytest.mark.parametrize(
    ("fault", "status", "applied"),
    [
        ({"error_rate": 1.0}, 500, False),
        ({"throttle_rate": 1.0}, 429, False),
        ({"drop_rate": 1.0}, None, False),
        ({"lost_response_rate": 1.0}, None, True),
    ],
)
async def test_each_fault_kind(fault: dict[str, float], status: int | None, applied: bool) -> None:
    async with Emulator(lock_seconds=0.0, quotas=None, faults=FaultConfig(seed=1, **fault)) as emu:
        s = emu.seed(1)
        d, i = s.datastore_id, s.image_set_ids[0]
        raw = RawClient(emu)
        try:
            url = raw.url(d, i, "updateImageSetMetadata", "latestVersion=1")
            if status is None:
                with pytest.raises(httpx.TransportError):
                    await raw.send(url, STUDY_UPDATE)
            else:
                r = await raw.send(url, STUDY_UPDATE)
                assert r.status_code == status
                assert json.loads(r.text)["message"].startswith("injected fault")
        finally:
            await raw.aclose()
        assert [v["versionId"] for v in emu.history(d, i)] == (["1", "2"] if applied else ["1"])
        assert sum(emu.state.faults.counts.values()) == 1


async def test_slow_responses_are_delayed() -> None:
    faults = FaultConfig(seed=1, slow_rate=1.0, slow_seconds=0.3)
    async with Emulator(quotas=None, faults=faults) as emu:
        s = emu.seed(1)
        raw = RawClient(emu)
        try:
            r = await raw.send(raw.url(s.datastore_id, s.image_set_ids[0], "getImageSet"))
        finally:
            await raw.aclose()
        assert r.status_code == 200
        assert r.elapsed.total_seconds() >= 0.3
        assert emu.state.faults.counts["slow"] == 1
