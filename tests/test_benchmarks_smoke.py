"""Every benchmark runs at tiny size, so none of them rots (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args: str) -> str:
    cmd = [sys.executable, "-m", module, *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_bench_emulator_smoke() -> None:
    out = run("benchmarks.bench_emulator", "--updates", "40", "--concurrency", "8")
    assert "updates/s" in out
    assert "on (default)" in out
