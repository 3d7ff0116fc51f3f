"""Goodput under an update quota (burst 1): async-hi after and before, and aiobotocore, side by side.

N updates on N distinct image sets against the emulator (in a child process,
as a remote service would be) enforcing UpdateImageSetMetadata at R tps with a
burst of 1. Each contestant is a fresh process (``benchmarks/_child.py``),
timed from the moment its client is open until its last update is answered;
the ratio is that time over the ideal ``(N - 1) / R`` (the first update at once).

Two parts:

- **0.25 tps** (the real default), N = 5, a fresh client: the first update
  must go at once (the in-process bucket starts with its burst).
- **4 tps**, N = 100: told the quota (``quota known``) and told twice it
  (``told 2x``: it must adapt on 429s).

Contestants: ``async-hi`` (the code under test), ``async-hi before`` (main at
the start of this work, ``_common.BEFORE``), and aiobotocore reading then
writing ``in_flight`` at a time with botocore's ``adaptive`` and ``standard``
retries (20 attempts). Figures from the emulator's own request log: 429s,
when the first update arrived after the client was open.
"""

from __future__ import annotations

from typing import Any

from async_hi.contract import DEFAULT_QUOTAS
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

NAME = "quota"
TITLE = "Goodput under an update quota (burst 1), and the first request at once"
IN_FLIGHT = 8


def told(rate: float) -> dict[str, list[float]]:
    """The documented quotas, with UpdateImageSetMetadata at ``rate``, burst 1."""
    quotas = {op: [q.rate, q.burst] for op, q in DEFAULT_QUOTAS.items()}
    quotas[UPD] = [rate, 1]
    return quotas


def contestants(rate: float) -> list[tuple[str, Code, dict[str, Any]]]:
    ours = {"kind": "ours", "concurrency": 16}
    return [
        ("async-hi, quota known", "after", {**ours, "quotas": told(rate)}),
        ("async-hi before, quota known", "before", {**ours, "quotas": told(rate)}),
        ("async-hi, told 2x (adapts)", "after", {**ours, "quotas": told(2 * rate)}),
        ("async-hi before, told 2x (adapts)", "before", {**ours, "quotas": told(2 * rate)}),
        (
            f"aiobotocore gather, adaptive, {IN_FLIGHT} in flight",
            "after",
            {"kind": "aiobotocore", "mode": "adaptive", "concurrency": IN_FLIGHT},
        ),
        (
            f"aiobotocore gather, standard, {IN_FLIGHT} in flight",
            "after",
            {"kind": "aiobotocore", "mode": "standard", "concurrency": IN_FLIGHT},
        ),
    ]


def measure(name: str, code: Code, spec: dict[str, Any], *, n: int, rate: float) -> Row:
    """One contestant against a fresh emulator enforcing ``rate`` tps, burst 1."""
    args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={rate:g}/1", "--seed-count", str(n), "--seed", "1"]
    with emulator(*args, "--series", "1", "--instances", "1") as proc:
        r = run_child({**spec, "info": proc.info}, code)
        log = run_async(server_requests(proc.endpoint_url))
    upd = [x for x in log if x[1] == UPD]
    ok = sum(x[2] == 200 for x in upd)
    throttles = sum(x[2] == 429 for x in upd)
    elapsed = r["end"] - r["t0"]
    ideal = (n - 1) / rate
    first = min((x[0] for x in upd), default=float("nan")) - r["t0"]
    row = Row(
        scenario=f"{NAME} {rate:g} tps",
        client=name,
        ratio=elapsed / ideal,
        ratio_of="elapsed / ideal",
        figures={
            "429s per success": throttles / ok if ok else float("nan"),
            "429s": throttles,
            "failures": r["failures"],
            "first update s": first,
            "elapsed s": elapsed,
            "ideal s": ideal,
            "N": n,
        },
        series={"sends": sends(log, r["t0"]), "rate": r["rate"]},
    )
    if name.startswith("async-hi,") and "quota known" in name:
        row.target = "<= 1.05, 0 429s"
        row.met = row.ratio is not None and row.ratio <= 1.05 and throttles == 0 and r["failures"] == 0
    elif name.startswith("async-hi,") and "adapts" in name:
        row.target = "<= 1.2, <= 0.1 429s/success"
        per = row.figures["429s per success"]
        row.met = row.ratio is not None and row.ratio <= 1.2 and per <= 0.1 and r["failures"] == 0
    progress(f"  {NAME}: {name} at {rate:g} tps: {row.ratio:.3f} x ideal, {throttles} 429s")
    return row


def run(mode: Mode) -> list[Row]:
    rows = []
    # the real default quota with a fresh client: the first update must go at once
    n_default, rate_default = pick(mode, (2, 20.0), (2, 0.25), (5, 0.25))
    chosen = contestants(rate_default)
    at_default = [chosen[0], chosen[1], chosen[4]]  # quota known, before, aiobotocore adaptive
    if mode != "full":
        at_default = at_default[:1]
    for name, code, spec in at_default:
        rows.append(_safely(name, code, spec, n=n_default, rate=rate_default))
    n, rate = pick(mode, (3, 20.0), (12, 8.0), (100, 4.0))
    for k, (name, code, spec) in enumerate(contestants(rate)):
        quick_skip = mode == "quick" and ((code == "before" and "adapts" in name) or "standard" in name)
        if quick_skip or (mode == "tiny" and k > 1):
            continue
        rows.append(_safely(name, code, spec, n=n, rate=rate))
    return rows


def _safely(name: str, code: Code, spec: dict[str, Any], *, n: int, rate: float) -> Row:
    try:
        return measure(name, code, spec, n=n, rate=rate)
    except RuntimeError as exc:  # e.g. no "before" tree in a shallow clone
        return Row(scenario=f"{NAME} {rate:g} tps", client=name, note=f"skipped: {exc}"[:300])
