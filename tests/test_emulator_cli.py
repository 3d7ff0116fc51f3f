"""`async-hi emulator` as a standalone process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from async_hi.rawhttp import sign_headers

ROOT = Path(__file__).resolve().parents[1]


def test_emulator_command_serves_until_interrupted() -> None:
    cmd = [
        sys.executable,
        "-m",
        "async_hi",
        "emulator",
        "--json",
        "--seed-count",
        "2",
        "--quota",
        "UpdateImageSetMetadata=4/1",
        "--lock-seconds",
        "0.01",
        "--stale-version-error",
        "conflict",
    ]
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        code = _exercise(proc)
    assert code == 0


def _exercise(proc: subprocess.Popen[str]) -> int:
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["endpoint_url"].startswith("http://127.0.0.1:")
        assert len(info["image_set_ids"]) == 2
        assert httpx.get(f"{info['endpoint_url']}/_emulator/health", timeout=10).json()["ok"] is True
        image_set = f"datastore/{info['datastore_id']}/imageSet/{info['image_set_ids'][0]}"
        url = f"{info['endpoint_url']}/{image_set}/getImageSet"
        headers = sign_headers(
            "POST",
            url,
            access_key_id=info["aws_access_key_id"],
            secret_access_key=info["aws_secret_access_key"],
            region=info["region"],
        )
        r = httpx.post(url, headers=headers, timeout=10)
        assert r.status_code == 200
        assert r.json()["versionId"] == "1"
        # --stale-version-error conflict: a stale version gets the documented 409, not the real 404
        url = f"{info['endpoint_url']}/{image_set}/updateImageSetMetadata?latestVersion=5"
        body = json.dumps({"revertToVersionId": "1"}).encode()
        headers = sign_headers(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json"},
            access_key_id=info["aws_access_key_id"],
            secret_access_key=info["aws_secret_access_key"],
            region=info["region"],
        )
        r = httpx.post(url, content=body, headers=headers, timeout=10)
        assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (409, "ConflictException")
    finally:
        proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


def test_bad_quota_argument_names_the_problem() -> None:
    cmd = [sys.executable, "-m", "async_hi", "emulator", "--quota", "Nope=1/1"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert "unknown operation 'Nope'" in r.stderr
