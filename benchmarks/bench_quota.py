"""Goodput under an update quota: async-hi against plain aiobotocore, side by side, in one run.

N updates on N distinct image sets against the emulator (in a child process,
as a remote service would be) enforcing UpdateImageSetMetadata at R tps with a burst of 1. For each
client: completion time over the ideal ``(N - burst) / R``, 429s per success,
and failed updates. Not a test: run it and read the table::

    python benchmarks/bench_quota.py            # N=100, R=4 (about 2.5 minutes)
    python benchmarks/bench_quota.py --quick    # N=20: a smoke run

Clients:

- ``async-hi, quota known``: the client told the true quota (R).
- ``async-hi, starts at 2x``: told twice the true quota; it must adapt on 429s.
- ``aiobotocore gather, standard``: ``retries={'mode': 'standard', 'max_attempts': 20}``.
- ``aiobotocore gather, adaptive``: ``retries={'mode': 'adaptive', 'max_attempts': 20}``.

The aiobotocore baselines read the version, then write, ``--in-flight`` at a time
(a semaphore over ``asyncio.gather``). Every run is timed from the moment its
client is open until its last update is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from async_hi import HealthImagingClient, LimiterConfig, Quota, UpdateBuilder
from async_hi.contract import DEFAULT_QUOTAS
from async_hi.emulator import EmulatorProcess

UPD = "UpdateImageSetMetadata"


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    client: str
    n: int
    elapsed: float
    ideal: float
    throttles: int
    successes: int
    failures: int

    @property
    def ratio(self) -> float:
        return self.elapsed / self.ideal if self.ideal > 0 else float("nan")

    @property
    def per_success(self) -> float:
        return self.throttles / self.successes if self.successes else float("nan")


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A running emulator process and the image sets it seeded."""

    info: dict[str, Any]

    @property
    def datastore_id(self) -> str:
        return str(self.info["datastore_id"])

    @property
    def image_set_ids(self) -> list[str]:
        return list(self.info["image_set_ids"])


#: runs the N updates; returns (failures, the moment its client was open)
Runner = Callable[[Target, float], Awaitable[tuple[int, float]]]


def _kwargs(t: Target) -> dict[str, str]:
    return {k: t.info[k] for k in ("endpoint_url", "region", "aws_access_key_id", "aws_secret_access_key")}


def _ours(told_rate: float) -> Runner:
    async def run(seeded: Target, rate: float) -> tuple[int, float]:
        config = LimiterConfig(quotas={**DEFAULT_QUOTAS, UPD: Quota(rate=told_rate * rate, burst=1)})
        failures = 0
        async with HealthImagingClient(limiter_config=config, **_kwargs(seeded)) as hi:
            t0 = time.monotonic()

            async def one(n: int, i: str) -> None:
                nonlocal failures
                try:
                    u = UpdateBuilder(seeded.datastore_id, i).study(StudyDescription=f"B{n}").build()
                    await hi.update_image_set_metadata(u)
                except Exception:
                    failures += 1

            await asyncio.gather(*(one(n, i) for n, i in enumerate(seeded.image_set_ids)))
        return failures, t0

    return run


def _aiobotocore(mode: str, in_flight: int) -> Runner:
    async def run(seeded: Target, rate: float) -> tuple[int, float]:
        kw = _kwargs(seeded)
        config = AioConfig(
            inject_host_prefix=False,
            retries={"mode": mode, "max_attempts": 20},  # type: ignore[typeddict-item]
            max_pool_connections=max(10, in_flight),
        )
        failures = 0
        gate = asyncio.Semaphore(in_flight)
        async with get_session().create_client(
            "medical-imaging",
            region_name=kw["region"],
            endpoint_url=kw["endpoint_url"],
            aws_access_key_id=kw["aws_access_key_id"],
            aws_secret_access_key=kw["aws_secret_access_key"],
            config=config,
        ) as raw:
            t0 = time.monotonic()

            async def one(n: int, i: str) -> None:
                nonlocal failures
                d = seeded.datastore_id
                u = UpdateBuilder(d, i).study(StudyDescription=f"B{n}").build()
                async with gate:
                    try:
                        info = await raw.get_image_set(datastoreId=d, imageSetId=i)
                        await raw.update_image_set_metadata(
                            datastoreId=d,
                            imageSetId=i,
                            latestVersionId=info["versionId"],
                            updateImageSetMetadataUpdates=u.payload(),  # type: ignore[typeddict-item]
                        )
                    except Exception:
                        failures += 1

            await asyncio.gather(*(one(n, i) for n, i in enumerate(seeded.image_set_ids)))
        return failures, t0

    return run


async def _scenario(name: str, runner: Runner, *, n: int, rate: float) -> Row:
    args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={rate:g}/1", "--seed-count", str(n), "--seed", "1"]
    with EmulatorProcess(args) as proc:
        target = Target(proc.info)
        assert len(target.image_set_ids) == n
        failures, t0 = await runner(target, rate)
        elapsed = time.monotonic() - t0
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{proc.endpoint_url}/_emulator/stats")).json()["requests"]
    return Row(
        client=name,
        n=n,
        elapsed=elapsed,
        ideal=(n - 1) / rate,
        throttles=stats.get(f"{UPD} 429", 0),
        successes=stats.get(f"{UPD} 200", 0),
        failures=failures,
    )


def table(rows: list[Row], rate: float) -> str:
    head = (
        f"| client (update quota {rate:g} tps, burst 1) | N | elapsed / ideal | ratio "
        "| 429s per success | failures |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.client} | {r.n} | {r.elapsed:.2f} s / {r.ideal:.2f} s | {r.ratio:.3f} "
            f"| {r.per_success:.3f} ({r.throttles}) | {r.failures} |"
        )
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="updates (distinct image sets)")
    parser.add_argument("--rate", type=float, default=4.0, help="the emulator's update quota, tps")
    parser.add_argument("--in-flight", type=int, default=8, help="concurrency of the aiobotocore baselines")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=20")
    parser.add_argument("--only", choices=["ours", "all"], default="all", help="skip the baselines")
    args = parser.parse_args(argv)
    n = 20 if args.quick and args.n == 100 else args.n
    if n < 2:
        parser.error("-n must be at least 2")
    scenarios: list[tuple[str, Runner]] = [
        ("async-hi, quota known", _ours(1.0)),
        ("async-hi, starts at 2x (adapts)", _ours(2.0)),
    ]
    if args.only == "all":
        scenarios += [
            (
                f"aiobotocore gather, standard, {args.in_flight} in flight",
                _aiobotocore("standard", args.in_flight),
            ),
            (
                f"aiobotocore gather, adaptive, {args.in_flight} in flight",
                _aiobotocore("adaptive", args.in_flight),
            ),
        ]
    rows = []
    for name, runner in scenarios:
        rows.append(await _scenario(name, runner, n=n, rate=args.rate))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(table(rows, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
