"""Fault soak: thousands of updates while the emulator injects 5 % 500s, 5 % 429s, 2 % dropped
connections and 2 % "applied but the response lost".

The emulator runs in its own process, quotas off, a 10 ms LOCKED window;
updates go round-robin over image sets, several per image set, through
``update_many`` and the client. Afterwards every image set's history is
checked (``benchmarks/_soak.py``): each request applied exactly once, none
lost, no version written twice. Also reported: the retries the client made
and the wasted update calls (calls that created no version).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from async_hi import HealthImagingClient
from benchmarks._common import (
    GET,
    UPD,
    Mode,
    Row,
    client_kwargs,
    count,
    emulator,
    pick,
    progress,
    run_async,
    server_history,
    server_stats,
)
from benchmarks._ours import RUNNER, apply_all, unlimited
from benchmarks._soak import FAULT_ARGS, soak_updates, verify

NAME = "fault-soak"
TITLE = "Fault soak: exactly once under 500s, 429s, drops and lost answers"


async def _soak(n_sets: int, per_set: int, coalesce: bool) -> dict[str, Any]:
    args = ["--no-throttle", "--lock-seconds", "0.01", "--seed-count", str(n_sets), "--fault-seed", "3"]
    with emulator(*args, "--series", "1", "--instances", "1", *FAULT_ARGS) as proc:
        d, ids = proc.info["datastore_id"], proc.info["image_set_ids"]
        updates = soak_updates(d, ids, per_set)
        t0 = time.monotonic()
        async with HealthImagingClient(limiter_config=unlimited(32), **client_kwargs(proc.info)) as hi:
            done = await apply_all(hi, updates, concurrency=32, coalesce=coalesce)
            stats = hi.stats()
        elapsed = time.monotonic() - t0

        async with httpx.AsyncClient(timeout=30) as http:

            async def history(d: str, i: str) -> list[dict[str, Any]]:
                return await server_history(proc.endpoint_url, d, i, http=http)

            verdict = await verify(updates, done, history)
        server = await server_stats(proc.endpoint_url)
    calls = count(server, UPD)
    return {
        "verdict": verdict,
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "failures": verdict.failures,
        "requests": verdict.requests,
        "versions": verdict.versions,
        "update calls": calls,
        "wasted calls": calls - verdict.versions,
        "update retries": stats[UPD].retries if UPD in stats else 0,
        "read retries": stats[GET].retries if GET in stats else 0,
        "faults": {k: count(server, op, s) for k, op, s in (("500", UPD, 500), ("429", UPD, 429))},
        "seconds": elapsed,
    }


def run(mode: Mode) -> list[Row]:
    n_sets, per_set = pick(mode, (10, 2), (60, 3), (500, 6))
    rows = []
    for coalesce in (False, True):
        m = run_async(_soak(n_sets, per_set, coalesce))
        v = m.pop("verdict")
        name = f"async-hi {RUNNER}, {'coalescing' if coalesce else 'no coalescing'}"
        progress(
            f"  {NAME}: {name}: {v.exactly_once}/{v.requests} exactly once, {v.lost} lost, {v.duplicated} dup"
        )
        faults = m.pop("faults")
        rows.append(
            Row(
                scenario=NAME,
                client=name,
                ratio=v.exactly_once / v.requests,
                ratio_of="requests applied exactly once",
                target="1.0, 0 lost, 0 duplicated",
                met=v.ok,
                figures={**m, "update 500s": faults["500"], "update 429s": faults["429"]},
            )
        )
    return rows
