"""Isolation: GetImageSet at 20 tps through the same client as an update flood, at the real quotas.

The emulator enforces the documented defaults (UpdateImageSetMetadata 0.25
tps burst 1, GetImageSet 25 tps burst 50). A reader starts one GetImageSet
every 50 ms for ``window`` seconds (open loop); a read counts if it succeeds
within a second (a third of the window, if shorter) of the window's end. Each client runs twice on fresh
emulators: reads alone, then reads alongside a flood of updates on other image
sets. The ratio is reads per second under the flood over reads per second
alone, for the same client: async-hi keeps one bucket per operation; botocore's
adaptive mode has one bucket per client, so update throttles slow the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from async_hi import HealthImagingClient, LimiterConfig, MetadataUpdate, UpdateBuilder
from benchmarks import _baselines as base
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
    server_stats,
)
from benchmarks._ours import RUNNER, apply_all

NAME = "isolation"
TITLE = "Reads at 20 tps alongside an update flood (real default quotas)"
READ_RATE = 20.0

Read = Callable[[str, str], Awaitable[Any]]
Flood = Callable[[list[MetadataUpdate]], Awaitable[Any]]
#: opens a client; yields (read one image set, apply a flood of updates)
Opener = Callable[[dict[str, Any]], contextlib.AbstractAsyncContextManager[tuple[Read, Flood]]]


@contextlib.asynccontextmanager
async def _ours(info: dict[str, Any]) -> AsyncIterator[tuple[Read, Flood]]:
    async with HealthImagingClient(limiter_config=LimiterConfig(), **client_kwargs(info)) as hi:

        async def flood(updates: list[MetadataUpdate]) -> None:
            await apply_all(hi, updates, concurrency=8)

        yield hi.get_image_set, flood


def _aiobotocore(mode: str) -> Opener:
    @contextlib.asynccontextmanager
    async def opener(info: dict[str, Any]) -> AsyncIterator[tuple[Read, Flood]]:
        async with base.aiobotocore_client(info, mode=mode, max_attempts=20, pool=32) as raw:

            async def read(d: str, i: str) -> Any:
                return await raw.get_image_set(datastoreId=d, imageSetId=i)

            async def flood(updates: list[MetadataUpdate]) -> None:
                gate = asyncio.Semaphore(8)

                async def one(u: MetadataUpdate) -> None:
                    async with gate:
                        with contextlib.suppress(Exception):
                            await base.aio_update(raw, u)

                await asyncio.gather(*(one(u) for u in updates))

            yield read, flood

    return opener


async def _reads(read: Read, d: str, ids: list[str], window: float) -> int:
    grace = min(1.0, window / 3)  # a read started near the end still counts if it is answered soon
    t0 = time.monotonic()
    ok = 0

    async def one(i: str) -> None:
        nonlocal ok
        with contextlib.suppress(Exception):
            await read(d, i)
            if time.monotonic() - t0 <= window + grace:
                ok += 1

    tasks = []
    for k in range(int(window * READ_RATE)):
        await asyncio.sleep(max(0.0, t0 + k / READ_RATE - time.monotonic()))
        tasks.append(asyncio.create_task(one(ids[k % len(ids)])))
    await asyncio.sleep(max(0.0, t0 + window + grace - time.monotonic()))
    for t in tasks:
        t.cancel()
    # botocore's adaptive bucket can keep a cancelled read waiting for a token (at 0.5 tps): don't wait
    await asyncio.wait(tasks, timeout=1.0)
    return ok


async def _measure(opener: Opener, *, window: float, flood_size: int) -> dict[str, Any]:
    readers = 10
    args = [
        "--lock-seconds",
        "0.02",
        "--seed-count",
        str(flood_size + readers),
        "--series",
        "1",
        "--instances",
        "1",
    ]
    with emulator(*args) as proc:
        d = proc.info["datastore_id"]
        ids = proc.info["image_set_ids"]
        read_ids, flood_ids = ids[:readers], ids[readers:]
        updates = [
            UpdateBuilder(d, i).study(StudyDescription=f"F{k}").build() for k, i in enumerate(flood_ids)
        ]
        async with opener(proc.info) as (read, flood):
            flooding = asyncio.create_task(flood(updates)) if updates else None
            ok = await _reads(read, d, read_ids, window)
            if flooding is not None:
                flooding.cancel()
                await asyncio.wait([flooding], timeout=1.0)
        stats = await server_stats(proc.endpoint_url)
    return {
        "reads/s": ok / window,
        "update 200s": count(stats, UPD, 200),
        "update 429s": count(stats, UPD, 429),
        "read 429s": count(stats, GET, 429),
    }


def _run_abandoning(coro: Any) -> Any:
    """Run ``coro`` on a fresh loop; tasks still pending afterwards are dropped, not awaited."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed but it is pending"
        loop.close()


def run(mode: Mode) -> list[Row]:
    window = pick(mode, 0.6, 2.5, 20.0)
    flood_size = pick(mode, 4, 40, 100)
    openers: list[tuple[str, Opener]] = [
        (f"async-hi {RUNNER}", _ours),
        ("aiobotocore, adaptive retries", _aiobotocore("adaptive")),
    ]
    if mode != "quick":
        openers.append(("aiobotocore, standard retries", _aiobotocore("standard")))
    rows = []
    for name, opener in openers:
        alone = _run_abandoning(_measure(opener, window=window, flood_size=0))
        flooded = _run_abandoning(_measure(opener, window=window, flood_size=flood_size))
        ratio = flooded["reads/s"] / alone["reads/s"] if alone["reads/s"] else float("nan")
        progress(
            f"  {NAME}: {name}: reads {alone['reads/s']:.1f}/s alone, {flooded['reads/s']:.1f}/s flooded"
        )
        row = Row(
            scenario=NAME,
            client=name,
            ratio=ratio,
            ratio_of="reads/s flooded / alone",
            figures={
                "reads/s flooded": flooded["reads/s"],
                "reads/s alone": alone["reads/s"],
                "update 200s": flooded["update 200s"],
                "update 429s": flooded["update 429s"],
                "read 429s": flooded["read 429s"],
                "window s": window,
                "flood": flood_size,
            },
        )
        if name.startswith("async-hi"):
            row.target = ">= 0.95"
            row.met = ratio >= 0.95
        rows.append(row)
    return rows
