"""The one entry point, ``python -m benchmarks``: every scenario against the emulator on loopback,
one table, and JSON.

    python -m benchmarks                 # --quick: every scenario, small (under 2 minutes)
    python -m benchmarks --full          # the figures in the README (about half an hour)
    python -m benchmarks --only quota --only isolation
    python -m benchmarks --full --json results.json

Each scenario runs its contestants side by side in the same run, each against
a fresh emulator in its own process, most of them in a fresh client process
too (``benchmarks/_child.py``); "before" rows run our client as it was at
``_common.BEFORE``. The table puts each row's headline ratio first (against
the scenario's baseline), then the promised target and whether it was met,
then the absolute figures. The JSON also keeps each row's time series
(``series``: the requests the emulator saw, the limiter's rate over time).
Progress goes to stderr; the table to stdout. The exit status is 1 when any
target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from types import ModuleType

from benchmarks._common import Mode, Row, machine, machine_line, progress, table, to_json

SCENARIOS = [
    "emulator",
    "overhead",
    "quota",
    "stray_429",
    "burst_1",
    "shared_quota",
    "calls_per_update",
    "isolation",
    "contention",
    "scale",
    "fault_soak",
    "testing_reset",
]


def scenario(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.scenario_{name}")


def _name(text: str) -> str:
    key = text.replace("-", "_")
    if key not in SCENARIOS:
        raise argparse.ArgumentTypeError(f"unknown scenario {text!r}; one of {', '.join(SCENARIOS)}")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="small sizes (default)"
    )
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the published sizes")
    size.add_argument("--tiny", dest="mode", action="store_const", const="tiny", help="smoke-test sizes")
    parser.add_argument("--only", type=_name, action="append", metavar="SCENARIO", help="run only these")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and the machine here")
    args = parser.parse_args(argv)
    mode: Mode = args.mode or "quick"
    chosen = args.only or SCENARIOS
    m = machine()
    progress(f"{machine_line(m)}\nmode: {mode}; scenarios: {', '.join(chosen)}")
    rows: list[Row] = []
    start = time.monotonic()
    for name in chosen:
        mod = scenario(name)
        t0 = time.monotonic()
        progress(f"{mod.NAME}: {mod.TITLE}")
        rows.extend(mod.run(mode))
        progress(f"{mod.NAME}: {time.monotonic() - t0:.1f} s")
    seconds = time.monotonic() - start
    if mode == "tiny":  # smoke-test sizes say nothing about the targets
        for r in rows:
            r.met = None
    print(f"async-hi benchmarks ({mode}, {seconds:.0f} s); {machine_line(m)}\n")
    print(table(rows))
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed: " + "; ".join(f"{r.scenario} / {r.client}" for r in missed))
    if args.json:
        args.json.write_text(to_json(rows, mode=mode, seconds=seconds))
    return 1 if missed else 0
