"""Contention: K writers on one image set, each accepted update LOCKED for a while.

One image set with K series; writer k sets SeriesDescription of series k, so
every writer's change is visible in the final document and a lost update
cannot hide behind a later one. Quotas are off; the emulator keeps the image
set LOCKED for ``lock`` seconds after each accepted update (409 meanwhile; a
write naming a version that is no longer the latest gets the real service's 404).

Contestants (all start at once):

- async-hi ``update_many`` with coalescing: the K requests queue on one image
  set and merge into few calls.
- async-hi ``update_many`` without coalescing: one call per request, in order.
- async-hi, K independent clients (as K processes would be): they race, and
  the conflict resolver waits out LOCKED and retries.
- aiobotocore with a client-go style ``RetryOnConflict`` (re-read, retry on
  409, 5 steps 10 ms apart): the common hand-written fix. It also retries the
  real service's answer to a stale version, 404 ResourceNotFoundException "not
  the latest" (the emulator's default; healthimaging-semantics.md E1): a
  version of it that caught only 409 would fail every stale write there.

Figures: UpdateImageSetMetadata calls the emulator saw per applied change
(the ratio), p50/p99 completion from the start, lost updates (reported
applied but missing from the final document: must be 0) and failures
(reported as failed; nothing silently lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from async_hi import HealthImagingClient, MetadataUpdate, UpdateBuilder
from benchmarks import _baselines as base
from benchmarks._common import (
    UPD,
    Mode,
    Row,
    client_kwargs,
    count,
    emulator,
    percentile,
    pick,
    progress,
    run_async,
    server_stats,
    settled_history,
)
from benchmarks._ours import RUNNER, apply_all, unlimited

NAME = "contention"
TITLE = "K writers on one image set with a LOCKED window"

#: applies the K updates; returns per request (ok, seconds from the start)
Contestant = Callable[[dict[str, Any], list[MetadataUpdate]], Awaitable[list[tuple[bool, float]]]]


def _bulk(coalesce: bool) -> Contestant:
    async def go(info: dict[str, Any], updates: list[MetadataUpdate]) -> list[tuple[bool, float]]:
        async with HealthImagingClient(limiter_config=unlimited(16), **client_kwargs(info)) as hi:
            done = await apply_all(hi, updates, concurrency=8, coalesce=coalesce)
        return [(d.ok, d.seconds) for d in done]

    return go


async def _independent(info: dict[str, Any], updates: list[MetadataUpdate]) -> list[tuple[bool, float]]:
    t0 = time.monotonic()

    async def one(u: MetadataUpdate) -> tuple[bool, float]:
        async with HealthImagingClient(limiter_config=unlimited(16), **client_kwargs(info)) as hi:
            try:
                await hi.update_image_set_metadata(u)
            except Exception:
                return False, time.monotonic() - t0
        return True, time.monotonic() - t0

    return list(await asyncio.gather(*(one(u) for u in updates)))


async def _retry_on_conflict(info: dict[str, Any], updates: list[MetadataUpdate]) -> list[tuple[bool, float]]:
    t0 = time.monotonic()
    async with base.aiobotocore_client(info, pool=len(updates)) as raw:

        async def one(u: MetadataUpdate) -> tuple[bool, float]:
            for step in range(5):  # client-go retry.DefaultRetry: 5 steps, 10 ms, factor 1, jitter 0.1
                try:
                    await base.aio_update(raw, u)
                    return True, time.monotonic() - t0
                except (raw.exceptions.ConflictException, raw.exceptions.ResourceNotFoundException):
                    await asyncio.sleep(0.01 * (1 + 0.1 * (step % 2)))
                except Exception:
                    break
            return False, time.monotonic() - t0

        return list(await asyncio.gather(*(one(u) for u in updates)))


def contestants() -> list[tuple[str, Contestant]]:
    return [
        (f"async-hi {RUNNER}, coalescing", _bulk(True)),
        (f"async-hi {RUNNER}, no coalescing", _bulk(False)),
        ("async-hi, K independent clients", _independent),
        ("aiobotocore + RetryOnConflict (5 x 10 ms)", _retry_on_conflict),
    ]


async def _series(info: dict[str, Any]) -> list[str]:
    async with HealthImagingClient(limiter_config=unlimited(4), **client_kwargs(info)) as hi:
        doc = await hi.get_image_set_metadata(info["datastore_id"], info["image_set_ids"][0])
    return list(doc["Study"]["Series"])


async def _measure(fn: Contestant, *, k: int, lock: float) -> dict[str, Any]:
    args = [
        "--no-throttle",
        "--lock-seconds",
        str(lock),
        "--seed-count",
        "1",
        "--series",
        str(k),
        "--instances",
        "1",
    ]
    with emulator(*args) as proc:
        d, i = proc.info["datastore_id"], proc.info["image_set_ids"][0]
        series = await _series(proc.info)
        updates = [
            UpdateBuilder(d, i).series(s, SeriesDescription=f"W{n}").build() for n, s in enumerate(series)
        ]
        outcomes = await fn(proc.info, updates)
        stats = await server_stats(proc.endpoint_url)
        history = await settled_history(proc.endpoint_url, d, i)
    final = history[-1]["metadata"]["Study"]["Series"]
    present = [final[s]["DICOM"].get("SeriesDescription") == f"W{n}" for n, s in enumerate(series)]
    ok = [o for o, _ in outcomes]
    times = [t for _, t in outcomes]
    applied = sum(present)
    calls = count(stats, UPD)
    return {
        "calls per success": calls / applied if applied else float("nan"),
        "p50 s": percentile(times, 50),
        "p99 s": percentile(times, 99),
        "lost": sum(1 for o, p in zip(ok, present, strict=True) if o and not p),
        "failures": sum(not o for o in ok),
        "calls": calls,
        "409s": count(stats, UPD, 409),
        "404s": count(stats, UPD, 404),
        "versions": len(history) - 1,
        "K": k,
    }


def run(mode: Mode) -> list[Row]:
    k = pick(mode, 4, 8, 32)
    lock = pick(mode, 0.05, 0.1, 0.2)
    rows = []
    for name, fn in contestants():
        m = run_async(_measure(fn, k=k, lock=lock))
        progress(f"  {NAME}: {name}: {m['calls per success']:.2f} calls per success, {m['lost']} lost")
        ratio = m.pop("calls per success")
        row = Row(
            scenario=NAME,
            client=name,
            ratio=ratio,
            ratio_of="update calls per applied change",
            figures={**m, "LOCKED s": lock},
        )
        if "coalescing" in name and "no coalescing" not in name:
            row.target = "< 1, 0 lost"
            row.met = ratio < 1 and m["lost"] == 0 and m["failures"] == 0
        elif name.startswith("async-hi"):
            row.target = "0 lost"
            row.met = m["lost"] == 0 and m["failures"] == 0
        rows.append(row)
    return rows
