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
        # crash points: self-inflicted at exact places (one in the middle of reconciling the calls
        # the previous crash left open), then the parent's kills at random lines
        plan = ["after-send:2", "reconcile:2", "before-send:2", "after-send:2", "random", "random"]
        kills = 0
        reconciled = [0, 0]  # open intents found landed / not landed
        killed_reconciling = 0  # runs killed while open intents were being settled
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
            if crash.startswith("reconcile:") and "reconciled " not in stderr:
                assert stderr.startswith("reconciling "), stderr
                assert int(stderr.split()[1]) >= 1, stderr
                killed_reconciling += 1
            child.stdout.close()
            if child.stderr:
                child.stderr.close()
            if rc == 0:
                break
            assert rc == -signal.SIGKILL, "".join(out) + stderr
            kills += 1
        assert kills >= 5  # a random kill may come after the child has finished
        assert killed_reconciling == 1
        assert rc == 0
        assert '"t":"failed"' not in journal.read_text()  # nothing marked failed
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


def test_redis_outage_mid_run_then_sigkill_then_resume_applies_each_request_exactly_once(
    tmp_path: Path,
) -> None:
    """``async-hi update --redis`` (fail-closed): Redis stops mid-run, then a SIGKILL, then a resume."""
    from tests.redis_server import RedisServer

    rng = random.Random(5)
    with EmulatorThread(lock_seconds=0.02, quotas=None) as emu, RedisServer(tmp_path) as redis:
        seeded = emu.call(lambda: emu.emulator.seed(4))
        ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
        store = emu.emulator.store
        original = emu.call(lambda: {i: store.image_set(ds, i).latest.metadata for i in isets})
        requests = [
            {
                "datastoreId": ds,
                "imageSetId": rng.choice(isets),
                "updatable": {
                    "Study": {"DICOM": {rng.choice(["StudyDescription", "AccessionNumber"]): f"V{n}"}}
                },
            }
            for n in range(48)
        ]
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in requests))
        journal = tmp_path / "run.journal"
        e = emu.emulator
        env = dict(os.environ) | {
            "AWS_ACCESS_KEY_ID": e.access_key_id,
            "AWS_SECRET_ACCESS_KEY": e.secret_access_key,
        }
        cmd = [sys.executable, "-m", "async_hi", "update", str(manifest), "--journal", str(journal), "--json"]
        cmd += ["--endpoint-url", e.endpoint_url, "--region", e.region, "--rate", "20", "--no-coalesce"]
        cmd += ["--concurrency", "3", "--redis", redis.url]

        def versions() -> int:
            return sum(emu.call(lambda: [len(store.image_set(ds, i).versions) for i in isets]))

        def start_and_wait_for(more: int) -> subprocess.Popen[str]:
            target = versions() + more
            child = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            deadline = time.monotonic() + 60
            while versions() < target:
                assert time.monotonic() < deadline
                assert child.poll() is None, child.communicate()
                time.sleep(0.02)
            return child

        # 1. Redis stops mid-run: sending stops, nothing is marked failed, one clear message, exit 2
        child = start_and_wait_for(8)
        redis.stop()
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 2, stderr
        (line,) = stdout.splitlines()
        first = json.loads(line)
        assert first["exit_code"] == 2
        assert "Redis is unreachable" in first["error"]
        assert first["failed"] == 0
        assert first["cancelled"] > 0
        assert stderr.count("async-hi update:") == 1
        assert stderr.count("could not record") <= 1
        assert '"t":"failed"' not in journal.read_text()
        # 2. Redis is back: the resume goes on, and is SIGKILLed mid-run
        redis.start()
        child = start_and_wait_for(6)
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
        # 3. the last resume finishes: no --retry-failed needed, nothing failed earlier
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        last = json.loads(done.stdout)
        assert (last["failed"], last["previously_failed"]) == (0, 0)
        assert last["applied"] + last["skipped"] == 48
        assert '"t":"failed"' not in journal.read_text()
        time.sleep(0.05)  # let the last apply finish
        history = emu.call(
            lambda: {
                i: [
                    v.metadata
                    for v in store.image_set(ds, i).versions
                    if v.workflow_status != "UPDATE_FAILED"
                ]
                for i in isets
            }
        )
    for iset in isets:
        mine = [r["updatable"] for r in requests if r["imageSetId"] == iset]
        assert len(history[iset]) == 1 + len(mine), "a request was lost or applied twice"
        expected = original[iset]
        for before, after, doc in zip(history[iset][:-1], history[iset][1:], mine, strict=True):
            assert after["Study"] == apply_update(before, doc, None)["Study"]
            expected = apply_update(expected, doc, None)
        assert history[iset][-1]["Study"] == expected["Study"]
