"""``async-hi update`` and ``async-hi demo`` end to end, and update_many wired to the real client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from async_hi._bulk import update_many
from async_hi._client import HealthImagingClient
from async_hi._journal import Journal
from async_hi._limiter import LimiterConfig
from async_hi._reconcile import ClientVersionReader, reconcile
from async_hi._updates import MetadataUpdate
from async_hi.contract import DEFAULT_QUOTAS, Quota
from async_hi.emulator import Emulator, EmulatorThread

ROOT = Path(__file__).resolve().parent.parent
SECRET = "SECRETVALUE"


def cli(emu: EmulatorThread | None, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    extra: list[str] = []
    if emu is not None:
        env |= {
            "AWS_ACCESS_KEY_ID": emu.emulator.access_key_id,
            "AWS_SECRET_ACCESS_KEY": emu.emulator.secret_access_key,
        }
        extra = ["--endpoint-url", emu.endpoint_url, "--region", emu.emulator.region]
        if "--rate" not in args:
            extra += ["--rate", "50"]  # the emulator here has no quotas; the documented 0.25 tps is slow
    return subprocess.run(
        [sys.executable, "-m", "async_hi", "update", *args, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def manifest(path: Path, ds: str, isets: list[str], n: int, *, bad: dict[int, str] | None = None) -> Path:
    lines = []
    for k in range(n):
        attr = ["StudyDescription", "AccessionNumber"][k % 2]
        doc = {"Study": {"DICOM": {attr: f"V{k}"}}}
        lines.append(json.dumps({"datastoreId": ds, "imageSetId": isets[k % len(isets)], "updatable": doc}))
    for line, text in (bad or {}).items():
        lines.insert(line - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def emu() -> Any:
    with EmulatorThread(lock_seconds=0.02, quotas=None) as e:
        yield e


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from async_hi.cli import main

    code = main(["update", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_validates_offline_and_reports_lines_without_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, isets = "d" * 32, ["a" * 32, "b" * 32]
    bad = {
        2: '{"datastoreId": "' + SECRET,
        5: json.dumps({"datastoreId": ds, "imageSetId": SECRET, "updatable": {}}),
    }
    m = manifest(tmp_path / "m.jsonl", ds, isets, 6, bad=bad)
    code, stdout, stderr = run_main(capsys, str(m), "--dry-run", "--json")
    assert code == 1, stderr
    out = json.loads(stdout)
    assert out["dry_run"] is True
    assert out["requests"] == 6
    assert out["invalid_lines"] == 2
    assert [i["line"] for i in out["invalid"]] == [2, 5]
    assert SECRET not in stdout + stderr
    good = manifest(tmp_path / "g.jsonl", ds, isets, 3)
    code, stdout, _ = run_main(capsys, str(good), "--dry-run")
    assert code == 0
    assert "dry run (nothing sent)" in stdout


def test_update_applies_resumes_and_reports(tmp_path: Path, emu: EmulatorThread) -> None:
    seeded = emu.call(lambda: emu.emulator.seed(3))
    ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
    m = manifest(tmp_path / "m.jsonl", ds, isets, 12, bad={4: "not json " + SECRET})
    journal = tmp_path / "run.journal"
    r = cli(emu, str(m), "--journal", str(journal), "--json", "--concurrency", "2")
    out = json.loads(r.stdout)
    assert r.returncode == 1, r.stderr  # one invalid line
    assert (out["applied"], out["invalid_lines"], out["failed"]) == (12, 1, 0)
    assert out["calls"] + out["saved_by_coalescing"] == 12
    assert SECRET not in r.stdout + r.stderr
    time.sleep(0.05)
    store = emu.emulator.store
    final = emu.call(lambda: [store.image_set(ds, i).applied_metadata()["Study"]["DICOM"] for i in isets])
    assert final[0]["StudyDescription"] == "V6"
    assert final[0]["AccessionNumber"] == "V9"
    # again with the same journal: nothing is sent twice
    versions = emu.call(lambda: [len(store.image_set(ds, i).versions) for i in isets])
    r = cli(emu, str(m), "--journal", str(journal), "--json")
    out = json.loads(r.stdout)
    assert (out["applied"], out["skipped"], out["calls"]) == (0, 12, 0)
    assert emu.call(lambda: [len(store.image_set(ds, i).versions) for i in isets]) == versions
    # plain output off a terminal: progress lines on stderr, the table on stdout
    r = cli(emu, str(m), "--journal", str(journal))
    assert "already done (journal)" in r.stdout
    assert "m.jsonl line 4: not valid JSON" in r.stderr
    assert "progress: " in r.stderr


def test_stop_on_error(tmp_path: Path, emu: EmulatorThread) -> None:
    seeded = emu.call(lambda: emu.emulator.seed(1))
    m = manifest(tmp_path / "m.jsonl", seeded.datastore_id, list(seeded.image_set_ids), 20, bad={3: "[]"})
    r = cli(emu, str(m), "--json", "--stop-on-error", "--concurrency", "1", "--no-coalesce")
    out = json.loads(r.stdout)
    assert r.returncode == 1
    assert out["invalid_lines"] == 1
    assert out["applied"] + out["cancelled"] < 20


def test_start_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = manifest(tmp_path / "m.jsonl", "d" * 32, ["a" * 32], 3)
    endpoint = ["--endpoint-url", "http://127.0.0.1:1", "--region", "us-east-1"]
    code, _, err = run_main(capsys, str(tmp_path / "missing.jsonl"))
    assert code == 2
    assert "no manifest file" in err
    corrupt = tmp_path / "bad.journal"
    corrupt.write_text('{"t":"journal","format":1}\nnot json\n{"t":"journal","format":1}\n')
    code, _, err = run_main(capsys, str(m), "--journal", str(corrupt), *endpoint)
    assert code == 2
    assert "corrupt" in err
    code, _, err = run_main(capsys, str(m), "--redis", "redis://127.0.0.1:1/0", *endpoint)
    assert code == 2
    assert "Redis at --redis is unreachable" in err


def updates_sent(emu: EmulatorThread) -> int:
    return sum(r.operation == "UpdateImageSetMetadata" for r in emu.emulator.requests)


def test_a_foreign_file_or_another_manifests_journal_is_refused_before_anything_is_sent(
    tmp_path: Path, emu: EmulatorThread
) -> None:
    seeded = emu.call(lambda: emu.emulator.seed(2))
    ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
    a = manifest(tmp_path / "a.jsonl", ds, isets, 6)
    journal = tmp_path / "run.journal"
    assert cli(emu, str(a), "--journal", str(journal), "--json").returncode == 0
    sent = updates_sent(emu)
    # another manifest with the same journal: refused at once, not when its first journaled line comes
    b = tmp_path / "b.jsonl"
    b.write_text(a.read_text().replace('"V', '"W'))
    r = cli(emu, str(b), "--journal", str(journal))
    assert r.returncode == 2, r.stderr
    assert "belongs to a.jsonl" in r.stderr
    assert "nothing was sent" in r.stderr
    assert updates_sent(emu) == sent
    # a one-line notes file given as the journal: refused and left byte-identical
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"call the lab about the CT on Tuesday\n")
    r = cli(emu, str(a), "--journal", str(notes))
    assert r.returncode == 2, r.stderr
    assert "is not an async-hi journal" in r.stderr
    assert notes.read_bytes() == b"call the lab about the CT on Tuesday\n"
    assert updates_sent(emu) == sent
    # a grown manifest is accepted when asked, and only the new lines are sent
    grown = tmp_path / "grown.jsonl"
    grown.write_text(
        a.read_text() + manifest(tmp_path / "x.jsonl", ds, isets, 8).read_text().split("\n", 6)[6]
    )
    r = cli(emu, str(grown), "--journal", str(journal), "--json", "--accept-changed-manifest")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["skipped"], out["applied"]) == (6, 2)
    # an edit to a request the journal finished is refused up front, even when changes are accepted
    sent = updates_sent(emu)
    edited = tmp_path / "edited.jsonl"
    edited.write_text(grown.read_text().replace('"V0"', '"Z0"', 1))
    r = cli(emu, str(edited), "--journal", str(journal), "--accept-changed-manifest")
    assert r.returncode == 2, r.stderr
    assert "request 1 differs" in r.stderr
    assert updates_sent(emu) == sent


def test_sigint_drains_and_a_resumed_run_finishes_exactly_once(tmp_path: Path) -> None:
    quotas = {**DEFAULT_QUOTAS, "UpdateImageSetMetadata": Quota(rate=20, burst=1)}
    with EmulatorThread(lock_seconds=0.02, quotas=quotas) as emu:
        seeded = emu.call(lambda: emu.emulator.seed(4))
        ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
        m = manifest(tmp_path / "m.jsonl", ds, isets, 60)
        journal = tmp_path / "run.journal"
        env = dict(os.environ) | {
            "AWS_ACCESS_KEY_ID": emu.emulator.access_key_id,
            "AWS_SECRET_ACCESS_KEY": emu.emulator.secret_access_key,
        }
        args = [sys.executable, "-m", "async_hi", "update", str(m), "--journal", str(journal), "--json"]
        args += [
            "--endpoint-url",
            emu.endpoint_url,
            "--region",
            emu.emulator.region,
            "--rate",
            "20",
            "--no-coalesce",
        ]
        child = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        store = emu.emulator.store
        deadline = time.monotonic() + 30
        while sum(emu.call(lambda: [len(store.image_set(ds, i).versions) for i in isets])) < 4 + 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 130, stderr
        first = json.loads(stdout)
        assert first["interrupted"] is True
        assert 0 < first["applied"] < 60
        assert first["cancelled"] > 0
        assert "stopping: finishing the calls in flight" in stderr
        r = cli(emu, str(m), "--journal", str(journal), "--json", "--rate", "20", "--no-coalesce")
        second = json.loads(r.stdout)
        assert r.returncode == 0, r.stderr
        assert second["skipped"] == first["applied"]
        assert second["applied"] == 60 - first["applied"]
        time.sleep(0.05)
        versions = emu.call(lambda: [len(store.image_set(ds, i).versions) for i in isets])
    assert versions == [1 + 15] * 4  # every request exactly once


@pytest.mark.anyio
async def test_update_many_with_the_client_and_its_version_reader(tmp_path: Path) -> None:
    async with Emulator(lock_seconds=0.02, quotas=None) as emu:
        seeded = emu.seed(2)
        ds, isets = seeded.datastore_id, list(seeded.image_set_ids)
        requests = [
            (
                n + 1,
                MetadataUpdate(
                    datastore_id=ds,
                    image_set_id=isets[n % 2],
                    updatable={"Study": {"DICOM": {"StudyDescription": f"V{n}"}}},
                ),
            )
            for n in range(6)
        ]
        async with HealthImagingClient(
            endpoint_url=emu.endpoint_url,
            region=emu.region,
            aws_access_key_id=emu.access_key_id,
            aws_secret_access_key=emu.secret_access_key,
            limiter_config=LimiterConfig(quotas={"UpdateImageSetMetadata": Quota(rate=50, burst=1)}),
        ) as client:
            reader = ClientVersionReader(client)
            async with Journal(tmp_path / "j") as journal:
                # an intent left open by a "crashed" run whose call landed
                await journal.intent(
                    keys=[1],
                    digests=[requests[0][1].digest()],
                    datastore_id=ds,
                    image_set_id=isets[0],
                    base="1",
                )
                await client.update_image_set_metadata(requests[0][1], wait=True)
                (verdict,) = await reconcile(journal, requests, reader)
                assert verdict.applied
                assert verdict.version == "2"
                async with update_many(
                    requests,
                    apply=lambda u: client.update_image_set_metadata(u, wait=True),
                    journal=journal,
                    reader=reader,
                ) as run:
                    outcomes = {o.index: o async for o in run}
            assert outcomes[1].status == "skipped"
            assert all(outcomes[k].status == "applied" for k in range(2, 7))
            assert outcomes[6].result.workflow_status == "UPDATED"
            info = await client.get_image_set(ds, isets[1])
            meta = await client.get_image_set_metadata(ds, isets[1])
    assert meta["Study"]["DICOM"]["StudyDescription"] == "V5"
    assert int(info.version_id) <= 4  # three requests, possibly coalesced


def test_demo_runs_and_verifies() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "async_hi", "demo", "--json", "--rate", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True
    assert out["applied"] == 30
    assert out["problems"] == []
