"""Every benchmark runs at tiny size, so none of them rots (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._runner import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args: str) -> str:
    cmd = [sys.executable, "-m", module, *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.timeout(520)  # about a minute on a quiet machine: ~20 client and emulator processes
def test_every_scenario_runs_at_tiny_size(tmp_path: Path) -> None:
    out = run("benchmarks", "--tiny", "--json", str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["mode"] == "tiny"
    assert data["machine"]["cores"] >= 1
    rows = data["rows"]
    seen = {r["scenario"].split()[0].replace("-", "_") for r in rows}
    assert seen == set(SCENARIOS)
    for r in rows:
        # a row either measured something or says why it was skipped
        assert r["figures"] or r["note"].startswith("skipped"), r
        assert r["met"] is None  # tiny sizes judge no target
    # correctness figures hold even at tiny size: nothing lost or duplicated anywhere
    for r in rows:
        for key in ("lost", "duplicated"):
            assert r["figures"].get(key, 0) == 0, r
    # the time series behind the figures are kept for plots
    quota = [r for r in rows if r["scenario"].startswith("quota") and not r["note"]]
    assert quota
    assert all(r["series"]["sends"] for r in quota)
    soak = [r for r in rows if r["scenario"] == "fault-soak"]
    assert soak
    assert all(r["ratio"] == 1.0 for r in soak)
    # the printed table: machine line, then a header and one line per row
    lines = out.splitlines()
    assert "cores" in lines[0]
    assert sum(line.startswith("| ") for line in lines) == len(rows) + 1
