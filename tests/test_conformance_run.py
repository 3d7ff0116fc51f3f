"""The suite end to end: our emulator passes everything; a non-HealthImaging endpoint fails loudly.

Also the two front ends: ``async-hi conformance`` and the pytest plugin, in subprocesses.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from rich.console import Console

from async_hi.emulator import Emulator
from conformance import (
    CheckLevel,
    Credentials,
    NoPacing,
    Outcome,
    Settings,
    Target,
    all_checks,
    emulator_target,
    run_conformance,
)
from conformance._report import print_report, to_json, to_junit_xml

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def test_the_emulator_passes_every_check_within_a_minute() -> None:
    async with emulator_target() as target:
        report = await run_conformance(target)
    not_passed = [
        f"{r.check.id} {r.outcome.value}: {r.message}"
        for r in report.results
        if r.outcome is not Outcome.PASS
    ]
    assert not_passed == []
    assert len(report.results) == len(all_checks()) == 77
    # OC01 says which stale-version answer it saw: the real service's 404 (E1), the emulator's default
    assert report.result("OC01").message.startswith(
        "stale version refused with 404 ResourceNotFoundException"
    )
    assert report.seconds < 60
    assert report.exit_status == 0
    assert report.restore is not None
    assert report.restore.ok
    assert "reverted to the content of version 1" in report.restore.message
    data = json.loads(to_json(report))
    assert data["counts"]["pass"] == 77
    assert ET.fromstring(to_junit_xml(report)).tag == "testsuites"


async def test_the_emulator_in_409_mode_passes_the_oc_checks_and_oc01_says_409() -> None:
    async with emulator_target(stale_version_error="conflict") as target:
        report = await run_conformance(target, select=["OC"], pacer=NoPacing())
    assert [(r.check.id, r.outcome) for r in report.results if r.outcome is not Outcome.PASS] == []
    assert report.result("OC01").message == (
        "stale version refused with 409 ConflictException (as the API reference documents)"
    )
    assert "409 ConflictException" in report.result("OC02").message
    assert "x 409 ConflictException" in report.result("OC03").message


async def test_read_only_run_changes_nothing_on_the_emulator() -> None:
    async with Emulator(lock_seconds=0.05, quotas=None) as emu:
        seeded = emu.seed(1)
        target = Target(
            endpoint_url=emu.endpoint_url,
            credentials=Credentials(
                access_key_id=emu.access_key_id, secret_access_key=emu.secret_access_key, region=emu.region
            ),
            datastore_id=seeded.datastore_id,
            image_set_id=seeded.image_set_ids[0],
        )
        report = await run_conformance(target, pacer=NoPacing(), settings=Settings(examples=10))
        assert len(emu.image_set(seeded.datastore_id, seeded.image_set_ids[0]).versions) == 1
    skipped = {r.check.id for r in report.results if r.outcome is Outcome.SKIP}
    writes = {r.check.id for r in report.results if r.check.writes}
    assert skipped == writes | {"OC05", "OC08", "SR11", "VS07", "VS09", "VS10"}
    assert len(writes) == 10
    assert all(r.outcome is Outcome.PASS for r in report.results if r.check.id not in skipped)
    assert report.restore is not None
    assert report.restore.message == "unchanged: still version 1"


@pytest.fixture
async def not_healthimaging() -> AsyncIterator[str]:
    """A plain aiohttp app answering 200 {} to everything."""

    async def anything(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_non_healthimaging_endpoint_fails_loudly_and_readably(not_healthimaging: str) -> None:
    creds = Credentials(access_key_id="AKIAFAKE", secret_access_key="secret", region="us-east-1")
    target = Target(
        endpoint_url=not_healthimaging,
        credentials=creds,
        datastore_id="a" * 32,
        image_set_id="b" * 32,
        allow_writes=True,
    )
    report = await run_conformance(target, pacer=NoPacing(), settings=Settings(examples=5))
    assert report.exit_status == 1
    assert report.seconds < 15  # about 1 s: nothing waits on an endpoint that is not HealthImaging
    must = [r for r in report.results if r.check.level is CheckLevel.MUST]
    failed = [r for r in must if r.outcome is Outcome.FAIL]
    assert len(failed) >= 40
    assert report.result("RV01").message == "datastoreId uppercase: expected 400, got 200 (+3 more)"
    assert "missing required member" in report.result("SR02").message
    assert "is this a HealthImaging endpoint?" in report.result("VS01").message
    assert "is this a HealthImaging endpoint?" in report.notes[0]
    assert not any("could not complete" in r.message for r in report.results), "a check crashed"
    console = Console(record=True, width=140)
    print_report(report, console)
    text = console.export_text()
    assert "FAIL" in text
    assert "MUST check(s) failed" in text
    assert "curl" in text


async def test_cli_against_a_non_healthimaging_endpoint_exits_1(
    not_healthimaging: str, tmp_path: Path
) -> None:
    junit = tmp_path / "r.xml"
    cmd = [
        sys.executable, "-m", "async_hi", "conformance", "--endpoint", not_healthimaging,
        "--datastore-id", "a" * 32, "--image-set-id", "b" * 32, "--region", "us-east-1",
        "--access-key-id", "AKIAFAKE", "--secret-access-key", "secret",
        "--select", "RV01,RB", "--no-pacing", "--quiet", "--examples", "3", "--junit", str(junit),
    ]  # fmt: skip
    done = await anyio.run_process(cmd, cwd=ROOT, env=_env(), check=False)
    out = done.stdout.decode()
    assert done.returncode == 1, done.stderr.decode()
    assert "RV01" in out
    assert "FAIL" in out
    assert "expected 400, got 200" in out
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert len(failures) >= 5


async def test_an_image_set_that_never_settles_ends_the_write_phase_once() -> None:
    """One settle wait runs out, the write phase ends there with the reason; exit 1, in bounded time."""
    async with emulator_target(lock_seconds=3600) as target:
        settings = Settings(examples=5, settle_timeout=2)
        report = await run_conformance(target, settings=settings)
    assert report.exit_status == 1
    # before: every writing check waited its own settle_timeout (16 x 2 s); now one wait, then the rest
    assert report.seconds < 20
    not_passed = {r.check.id: r for r in report.results if r.outcome is not Outcome.PASS}
    waited = not_passed.pop("OC03")  # the first check that waits
    assert waited.outcome is Outcome.FAIL
    assert waited.message.startswith("the image set is still LOCKED/UPDATING (version 2) after 2 s")
    assert not_passed.pop("OC05").outcome is Outcome.WARN  # the SHOULD on the time it takes
    assert {r.outcome for r in not_passed.values()} == {Outcome.SKIP}  # and no check fails by side effect
    assert all(r.message.startswith("the write phase ended") for r in not_passed.values())
    assert len(not_passed) >= 10
    assert "write phase ended" in report.notes[0]
    assert report.restore is not None
    assert not report.restore.ok
    assert report.restore.message.startswith("NOT RESTORED")


async def test_cli_unreachable_endpoint_exits_4_with_one_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable, "-m", "async_hi", "conformance", "--endpoint", f"http://127.0.0.1:{port}",
        "--datastore-id", "a" * 32, "--image-set-id", "b" * 32, "--region", "us-east-1",
        "--access-key-id", "AKIAFAKE", "--secret-access-key", "secret", "--allow-writes",
        "--json", str(tmp_path / "r.json"),
    ]  # fmt: skip
    with anyio.fail_after(30):
        done = await anyio.run_process(cmd, cwd=ROOT, env=_env(), check=False)
    out = done.stdout.decode().strip()
    assert done.returncode == 4, out + done.stderr.decode()
    assert out.startswith(f"UNREACHABLE: cannot reach http://127.0.0.1:{port}: ConnectError")
    assert len(out.splitlines()) == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["exit_status"] == 4
    assert data["results"] == []
    assert data["seconds"] < 5


async def test_cli_emulator_run_writes_json(tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "async_hi",
            "conformance",
            "--emulator",
            "--select",
            "RV01,SR01,ER",
            "--quiet",
            "--json",
            str(out_json),
        ],
        cwd=ROOT,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    data = json.loads(out_json.read_text())
    assert [r["id"] for r in data["results"]] == [
        "RV01",
        "SR01",
        "ER01",
        "ER02",
        "ER03",
        "ER04",
        "ER05",
        "ER06",
        "ER07",
    ]
    assert {r["outcome"] for r in data["results"]} == {"pass"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "http://127.0.0.1:9"], "needs --datastore-id and --image-set-id"),
        (["--emulator", "--select", "ZZ"], "unknown check or group 'ZZ'"),
        ([], "give --endpoint URL"),
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from async_hi.cli import main

    assert main(["conformance", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_lists_the_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from async_hi.cli import main

    assert main(["conformance", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 77
    assert lines[0].startswith("RV01  MUST")
    assert lines[-1].startswith("RB09  SHOULD")


async def test_pytest_plugin_runs_the_checks_as_tests(tmp_path: Path) -> None:
    base = [
        sys.executable, "-m", "pytest", "-p", "no:async_hi_conformance", "-p", "conformance._plugin",
        "-p", "no:cacheprovider",
        "-o", "addopts=", "-o", "asyncio_default_fixture_loop_scope=function", "--hi-emulator", "-q",
    ]  # fmt: skip
    done = await anyio.run_process(
        [*base, "--hi-select", "RV01,SR01", "--hi-expect", "RV01=404"], cwd=tmp_path, env=_env(), check=False
    )
    text = done.stdout.decode()
    assert done.returncode == 1, text
    assert "1 failed, 1 passed" in text
    assert "FAILED hi-conformance::RV01" in text
    assert "datastoreId uppercase: expected 404, got 400 ValidationException" in text
    assert "--aws-sigv4" in text
    assert "Signature=****" in text
    assert "HealthImaging conformance" in text
    assert "image set: reverted" in text


async def test_pytest_plugin_against_an_unreachable_endpoint_exits_4_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **_env(),
        "AWS_ACCESS_KEY_ID": "AKIAFAKE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
    }
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:async_hi_conformance", "-p", "conformance._plugin",
        "-p", "no:cacheprovider", "-o", "addopts=", "-q", "--hi-endpoint", f"http://127.0.0.1:{port}",
        "--hi-datastore-id", "a" * 32, "--hi-image-set-id", "b" * 32,
    ]  # fmt: skip
    with anyio.fail_after(60):
        done = await anyio.run_process(cmd, cwd=tmp_path, env=env, check=False)
    text = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 4, text
    assert text.count("UNREACHABLE: cannot reach") == 1
