"""Fault soak: a few hundred updates under 500s, 429s, dropped connections and lost answers.

Every request must end applied exactly once, checked against the emulator's
version histories (see ``benchmarks/_soak.py``): no lost update, no version
written twice, no failure. The full soak (thousands of updates) is the
``fault-soak`` benchmark scenario.

Both ways of refusing a stale ``latestVersion`` are soaked (``stale_version_error``:
the real service's 404 "not the latest", evidence E1, and the documented 409),
with GetImageSetMetadata answering E2's 409 "not consistent yet" while a version
is applied. With one writer per image set a stale version is rare (only after
a lost answer), so the second test puts two clients on the same image sets:
stale versions, LOCKED windows and lost answers then meet all the time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest

from async_hi import RetryPolicy
from async_hi.emulator import Emulator, FaultConfig
from benchmarks._ours import Done, apply_all, unlimited
from benchmarks._soak import FAULTS, soak_updates, verify

pytestmark = pytest.mark.anyio

MODES = ["not-found", "conflict"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("coalesce", [False, True], ids=["one-call-each", "coalescing"])
async def test_every_update_lands_exactly_once_under_faults(coalesce: bool, mode: str) -> None:
    faults = FaultConfig(seed=11 if coalesce else 7, **FAULTS)
    sets = 40  # smaller, and a run may draw no "lost" fault at all (the draws follow the interleaving)
    async with Emulator(lock_seconds=0.01, quotas=None, faults=faults, stale_version_error=mode) as emu:
        seeded = emu.seed(sets, series=1, instances=1)
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
    assert verdict.exactly_once == len(updates) == sets * 4
    # the faults did happen, and the client absorbed them
    assert drawn["lost"] > 0
    assert drawn["drop"] > 0
    assert drawn["error"] > 0
    assert drawn["throttle"] > 0
    assert stats["UpdateImageSetMetadata"].retries > 0


@pytest.mark.parametrize("mode", MODES)
async def test_two_writers_on_the_same_image_sets_under_faults_exactly_once(mode: str) -> None:
    faults = FaultConfig(seed=5, **FAULTS)
    # every request claims to be computed against version 1 and is written at once: each one's
    # first write is stale, so the stale path (404 or 409, then the read) runs for nearly all
    policy = RetryPolicy(
        read_before_write=False, max_conflicts=60, max_attempts=60, base_delay=0.01, poll_base=0.01
    )
    async with Emulator(lock_seconds=0.01, quotas=None, faults=faults, stale_version_error=mode) as emu:
        seeded = emu.seed(4, series=1, instances=1)
        updates = [
            dataclasses.replace(u, latest_version_id="1")
            for u in soak_updates(seeded.datastore_id, seeded.image_set_ids, per_set=6)
        ]
        # writer A takes the even requests, writer B the odd ones: both write every image set
        halves = [list(range(0, len(updates), 2)), list(range(1, len(updates), 2))]
        done: list[Done | None] = [None] * len(updates)
        conflicts = 0

        async def writer(keys: list[int]) -> None:
            nonlocal conflicts
            async with emu.client(limiter_config=unlimited(8), retry=policy) as hi:
                part = await apply_all(hi, [updates[k] for k in keys], concurrency=8, coalesce=False)
                conflicts += hi.stats()["UpdateImageSetMetadata"].conflicts
            for k, d in zip(keys, part, strict=True):
                done[k] = dataclasses.replace(d, index=k)

        async with anyio.create_task_group() as tg:
            for keys in halves:
                tg.start_soon(writer, keys)

        async def history(d: str, i: str) -> list[dict[str, Any]]:
            return emu.history(d, i)

        finished = [d for d in done if d is not None]
        verdict = await verify(updates, finished, history)
        answered = [r for r in emu.requests if r.operation == "UpdateImageSetMetadata"]
    assert len(finished) == len(updates)
    assert verdict.failures == 0, [repr(d.error) for d in finished if not d.ok][:3]
    assert (verdict.lost, verdict.duplicated, verdict.exactly_once) == (0, 0, len(updates))
    # stale writes were refused with the mode's answer, and the clients took it as a conflict
    stale = [r for r in answered if r.status in (404, 409)]
    expected = "ResourceNotFoundException" if mode == "not-found" else "ConflictException"
    assert len(stale) >= len(updates) // 2
    assert {r.error_code for r in stale} <= {expected, "ConflictException"}  # 409: a write while LOCKED
    assert any(r.error_code == expected for r in stale)
    assert conflicts == len(stale)
