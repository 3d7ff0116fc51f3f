"""Goodput under an update quota, standalone (the ``quota`` scenario of ``python -m benchmarks``).

    python -m benchmarks.bench_quota            # N=100, R=4 (about 2.5 minutes)
    python -m benchmarks.bench_quota --quick    # N=20: a smoke run

See ``benchmarks/scenario_quota.py`` for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks.scenario_quota import contestants, measure, table


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
    chosen = contestants(args.in_flight)
    if args.only == "ours":
        chosen = [c for c in chosen if c[0].startswith("async-hi")]
    runs = []
    for name, runner in chosen:
        runs.append(await measure(name, runner, n=n, rate=args.rate))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
