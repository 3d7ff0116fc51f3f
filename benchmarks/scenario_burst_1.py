"""A high burst-1 quota: 50 tps, where 2 % headroom is 0.4 ms, below the event loop's jitter.

The emulator holds UpdateImageSetMetadata to 50 tps with a burst of 1 (it
refuses any update that arrives closer than 20 ms to the last one it
accepted) and GetImageSet to 500/500 (so reads never limit). N updates on
distinct image sets; every client is told the true quotas. The ratio is the
share of the quota used: ideal ``(N - 1) / R`` over the time from the moment
the client is open to the last answer. Figures: 429s (target 0), the closest
two update arrivals the emulator saw, and the limiter's measured timer
lateness (90th percentile), which sizes its margin.
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import (
    GET,
    UPD,
    Code,
    Mode,
    Row,
    arrival_gaps,
    emulator,
    pick,
    progress,
    run_async,
    run_child,
    sends,
    server_requests,
)
from benchmarks.scenario_quota import told

NAME = "burst-1"
TITLE = "50 tps, burst 1: sends spaced in absolute time"
RATE = 50.0


def run(mode: Mode) -> list[Row]:
    n = pick(mode, 10, 100, 1000)
    quotas = told(RATE)
    quotas[GET] = [500.0, 500]
    ours = {"kind": "ours", "concurrency": 16, "quotas": quotas}
    contestants: list[tuple[str, Code, dict[str, Any]]] = [
        ("async-hi", "after", ours),
        ("async-hi before", "before", ours),
        (
            "aiobotocore gather, adaptive, 16 in flight",
            "after",
            {"kind": "aiobotocore", "mode": "adaptive", "concurrency": 16},
        ),
    ]
    rows = []
    for name, code, spec in contestants[: pick(mode, 1, 2, 3)]:
        args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={RATE:g}/1", "--quota", f"{GET}=500/500"]
        try:
            with emulator(
                *args, "--seed-count", str(n), "--seed", "1", "--series", "1", "--instances", "1"
            ) as proc:
                r = run_child({**spec, "info": proc.info}, code)
                log = run_async(server_requests(proc.endpoint_url))
        except RuntimeError as exc:
            rows.append(Row(scenario=NAME, client=name, note=f"skipped: {exc}"[:300]))
            continue
        upd = [x for x in log if x[1] == UPD]
        throttles = sum(x[2] == 429 for x in upd)
        elapsed = r["end"] - r["t0"]
        ratio = (n - 1) / RATE / elapsed
        gaps = arrival_gaps(log)
        row = Row(
            scenario=NAME,
            client=name,
            ratio=ratio,
            ratio_of="of quota ((N - 1) / R / elapsed)",
            figures={
                "429s": throttles,
                "failures": r["failures"],
                "closest arrivals ms": min(gaps) * 1000 if gaps else float("nan"),
                "measured jitter ms": r["jitter_ms"] if r["jitter_ms"] is not None else float("nan"),
                "elapsed s": elapsed,
                "N": n,
            },
            series={"sends": sends(log, r["t0"], UPD), "rate": r["rate"]},
        )
        if name == "async-hi":
            row.target = ">= 0.97, 0 429s"
            row.met = ratio >= 0.97 and throttles == 0 and r["failures"] == 0
        progress(f"  {NAME}: {name}: {ratio:.3f} of the quota, {throttles} 429s")
        rows.append(row)
    return rows
