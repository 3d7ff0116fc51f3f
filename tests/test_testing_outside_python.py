"""Testing support outside Python's pytest: baselines, the admin API's reset/settle/calls, and
``async-hi emulator -- COMMAND`` running another language's test suite against the emulator."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

from async_hi.testing import EmulatorHarness, emulator

ROOT = Path(__file__).resolve().parents[1]


def test_reset_returns_to_a_copy_of_the_baseline() -> None:
    with emulator() as emu:
        ids = emu.seed(2).image_set_ids
        emu.update(ids[0], updatable={"Study": {"DICOM": {"StudyDescription": "BASE"}}})
        emu.settle()
        emu.set_baseline()
        for _ in range(2):  # each reset gives a fresh copy: the test's writes never reach the baseline
            emu.update(ids[0], updatable={"Study": {"DICOM": {"StudyDescription": "TEST"}}})
            emu.delete(ids[1])
            emu.create_datastore("scratch")
            emu.reset()
            assert [v.study["StudyDescription"] for v in emu.history(ids[0])][1:] == ["BASE"]
            assert emu.state(ids[1]) == "ACTIVE"
            assert emu.call(lambda: len(emu.emulator.store.datastores)) == 1
            assert emu.calls() == 0


def test_the_admin_api_resets_settles_and_shows_the_calls(
    hi_emulator: EmulatorHarness, hi_boto3: Any
) -> None:
    hi_emulator.configure(lock_seconds=math.inf)
    ids = hi_emulator.seed(2).image_set_ids
    d = hi_emulator.datastore_id
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "PHI-LIKE VALUE"}}}
    for i in ids:
        hi_boto3.update_image_set_metadata(
            datastoreId=d,
            imageSetId=i,
            latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}},
        )
    admin = f"{hi_emulator.endpoint_url}/_emulator"
    with httpx.Client() as http:
        assert http.post(f"{admin}/settle", json={"imageSetIds": [ids[0]]}).json() == {"settled": 1}
        assert hi_emulator.state(ids[1]) == "LOCKED"
        assert http.post(f"{admin}/settle").json() == {"settled": 1}
        assert http.post(f"{admin}/settle", json={"imageSetIds": "x"}).status_code == 400
        r = http.get(f"{admin}/calls", params={"operation": "UpdateImageSetMetadata", "status": "200"})
        calls = r.json()["calls"]
        assert [c["imageSetId"] for c in calls] == list(ids)
        assert calls[0]["updated"] == ["Study.StudyDescription"]
        assert calls[0]["params"]["latestVersionId"] == "1"
        assert "PHI-LIKE" not in r.text
        assert http.post(f"{admin}/reset").json() == {"ok": True}
    assert hi_emulator.calls() == 0
    assert hi_emulator.config.lock_seconds == 0.05


CHILD = """
import json, os, sys, urllib.request
import boto3

admin = os.environ["HI_ENDPOINT_URL"] + "/_emulator"
def post(path, body=None):
    req = urllib.request.Request(admin + path, data=json.dumps(body or {}).encode(), method="POST")
    return json.load(urllib.request.urlopen(req))

# nothing passed to the client: endpoint, host prefix, region and credentials come from the environment
client = boto3.client("medical-imaging")
d, ids = os.environ["HI_DATASTORE_ID"], os.environ["HI_IMAGE_SET_IDS"].split(",")
doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "FROM THE CHILD"}}}
client.update_image_set_metadata(
    datastoreId=d, imageSetId=ids[0], latestVersionId="1",
    updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}},
)
post("/settle")
assert client.get_image_set(datastoreId=d, imageSetId=ids[0])["imageSetWorkflowStatus"] == "UPDATED"
post("/reset")  # the next test starts from the seeded image sets again
assert client.get_image_set(datastoreId=d, imageSetId=ids[0])["versionId"] == "1"
print("child saw", len(ids), "image sets")
sys.exit(7)
"""


def test_emulator_runs_a_command_with_its_endpoint_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    emulator_args = ["--no-throttle", "--lock-seconds", "5", "--seed-count", "2"]
    command = [sys.executable, str(tmp_path / "child.py")]
    r = subprocess.run(
        [sys.executable, "-m", "async_hi", "emulator", *emulator_args, "--", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 7, r.stderr  # the command's own status
    assert r.stdout.strip() == "child saw 2 image sets"
    assert "running" in r.stderr
