"""Stray 429s at a known quota: 5 % of requests answered 429 although the quota is not exceeded.

The emulator holds UpdateImageSetMetadata to R = 20 tps, burst 1, and answers
5 % of all requests with an injected 429 (``--fault-429 0.05``, seeded; those
use no quota, as a throttled request uses none). Every client is told the
true quota. N updates on distinct image sets; the ratio is each client's
throughput (applied updates per second, from the moment its client is open)
over async-hi's own throughput *without* faults, in the same run. A limiter
that cuts its rate on every 429 gives most of the quota away; one that tells
a lone 429 from sustained throttling keeps it (the 5 % of requests spent on
429s are lost either way).
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import (
    UPD,
    Code,
    Mode,
    Row,
    emulator,
    pick,
    progress,
    run_async,
    run_child,
    sends,
    server_requests,
)
from benchmarks.scenario_quota import told

NAME = "stray-429"
TITLE = "Known quota (20 tps, burst 1) with 5 % stray 429s"
RATE = 20.0
FAULT = 0.05


def _measure(
    spec: dict[str, Any], code: Code, *, n: int, faults: bool
) -> tuple[dict[str, Any], list[list[Any]]]:
    args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={RATE:g}/1", "--seed-count", str(n), "--seed", "1"]
    if faults:
        args += ["--fault-429", str(FAULT), "--fault-seed", "7"]
    with emulator(*args, "--series", "1", "--instances", "1") as proc:
        r = run_child({**spec, "info": proc.info}, code)
        log = run_async(server_requests(proc.endpoint_url))
    return r, log


def run(mode: Mode) -> list[Row]:
    n = pick(mode, 6, 40, 400)
    ours = {"kind": "ours", "concurrency": 16, "quotas": told(RATE)}
    contestants: list[tuple[str, Code, dict[str, Any], bool]] = [
        ("async-hi, no faults (baseline)", "after", ours, False),
        ("async-hi", "after", ours, True),
        ("async-hi before", "before", ours, True),
        (
            "aiobotocore gather, adaptive, 8 in flight",
            "after",
            {"kind": "aiobotocore", "mode": "adaptive", "concurrency": 8},
            True,
        ),
    ]
    if mode != "full":
        contestants = contestants[: 2 if mode == "tiny" else 3]
    rows: list[Row] = []
    ref: float | None = None
    for name, code, spec, faults in contestants:
        try:
            r, log = _measure(spec, code, n=n, faults=faults)
        except RuntimeError as exc:
            rows.append(Row(scenario=NAME, client=name, note=f"skipped: {exc}"[:300]))
            continue
        upd = [x for x in log if x[1] == UPD]
        ok = sum(x[2] == 200 for x in upd)
        elapsed = r["end"] - r["t0"]
        tput = ok / elapsed
        if ref is None:
            ref = tput
        injected = sum(x[5] == "throttle" for x in log)
        quota_429s = sum(x[2] == 429 for x in upd) - sum(x[5] == "throttle" for x in upd)
        row = Row(
            scenario=NAME,
            client=name,
            ratio=tput / ref,
            ratio_of="throughput / async-hi without faults",
            figures={
                "updates/s": tput,
                "of quota": tput / RATE,
                "injected 429s": injected,
                "quota 429s": quota_429s,
                "failures": r["failures"],
                "elapsed s": elapsed,
                "N": n,
            },
            series={"sends": sends(log, r["t0"]), "rate": r["rate"]},
        )
        if name == "async-hi":
            row.target = ">= 0.9"
            row.met = row.ratio is not None and row.ratio >= 0.9 and r["failures"] == 0
        progress(f"  {NAME}: {name}: {tput:.2f} updates/s ({row.ratio:.3f} of the no-fault run)")
        rows.append(row)
    return rows
