"""The admin API under /_emulator/, driven over HTTP as another process would."""

from __future__ import annotations

import httpx
import pytest

from async_hi.emulator import Emulator
from tests.conftest import RawClient
from tests.test_emulator_wire import STUDY_UPDATE

pytestmark = pytest.mark.anyio


async def test_seed_inspect_and_fail_an_apply_over_http(emulator: Emulator) -> None:
    base = f"{emulator.endpoint_url}/_emulator"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{base}/health")).json()["ok"] is True
        d = (await http.post(f"{base}/datastores", json={"name": "t"})).json()["datastoreId"]
        r = await http.post(f"{base}/datastores/{d}/imageSets", json={"count": 2, "series": 1, "seed": 3})
        assert r.status_code == 201
        ids = r.json()["imageSetIds"]
        assert (await http.get(f"{base}/datastores/{d}/imageSets")).json()["imageSetIds"] == ids

        bad = await http.post(
            f"{base}/datastores/{d}/imageSets/{ids[0]}/failNextApply", json={"message": "{x}"}
        )
        assert bad.status_code == 400
        ok = await http.post(
            f"{base}/datastores/{d}/imageSets/{ids[0]}/failNextApply", json={"message": "disk full"}
        )
        assert ok.status_code == 200

        raw = RawClient(emulator)
        try:
            r = await raw.send(raw.url(d, ids[0], "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE)
            assert r.status_code == 200
            emulator.store.clock = lambda: 4e9  # far past the LOCKED window
            state = (await raw.send(raw.url(d, ids[0], "getImageSet"))).json()
        finally:
            await raw.aclose()
        assert (state["imageSetWorkflowStatus"], state["message"]) == ("UPDATE_FAILED", "disk full")

        versions = (await http.get(f"{base}/datastores/{d}/imageSets/{ids[0]}/history")).json()["versions"]
        assert [(v["versionId"], v["workflowStatus"]) for v in versions] == [
            ("1", "CREATED"),
            ("2", "UPDATE_FAILED"),
        ]
        assert versions[1]["metadata"] == versions[0]["metadata"]
        assert versions[1]["requestDigest"]

        stats = (await http.get(f"{base}/stats")).json()
        assert stats["requests"]["UpdateImageSetMetadata 200"] == 1
        log = (await http.get(f"{base}/requests")).json()
        ops = [(op, status, isid) for _, op, status, _, isid, _ in log["requests"]]
        assert ops == [("UpdateImageSetMetadata", 200, ids[0]), ("GetImageSet", 200, ids[0])]
        assert log["requests"][0][0] <= log["requests"][1][0]  # arrival times, in order
        later = (await http.get(f"{base}/requests", params={"since": log["next"] - 1})).json()
        assert [row[1] for row in later["requests"]] == ["GetImageSet"]
        assert later["next"] == log["next"]
        assert (await http.get(f"{base}/requests", params={"since": "x"})).status_code == 400

        assert (await http.get(f"{base}/datastores/{'0' * 32}/imageSets")).status_code == 404
        assert (await http.post(f"{base}/datastores/{d}/imageSets", json={"count": 0})).status_code == 400
        assert (await http.post(f"{base}/datastores/{d}/imageSets", content=b"[1]")).status_code == 400
