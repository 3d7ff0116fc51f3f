"""Scale: memory against manifest length (to 1,000,000 requests), and event-loop lag with 10,000 waiters.

Memory: each size in a fresh child process (``benchmarks/_memory_child.py``)
streams a JSON Lines manifest through ``read_manifest`` and ``update_many`` (coalescing, a journal) with an
``apply`` that answers at once; the figure is the child's peak RSS. The
ratio is peak RSS at the largest size over the smallest: flat is 1.

Lag: 10,000 tasks wait on one ``TokenBucketLimiter`` operation (50 tps,
burst 1); once all are queued, a ticker asks to wake every 10 ms for a few
seconds and records how late it wakes. Also: the rate actually granted, the
process's CPU share, the time to cancel every waiter, and whether grants came
in arrival order (FIFO).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from async_hi import LimiterConfig, Quota, TokenBucketLimiter
from benchmarks._common import Mode, Row, percentile, pick, progress, run_async

NAME = "scale"
TITLE = "Scale: RSS to 1M requests; event-loop lag with 10,000 waiting tasks"
ROOT = Path(__file__).resolve().parents[1]
TICK = 0.01


async def _lag(tasks: int, seconds: float, rate: float = 50.0) -> dict[str, Any]:
    op = "UpdateImageSetMetadata"
    limiter = TokenBucketLimiter(
        LimiterConfig(quotas={op: Quota(rate=rate, burst=1)}, max_in_flight=tasks, headroom=0.0)
    )
    order: list[int] = []
    lags: list[float] = []

    async def waiter(k: int) -> None:
        await limiter.acquire(op)
        order.append(k)
        limiter.release(op)

    waiters = [asyncio.create_task(waiter(k)) for k in range(tasks)]
    while limiter.waiting(op) + len(order) < tasks:  # every task has queued  # noqa: ASYNC110
        await asyncio.sleep(0)  # (a poll of the limiter's queue, which has no event to wait on)
    peak_waiting = limiter.waiting(op)
    granted0 = len(order)
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        due = time.perf_counter() + TICK
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - due)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    granted = len(order) - granted0
    for w in waiters:
        w.cancel()
    c0 = time.perf_counter()
    await asyncio.gather(*waiters, return_exceptions=True)
    cancel_s = time.perf_counter() - c0
    return {
        "lag p99 ms": percentile(lags, 99) * 1000,
        "lag p50 ms": percentile(lags, 50) * 1000,
        "lag max ms": max(lags) * 1000,
        "waiting": peak_waiting,
        "grants/s": granted / elapsed,
        "rate": rate,
        "CPU share": cpu / elapsed,
        "cancel all s": cancel_s,
        "FIFO": order == sorted(order),
    }


def _memory(sizes: list[int]) -> list[dict[str, Any]]:
    from benchmarks._memory_child import write_manifest

    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "m.jsonl"
            write_manifest(manifest, n)
            journal = str(Path(tmp) / "journal.jsonl")
            stdout = subprocess.run(
                [sys.executable, "-m", "benchmarks._memory_child", str(manifest), journal],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(stdout)
            progress(f"  {NAME}: {n:,} requests: peak RSS {r['peak_rss_mib']:.1f} MiB, {r['seconds']:.1f} s")
            out.append(r)
    return out


def run(mode: Mode) -> list[Row]:
    rows = []
    sizes = pick(mode, [500, 2_000], [2_000, 10_000], [10_000, 100_000, 1_000_000])
    mem = _memory(sizes)
    small, big = mem[0], mem[-1]
    ratio = big["peak_rss_mib"] / small["peak_rss_mib"]
    rows.append(
        Row(
            scenario=NAME,
            client="update_many + read_manifest + journal, apply answers at once",
            ratio=ratio,
            ratio_of=f"peak RSS at {big['requests']:,} / at {small['requests']:,} requests",
            target="<= 1.1 (flat)",
            met=ratio <= 1.1,
            figures={
                **{f"RSS MiB at {r['requests']:,}": r["peak_rss_mib"] for r in mem},
                "requests/s": big["requests"] / big["seconds"],
                "calls": big["calls"],
            },
        )
    )
    tasks, seconds = pick(mode, (1_000, 0.5), (10_000, 2.0), (10_000, 5.0))
    lag = run_async(_lag(tasks, seconds))
    progress(f"  {NAME}: lag p99 {lag['lag p99 ms']:.2f} ms with {tasks:,} waiting tasks")
    rows.append(
        Row(
            scenario=NAME,
            client=f"TokenBucketLimiter, {tasks:,} waiting tasks",
            ratio=lag["grants/s"] / lag["rate"],
            ratio_of="grant rate / configured rate",
            figures=lag,
            note="" if lag["FIFO"] else "grants were not in arrival order",
        )
    )
    return rows
