"""The runnable examples run (against the embedded emulator), so they never rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_one_update() -> None:
    out = run_example("one_update.py", "--description", "EXAMPLE")
    assert "version 1 -> 2, UPDATED" in out
    assert "throttled: 0" in out


def test_trio_program() -> None:
    out = run_example("trio_program.py")
    assert out.count("version 2 UPDATED") == 3


@pytest.mark.parametrize("select", [["RV", "SR"]])
def test_conformance_run(select: list[str]) -> None:
    out = run_example("conformance_run.py", "--select", *select)
    assert "'fail': 0" in out


def test_bulk_with_rebase() -> None:
    out = run_example("bulk_with_rebase.py")
    # the other writer's change, rebased and title-cased on top of it
    assert "StudyDescription now 'Mri Knee By Other System'" in out
    # already title case: the update is dropped, not overwritten with the stale snapshot
    assert "StudyDescription now 'Abdomen From Pacs'" in out
    assert "dropped" in out
    assert out.count("StudyDescription now") == 6
    finals = [line.split("now ", 1)[1] for line in out.splitlines() if "StudyDescription now" in line]
    assert all(f == f.title() for f in finals)
