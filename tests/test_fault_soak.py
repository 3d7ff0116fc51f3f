"""Fault soak: a few hundred updates under 500s, 429s, dropped connections and lost answers.

Every request must end applied exactly once, checked against the emulator's
version histories (see ``benchmarks/_soak.py``): no lost update, no version
written twice, no failure. The full soak (thousands of updates) is the
``fault-soak`` benchmark scenario.
"""

from __future__ import annotations

from typing import Any

import pytest

from async_hi.emulator import Emulator, FaultConfig
from benchmarks._ours import Done, apply_all, unlimited
from benchmarks._soak import FAULTS, soak_updates, verify

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("coalesce", [False, True], ids=["one-call-each", "coalescing"])
async def test_every_update_lands_exactly_once_under_faults(coalesce: bool) -> None:
    faults = FaultConfig(seed=11 if coalesce else 7, **FAULTS)
    async with Emulator(lock_seconds=0.01, quotas=None, faults=faults) as emu:
        seeded = emu.seed(40, series=1, instances=1)
        updates = soak_updates(seeded.datastore_id, seeded.image_set_ids, per_set=4)
        async with emu.client(limiter_config=unlimited(16)) as hi:
            done = await apply_all(hi, updates, concurrency=16, coalesce=coalesce)
            stats = hi.stats()

        async def history(d: str, i: str) -> list[dict[str, Any]]:
            return emu.history(d, i)

        verdict = await verify(updates, done, history)
        drawn = dict(emu.state.faults.counts)
    assert verdict.failures == 0, [repr(d.error) for d in done if not d.ok][:3]
    assert verdict.lost == 0
    assert verdict.duplicated == 0
    assert verdict.exactly_once == len(updates) == 160
    # the faults did happen, and the client absorbed them
    assert drawn["lost"] > 0
    assert drawn["drop"] > 0
    assert drawn["error"] > 0
    assert drawn["throttle"] > 0
    assert stats["UpdateImageSetMetadata"].retries > 0


async def test_the_verifier_catches_a_lost_and_a_duplicated_update() -> None:
    d, i = "a" * 32, "b" * 32
    updates = soak_updates(d, [i], per_set=2)
    v1 = {"Study": {"DICOM": {"StudyDescription": "OLD"}, "Series": {}}}
    v2 = {"Study": {"DICOM": {"StudyDescription": "SOAK 0 0"}, "Series": {}}}
    v3 = dict(v2)  # the first update written twice; the second one never

    class Result:
        def __init__(self, version: str) -> None:
            self.latest_version_id = version

    done = [Done(0, True, 0.0, Result("2")), Done(1, True, 0.0, Result("3"))]

    async def history(d: str, i: str) -> list[dict[str, Any]]:
        return [{"versionId": str(n), "metadata": m} for n, m in enumerate([v1, v2, v3], start=1)]

    verdict = await verify(updates, done, history)
    assert (verdict.exactly_once, verdict.lost, verdict.duplicated) == (1, 1, 0)
    done[1] = Done(1, True, 0.0, Result("2"))  # both claim version 2: version 3 is nobody's
    verdict = await verify(updates, done, history)
    assert verdict.duplicated == 1
    assert verdict.lost == 2
    assert not verdict.ok
