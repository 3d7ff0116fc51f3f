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


def test_every_exit_code_is_documented_in_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    from async_hi.cli._progress import EXIT_CODES

    with pytest.raises(SystemExit) as info:
        run_main(capsys, "--help")
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    # the table lives in the README or, once moved, in the docs site's CLI page
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "cli.md").read_text()
    assert set(EXIT_CODES) == {0, 1, 2, 3, 130}
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:>3}  {meaning.split(',')[0]}" in help_text
        assert f"| {code} |" in readme


def one_json_line(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    out: dict[str, Any] = json.loads(lines[0])
    return out


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("no manifest", 2, "no manifest file"),
        ("bad arguments", 2, "must be >= 1"),
        ("corrupt journal", 2, "is corrupt"),
        ("not a journal", 2, "is not an async-hi journal"),
        ("redis down", 2, "Redis at --redis is unreachable"),
        ("dry run", 1, None),
    ],
)
def test_json_prints_exactly_one_line_on_every_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, code: int, words: str | None
) -> None:
    m = manifest(tmp_path / "m.jsonl", "d" * 32, ["a" * 32], 3, bad={2: "{"})
    journal = tmp_path / "j"
    endpoint = ["--endpoint-url", "http://127.0.0.1:1", "--region", "us-east-1", "--json"]
    argv = {
        "no manifest": [str(tmp_path / "missing.jsonl"), *endpoint],
        "bad arguments": [str(m), "--concurrency", "0", *endpoint],
        "corrupt journal": [str(m), "--journal", str(journal), *endpoint],
        "not a journal": [str(m), "--journal", str(journal), *endpoint],
        "redis down": [str(m), "--redis", "redis://127.0.0.1:1/0", *endpoint],
        "dry run": [str(m), "--dry-run", "--json"],
    }[case]
    if case == "corrupt journal":
        journal.write_text('{"t":"journal","format":2,"input":null}\nnot json\n{"t":"x"}\n')
    if case == "not a journal":
        journal.write_text("notes\n")
    if case == "bad arguments":
        with pytest.raises(SystemExit) as info:
            run_main(capsys, *argv)
        assert info.value.code == 2
        stdout, stderr = capsys.readouterr()
        exit_code = 2
    else:
        exit_code, stdout, stderr = run_main(capsys, *argv)
    out = one_json_line(stdout)
    assert exit_code == out["exit_code"] == code
    if words is not None:
        assert words in out["error"]
        assert stderr.count(words) == 1  # one clear message


def test_ctrl_c_during_a_resumes_reconcile_exits_130_without_a_traceback(tmp_path: Path) -> None:
    import anyio

    from async_hi._journal import Fingerprint

    with EmulatorThread(lock_seconds=60, quotas=None) as emu:  # an update that stays UPDATING
        seeded = emu.call(lambda: emu.emulator.seed(1))
        ds, (iset,) = seeded.datastore_id, seeded.image_set_ids
        m = manifest(tmp_path / "m.jsonl", ds, [iset], 3)
        journal = tmp_path / "run.journal"
        first = MetadataUpdate(
            datastore_id=ds, image_set_id=iset, updatable={"Study": {"DICOM": {"StudyDescription": "V0"}}}
        )

        async def crashed_run() -> None:  # a run that died with line 1 in flight
            async with Journal(journal, fingerprint=Fingerprint.of_file(m)) as j:
                await j.intent(
                    keys=[1], digests=[first.digest()], datastore_id=ds, image_set_id=iset, base="1"
                )

        anyio.run(crashed_run)
        store = emu.emulator.store
        emu.call(lambda: store.update(ds, iset, latest_version=1, updatable=first.updatable))
        env = dict(os.environ) | {
            "AWS_ACCESS_KEY_ID": emu.emulator.access_key_id,
            "AWS_SECRET_ACCESS_KEY": emu.emulator.secret_access_key,
        }
        args = [sys.executable, "-m", "async_hi", "update", str(m), "--journal", str(journal), "--json"]
        args += ["--endpoint-url", emu.endpoint_url, "--region", emu.emulator.region, "--rate", "50"]
        child = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        # reconcile is waiting for the image set to settle (it would wait up to 120 s)
        while not any(r.operation == "ListImageSetVersions" for r in emu.emulator.requests):
            assert time.monotonic() < deadline
            assert child.poll() is None
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
        assert child.returncode == 130, stderr
        assert "Traceback" not in stderr
        out = one_json_line(stdout)
        assert out["interrupted"] is True
        assert out["exit_code"] == 130
        assert updates_sent(emu) == 0

    async def still_open() -> int:
        async with Journal(journal) as j:
            return len(j.open_intents)

    assert anyio.run(still_open) == 1  # nothing decided, nothing lost: the next run settles it


def test_ctrl_c_while_waiting_for_redis_exits_130(tmp_path: Path) -> None:
    import socket

    m = manifest(tmp_path / "m.jsonl", "d" * 32, ["a" * 32], 3)
    with socket.socket() as silent:  # accepts connections, never answers: PING waits
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        args = [sys.executable, "-m", "async_hi", "update", str(m), "--json", "--redis", url]
        args += ["--endpoint-url", "http://127.0.0.1:1", "--region", "us-east-1"]
        child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        silent.settimeout(60)
        conn, _ = silent.accept()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
        conn.close()
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert one_json_line(stdout)["interrupted"] is True


def test_an_internal_error_is_exit_3_with_one_json_line_and_no_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import async_hi.cli._job as job

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"a bug that quotes {SECRET}")

    monkeypatch.setattr(job, "run_job", broken)
    m = manifest(tmp_path / "m.jsonl", "d" * 32, ["a" * 32], 2)
    code, stdout, stderr = run_main(
        capsys, str(m), "--json", "--endpoint-url", "http://127.0.0.1:1", "--region", "us-east-1"
    )
    out = one_json_line(stdout)
    assert code == out["exit_code"] == 3
    assert out["internal_error"] is True
    assert "internal error (RuntimeError)" in stderr
    assert SECRET not in stdout + stderr
