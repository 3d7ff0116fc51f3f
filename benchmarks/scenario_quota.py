"""Goodput under an update quota: async-hi against plain aiobotocore, side by side, in one run.

N updates on N distinct image sets against the emulator (in a child process,
as a remote service would be) enforcing UpdateImageSetMetadata at R tps with a
burst of 1. For each client: completion time over the ideal ``(N - burst) / R``,
429s per success, and failed updates. Every run is timed from the moment its
client is open until its last update is answered.

Clients:

- ``async-hi, quota known``: the client told the true quota (R).
- ``async-hi, told 2x (adapts)``: told twice the true quota; it must adapt on 429s.
- ``aiobotocore gather, adaptive``: ``retries={'mode': 'adaptive', 'max_attempts': 20}``.
- ``aiobotocore gather, standard``: ``retries={'mode': 'standard', 'max_attempts': 20}``
  (the naive fan-out).

The aiobotocore baselines read the version, then write, ``in_flight`` at a
time (a semaphore over ``asyncio.gather``). A second, short part runs at the
real default quota, 0.25 tps.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    pick,
    progress,
    run_async,
    server_stats,
)
from benchmarks._ours import RUNNER, apply_all, quota_config

NAME = "quota"
TITLE = "Goodput under an update quota (burst 1)"


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaRun:
    """One client's run at one quota."""

    client: str
    n: int
    rate: float
    elapsed: float
    throttles: int
    successes: int
    failures: int

    @property
    def ideal(self) -> float:
        return (self.n - 1) / self.rate

    @property
    def ratio(self) -> float:
        return self.elapsed / self.ideal if self.ideal > 0 else float("nan")

    @property
    def per_success(self) -> float:
        return self.throttles / self.successes if self.successes else float("nan")


#: runs the N updates against the emulator's info; returns (failures, the moment its client was open)
Runner = Callable[[dict[str, Any], float], Awaitable[tuple[int, float]]]


def _updates(info: dict[str, Any]) -> list[MetadataUpdate]:
    d = info["datastore_id"]
    return [
        UpdateBuilder(d, i).study(StudyDescription=f"B{n}").build()
        for n, i in enumerate(info["image_set_ids"])
    ]


def ours(told: float) -> Runner:
    """async-hi told ``told`` times the true quota."""

    async def go(info: dict[str, Any], rate: float) -> tuple[int, float]:
        updates = _updates(info)
        async with HealthImagingClient(limiter_config=quota_config(told * rate), **client_kwargs(info)) as hi:
            t0 = time.monotonic()
            done = await apply_all(hi, updates, concurrency=16)
        return sum(not d.ok for d in done), t0

    return go


def aiobotocore(mode: str, in_flight: int) -> Runner:
    """aiobotocore with botocore's ``mode`` retries (20 attempts), ``in_flight`` at a time."""

    async def go(info: dict[str, Any], rate: float) -> tuple[int, float]:
        updates = _updates(info)
        failures = 0
        gate = asyncio.Semaphore(in_flight)
        async with base.aiobotocore_client(info, mode=mode, max_attempts=20, pool=in_flight) as raw:
            t0 = time.monotonic()

            async def one(u: MetadataUpdate) -> None:
                nonlocal failures
                async with gate:
                    try:
                        await base.aio_update(raw, u)
                    except Exception:
                        failures += 1

            await asyncio.gather(*(one(u) for u in updates))
        return failures, t0

    return go


def contestants(in_flight: int = 8) -> list[tuple[str, Runner]]:
    return [
        (f"async-hi {RUNNER}, quota known", ours(1.0)),
        (f"async-hi {RUNNER}, told 2x (adapts)", ours(2.0)),
        (f"aiobotocore gather, adaptive, {in_flight} in flight", aiobotocore("adaptive", in_flight)),
        (f"aiobotocore gather, standard, {in_flight} in flight", aiobotocore("standard", in_flight)),
    ]


async def measure(name: str, runner: Runner, *, n: int, rate: float) -> QuotaRun:
    """One client's run against a fresh emulator enforcing ``rate`` tps, burst 1."""
    args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={rate:g}/1", "--seed-count", str(n), "--seed", "1"]
    with emulator(*args, "--series", "1", "--instances", "1") as proc:
        failures, t0 = await runner(proc.info, rate)
        elapsed = time.monotonic() - t0
        stats = await server_stats(proc.endpoint_url)
    return QuotaRun(
        client=name,
        n=n,
        rate=rate,
        elapsed=elapsed,
        throttles=count(stats, UPD, 429),
        successes=count(stats, UPD, 200),
        failures=failures,
    )


def _row(r: QuotaRun) -> Row:
    row = Row(
        scenario=f"{NAME} {r.rate:g} tps",
        client=r.client,
        ratio=r.ratio,
        ratio_of="elapsed / ideal",
        figures={
            "429s per success": r.per_success,
            "429s": r.throttles,
            "failures": r.failures,
            "elapsed s": r.elapsed,
            "ideal s": r.ideal,
            "N": r.n,
        },
    )
    if "quota known" in r.client:
        row.target = "<= 1.05, 0 429s"
        row.met = r.ratio <= 1.05 and r.throttles == 0 and r.failures == 0
    elif "adapts" in r.client:
        row.target = "<= 1.2, <= 0.1 429s/success"
        row.met = r.ratio <= 1.2 and r.per_success <= 0.1 and r.failures == 0
    return row


def run(mode: Mode) -> list[Row]:
    n, rate = pick(mode, (3, 20.0), (16, 8.0), (100, 4.0))
    rows = []
    for name, runner in contestants():
        r = run_async(measure(name, runner, n=n, rate=rate))
        progress(f"  {NAME}: {name}: {r.ratio:.3f} x ideal, {r.throttles} 429s")
        rows.append(_row(r))
    # the real default quota: slow by nature, so few updates
    n_default, rate_default = pick(mode, (2, 20.0), (2, 0.25), (6, 0.25))
    at_default = contestants()[::2]  # quota known; aiobotocore adaptive
    for name, runner in at_default[:1] if mode == "quick" else at_default:
        r = run_async(measure(name, runner, n=n_default, rate=rate_default))
        progress(f"  {NAME}: {name} at {rate_default:g} tps: {r.ratio:.3f} x ideal, {r.throttles} 429s")
        rows.append(_row(r))
    return rows


def table(runs: list[QuotaRun]) -> str:
    """The standalone table of ``python -m benchmarks.bench_quota``."""
    rate = runs[0].rate if runs else 0.0
    lines = [
        f"| client (update quota {rate:g} tps, burst 1) | N | elapsed / ideal | ratio "
        "| 429s per success | failures |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.client} | {r.n} | {r.elapsed:.2f} s / {r.ideal:.2f} s | {r.ratio:.3f} "
            f"| {r.per_success:.3f} ({r.throttles}) | {r.failures} |"
        )
    return "\n".join(lines)
