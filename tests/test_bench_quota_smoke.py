"""The quota benchmark still runs (tiny N, no timing asserted): it must not rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quota_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_quota.py", "--quick", "-n", "3", "--rate", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "client" not in line]
    assert len(rows) == 4
    assert rows[0].startswith("| async-hi, quota known | 3 |")
    assert all(line.rstrip().endswith("| 0 |") for line in rows)  # no failed update anywhere
