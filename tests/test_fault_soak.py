"""Fault soak: a few hundred updates under 500s, 429s, dropped connections and lost answers.

Every request must end applied exactly once, checked against the emulator's
version histories (see ``benchmarks/_soak.py``): no lost update, no version
written twice, no failure. The full soak (thousands of updates) is the
``fault-soak`` benchmark scenario.
"""

from __future__ import annotations

from typing import Any

import pytest

from async_hi import HealthImagingClient
from async_hi.emulator import Emulator, FaultConfig
from benchmarks._ours import apply_all, unlimited
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
    assert drawn["lost"] > 0 and drawn["drop"] > 0 and drawn["error"] > 0 and drawn["throttle"] > 0
    assert stats["UpdateImageSetMetadata"].retries > 0
