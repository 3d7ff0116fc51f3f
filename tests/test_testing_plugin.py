"""The pytest plugin of async_hi.testing, run in fresh pytest processes on small test projects:
inert for a run that uses no fixture, and its async fixtures under each async plugin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = """
import json, sys, threading

def pytest_sessionfinish(session):
    with open("probe.json", "w") as fp:
        json.dump({
            "threads": sorted(t.name for t in threading.enumerate()),
            "emulator_imported": "async_hi.emulator" in sys.modules,
            "harness_imported": "async_hi.testing._harness" in sys.modules,
            "plugin": session.config.pluginmanager.has_plugin("async_hi_testing"),
        }, fp)
"""

UNRELATED = """
import asyncio
import pytest

@pytest.fixture
def number():
    return 41

def test_sync(number):
    assert number + 1 == 42

@pytest.mark.asyncio
async def test_asyncio():
    await asyncio.sleep(0)

@pytest.mark.anyio
async def test_anyio():
    pass

def test_fails():
    assert 1 == 2

@pytest.mark.skip(reason="skipped on purpose")
def test_skipped():
    pass
"""


def pytest_in(project: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTEST_"))}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return r.returncode, r.stdout + r.stderr


def project(tmp_path: Path, ini: str, files: dict[str, str]) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + textwrap.dedent(ini))
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def outcomes(output: str) -> list[str]:
    return sorted(re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", output, re.MULTILINE))


def test_a_run_that_uses_no_fixture_is_unchanged(tmp_path: Path) -> None:
    p = project(
        tmp_path,
        "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n",
        {"conftest.py": PROBE, "test_unrelated.py": UNRELATED},
    )
    code_with, with_plugin = pytest_in(p)
    probe_with = json.loads((p / "probe.json").read_text())
    code_without, without_plugin = pytest_in(p, "-p", "no:async_hi_testing")
    probe_without = json.loads((p / "probe.json").read_text())

    assert probe_with["plugin"] is True  # it was there...
    assert probe_without["plugin"] is False
    # ...and changed nothing
    assert (code_with, outcomes(with_plugin)) == (code_without, outcomes(without_plugin))
    assert len(outcomes(with_plugin)) == 6  # sync, asyncio, anyio x2 backends, fails, skipped
    assert probe_with["threads"] == probe_without["threads"]
    assert not any("emulator" in t for t in probe_with["threads"])
    assert probe_with["emulator_imported"] is False
    assert probe_with["harness_imported"] is False


USES_FIXTURES = """
import pytest
from async_hi import UpdateBuilder

async def relabel_and_read(emu, hi_client, hi_aioboto):
    i = emu.seed(1).image_set_ids[0]
    d = emu.datastore_id
    update = UpdateBuilder(d, i).study(StudyDescription="X").build()
    await hi_client.update_image_set_metadata(update, wait=True)
    got = await hi_aioboto.get_image_set(datastoreId=d, imageSetId=i)
    assert got["versionId"] == "2"
    assert emu.calls("UpdateImageSetMetadata", status=200) == 1
"""


def test_async_fixtures_under_anyio_alone_on_asyncio_and_trio(tmp_path: Path) -> None:
    p = project(
        tmp_path,
        "",
        {
            "test_anyio_only.py": USES_FIXTURES
            + """
@pytest.mark.anyio
async def test_anyio(hi_emulator, hi_client, hi_aioboto):
    await relabel_and_read(hi_emulator, hi_client, hi_aioboto)

def test_sync_test_asking_for_an_async_fixture(hi_client):
    pass
"""
        },
    )
    code, out = pytest_in(p, "-p", "no:asyncio")
    assert code == 1, out
    assert outcomes(out) == [
        ("test_anyio_only.py::test_anyio[asyncio]", "PASSED"),
        ("test_anyio_only.py::test_anyio[trio]", "PASSED"),
        ("test_anyio_only.py::test_sync_test_asking_for_an_async_fixture", "ERROR"),
    ]
    assert "hi_client is an async fixture: request it from an async test run by pytest-asyncio" in out


def test_async_fixtures_under_pytest_asyncio_auto_mode(tmp_path: Path) -> None:
    p = project(
        tmp_path,
        "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n",
        {
            "test_auto.py": USES_FIXTURES
            + """
async def test_auto(hi_emulator, hi_client, hi_aioboto):
    await relabel_and_read(hi_emulator, hi_client, hi_aioboto)

@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(hi_emulator, hi_client, hi_aioboto):
    await relabel_and_read(hi_emulator, hi_client, hi_aioboto)
"""
        },
    )
    code, out = pytest_in(p, "-p", "no:anyio")
    assert code == 0, out
    assert outcomes(out) == [
        ("test_auto.py::test_auto", "PASSED"),
        ("test_auto.py::test_session_loop", "PASSED"),
    ]
