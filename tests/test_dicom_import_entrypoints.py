"""Importing through the admin API and the ``async-hi emulator --import`` command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from async_hi.emulator import Emulator

DATA = Path(pydicom.data.data_manager.DATA_ROOT) / "test_files"
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.anyio
async def test_admin_route_imports_and_reports(emulator: Emulator) -> None:
    base = f"{emulator.endpoint_url}/_emulator"
    async with httpx.AsyncClient(timeout=30) as http:
        d = (await http.post(f"{base}/datastores", json={})).json()["datastoreId"]
        r = await http.post(
            f"{base}/datastores/{d}/import",
            json={"paths": [str(DATA / "dicomdirtests" / "98892001"), str(DATA / "README.txt")]},
        )
        assert r.status_code == 200
        report = r.json()
        assert (report["datastoreId"], report["files"], report["imported"]) == (d, 8, 7)
        assert report["skipped"] == [
            {"path": str(DATA / "README.txt"), "reason": "not a DICOM P10 file (no DICM prefix or file meta)"}
        ]
        assert [(s["primary"], s["versionId"], s["outcome"]) for s in report["imageSets"]] == [
            (True, "1", "created"),
            (True, "1", "created"),
        ]
        listed = (await http.get(f"{base}/datastores/{d}/imageSets")).json()["imageSetIds"]
        assert listed == [s["imageSetId"] for s in report["imageSets"]]

        again = await http.post(
            f"{base}/datastores/{d}/import",
            json={"paths": [str(DATA / "dicomdirtests" / "98892001" / "*" / "*")], "primary": False},
        )
        assert [s["primary"] for s in again.json()["imageSets"]] == [False, False]

        assert (
            await http.post(f"{base}/datastores/{'0' * 32}/import", json={"paths": ["x"]})
        ).status_code == 404
        for body in ({}, {"paths": []}, {"paths": "x"}, {"paths": ["x"], "primary": "yes"}):
            bad = await http.post(f"{base}/datastores/{d}/import", json=body)
            assert bad.status_code == 400, body


def test_cli_imports_and_prints_counts_never_values() -> None:
    path = str(DATA / "CT_small.dcm")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "async_hi",
            "emulator",
            "--json",
            "--no-sigv4",
            "--import",
            path,
            str(DATA / "no"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    report = info["import"]
    assert (report["files"], report["imported"]) == (2, 1)
    assert report["skipped"] == [{"path": str(DATA / "no"), "reason": "no such file or folder"}]
    assert info["image_set_ids"] == [report["imageSets"][0]["imageSetId"]]  # --import: no synthetic seeds
    assert info["datastore_id"] == report["datastoreId"]
    for value in ("CompressedSamples", "1CT1", "JFK IMAGING"):
        assert value not in out + err


def test_cli_text_report() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "async_hi",
            "emulator",
            "--no-sigv4",
            "--seed-count",
            "1",
            "--import",
            str(DATA),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    text = "".join(lines)
    assert "DICOM import: imported 145 of 176 files" in text
    assert "36 new image sets (36 primary, 0 non-primary)" in text
    assert "13 x not a DICOM P10 file (no DICM prefix or file meta)" in text
    assert f"{DATA / 'README.txt'}: not a DICOM P10 file" in text
    assert text.count("    image set ") == 1 + 36  # one synthetic seed, then the imported ones
    assert "Lastname" not in text
    assert "CompressedSamples" not in text
