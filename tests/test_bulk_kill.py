"""SIGKILL a journaled bulk run at random points (in its own process), resume it: every request lands once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from async_hi.document import apply_update
from async_hi.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parent.parent


def test_sigkill_at_random_points_then_resume_applies_each_request_exactly_once(tmp_path: Path) -> None:
    # no coalescing here, so each request must be exactly one version (test_bulk_journal covers coalescing)
    coalesce = False
    rng = random.Random(11)
    with EmulatorThread(lock_seconds=0.02, quotas=None) as emu:
        seeded = emu.call(lambda: emu.emulator.seed(4))
        ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
        store = emu.emulator.store
        original = emu.call(lambda: {i: store.image_set(ds, i).latest.metadata for i in isets})
        requests = []
        for n in range(48):
            attr = rng.choice(["StudyDescription", "AccessionNumber"])
            requests.append(
                {
                    "datastoreId": ds,
                    "imageSetId": rng.choice(isets),
                    "updatable": {"Study": {"DICOM": {attr: f"V{n}"}}},
                }
            )
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in requests))
        journal = tmp_path / "journal.jsonl"
        e = emu.emulator
        args = [sys.executable, "-m", "tests.bulk_child", e.endpoint_url, e.region, e.access_key_id]
        args += [e.secret_access_key, str(manifest), str(journal), str(int(coalesce))]
        # crash points: self-inflicted at exact places, then the parent's kills at random lines
        plan = ["after-send:2", "before-send:2", "after-send:2", "random", "random"]
        kills = 0
        reconciled = [0, 0]  # open intents found landed / not landed
        rc = None
        for step in range(len(plan) + 1):
            crash = plan[step] if step < len(plan) else "none"
            die = "none" if crash == "random" else crash
            child = subprocess.Popen(
                [*args, die], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert child.stdout is not None
            kill_after = rng.randint(1, 3) if crash == "random" else None
            out = []
            for lines, line in enumerate(child.stdout, start=1):
                out.append(line)
                if kill_after is not None and lines == kill_after:
                    os.kill(child.pid, signal.SIGKILL)  # mid-run: other calls may be in flight
                    break
            rc = child.wait(timeout=60)
            stderr = child.stderr.read() if child.stderr else ""
            for line in stderr.splitlines():
                if line.startswith("reconciled "):
                    reconciled[0] += int(line.split()[1])
                    reconciled[1] += int(line.split()[2])
            child.stdout.close()
            if child.stderr:
                child.stderr.close()
            if rc == 0:
                break
            assert rc == -signal.SIGKILL, "".join(out) + stderr
            kills += 1
        assert kills >= 4  # a random kill may come after the child has finished
        assert rc == 0
        # the exact crash points left calls that landed unheard, and a call never sent
        assert reconciled[0] >= 2
        assert reconciled[1] >= 1
        time.sleep(0.05)  # let the last apply finish

        def history() -> dict[str, list[dict]]:
            return {
                i: [
                    v.metadata
                    for v in store.image_set(ds, i).versions
                    if v.workflow_status != "UPDATE_FAILED"
                ]
                for i in isets
            }

        versions = emu.call(history)
    for iset in isets:
        mine = [r["updatable"] for r in requests if r["imageSetId"] == iset]
        expected = original[iset]
        for doc in mine:
            expected = apply_update(expected, doc, None)
        assert versions[iset][-1]["Study"] == expected["Study"]
        if not coalesce:
            assert len(versions[iset]) == 1 + len(mine), "a request was lost or applied twice"
            for before, after, doc in zip(versions[iset][:-1], versions[iset][1:], mine, strict=True):
                assert after["Study"] == apply_update(before, doc, None)["Study"]
        else:
            assert len(versions[iset]) <= 1 + len(mine)
