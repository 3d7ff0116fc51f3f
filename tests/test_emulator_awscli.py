"""The AWS CLI, unmodified, against the emulator (as a user would run it)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from async_hi.emulator import EmulatorThread


def aws(
    emu: EmulatorThread, *args: str, check: bool = True, host_prefix: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": emu.emulator.access_key_id,
        "AWS_SECRET_ACCESS_KEY": emu.emulator.secret_access_key,
        "AWS_DEFAULT_REGION": emu.emulator.region,
        "AWS_CONFIG_FILE": os.environ["AWS_CONFIG_FILE"],
        "AWS_SHARED_CREDENTIALS_FILE": os.environ["AWS_SHARED_CREDENTIALS_FILE"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        # the runtime- host prefix is wrong for a custom endpoint
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "false" if host_prefix else "true",
    }
    cmd = [sys.executable, "-m", "awscli", "medical-imaging", *args, "--endpoint-url", emu.endpoint_url]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed: {result.stderr}")
    return result


def out(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_aws_cli_round_trip(emulator_thread: EmulatorThread, tmp_path: Path) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    ids = ["--datastore-id", seeded.datastore_id, "--image-set-id", seeded.image_set_ids[0]]

    assert out(aws(emu, "get-image-set", *ids))["versionId"] == "1"
    # AWS CLI v1 passes blob text through as bytes (v2 needs --cli-binary-format raw-in-base64-out)
    doc = json.dumps({"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "FROM CLI"}}})
    updates = json.dumps({"DICOMUpdates": {"updatableAttributes": doc}})
    r = out(
        aws(
            emu,
            "update-image-set-metadata",
            *ids,
            "--latest-version-id",
            "1",
            "--update-image-set-metadata-updates",
            updates,
        )
    )
    assert (r["latestVersionId"], r["imageSetState"]) == ("2", "LOCKED")
    time.sleep(0.05)

    target = tmp_path / "metadata.json.gz"
    r = out(aws(emu, "get-image-set-metadata", *ids, str(target)))
    assert r["contentEncoding"] == "gzip"
    assert (
        json.loads(gzip.decompress(target.read_bytes()))["Study"]["DICOM"]["StudyDescription"] == "FROM CLI"
    )

    r = out(
        aws(
            emu,
            "update-image-set-metadata",
            *ids,
            "--latest-version-id",
            "2",
            "--update-image-set-metadata-updates",
            '{"revertToVersionId": "1"}',
        )
    )
    assert r["latestVersionId"] == "3"
    time.sleep(0.05)
    versions = out(aws(emu, "list-image-set-versions", *ids))["imageSetPropertiesList"]
    assert [v["versionId"] for v in versions] == ["3", "2", "1"]


@pytest.mark.parametrize(
    ("mode", "code"), [("not-found", "ResourceNotFoundException"), ("conflict", "ConflictException")]
)
def test_aws_cli_reports_a_stale_version(emulator_thread: EmulatorThread, mode: str, code: str) -> None:
    emu = emulator_thread
    emu.call(lambda: emu.emulator.reconfigure(stale_version_error=mode))
    seeded = emu.call(lambda: emu.emulator.seed(1))
    ids = ["--datastore-id", seeded.datastore_id, "--image-set-id", seeded.image_set_ids[0]]
    r = aws(
        emu,
        "update-image-set-metadata",
        *ids,
        "--latest-version-id",
        "5",
        "--update-image-set-metadata-updates",
        '{"revertToVersionId": "1"}',
        check=False,
    )
    assert r.returncode != 0
    assert code in r.stderr
    assert "Requested version(s) of ImageSet(s) is not the latest." in r.stderr


def test_without_disabling_the_host_prefix_the_cli_cannot_connect(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread
    seeded = emu.call(lambda: emu.emulator.seed(1))
    ids = ["--datastore-id", seeded.datastore_id, "--image-set-id", seeded.image_set_ids[0]]
    r = aws(emu, "get-image-set", *ids, check=False, host_prefix=True)
    assert r.returncode != 0
    assert "runtime-127.0.0.1" in r.stderr
