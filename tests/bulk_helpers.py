"""Test doubles for the bulk runner until the real client lands.

``StoreReader`` reads an emulator ``Store`` directly (same thread/loop).
``RawHealthImaging`` is a deliberately small HTTP client (raw SigV4 via
``async_hi.rawhttp``) with ``update()`` and the ``VersionReader`` methods, for
end-to-end tests of the journal against a real emulator from another process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from async_hi._updates import MetadataUpdate
from async_hi.emulator._store import Store
from async_hi.rawhttp import sign_headers


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionInfo:
    version_id: str
    workflow_status: str


class StoreReader:
    """``VersionReader`` over an emulator ``Store`` (no HTTP)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        self.calls += 1
        return str(self.store.image_set(datastore_id, image_set_id).latest.version_id)

    async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Sequence[VersionInfo]:
        self.calls += 1
        image_set = self.store.image_set(datastore_id, image_set_id)
        return [
            VersionInfo(version_id=str(v.version_id), workflow_status=v.workflow_status)
            for v in image_set.versions
            if v.version_id > int(after)
        ]

    async def metadata(self, datastore_id: str, image_set_id: str, version_id: str) -> Mapping[str, Any]:
        self.calls += 1
        return self.store.image_set(datastore_id, image_set_id).version(int(version_id)).metadata


@dataclass(frozen=True, slots=True)
class Result:
    latest_version_id: str


class RawHealthImaging:
    """Just enough of a HealthImaging client: update with LOCKED retries, and reads."""

    def __init__(self, endpoint: str, *, region: str, access_key_id: str, secret_access_key: str) -> None:
        self.endpoint = endpoint
        self.creds = {
            "region": region,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
        }
        self.http = httpx.AsyncClient(timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _post(self, ds: str, iset: str, op: str, query: str = "", body: bytes = b"") -> httpx.Response:
        url = f"{self.endpoint}/datastore/{ds}/imageSet/{iset}/{op}" + (f"?{query}" if query else "")
        headers = {"Content-Type": "application/json"} if body else {}
        headers = sign_headers("POST", url, body=body, headers=headers, **self.creds)
        return await self.http.post(url, content=body, headers=headers)

    async def update(self, update: MetadataUpdate) -> Result:
        version = update.latest_version_id or await self.latest_version(
            update.datastore_id, update.image_set_id
        )
        payload = update.payload()
        if "DICOMUpdates" in payload:
            payload = {
                "DICOMUpdates": {k: base64.b64encode(v).decode() for k, v in payload["DICOMUpdates"].items()}
            }
        body = json.dumps(payload).encode()
        for _ in range(500):
            query = f"latestVersion={version}" + ("&force=true" if update.force else "")
            r = await self._post(
                update.datastore_id, update.image_set_id, "updateImageSetMetadata", query, body
            )
            if r.status_code == 200:
                return Result(latest_version_id=r.json()["latestVersionId"])
            if r.status_code != 409:
                raise RuntimeError(f"update failed: {r.status_code} {r.headers.get('x-amzn-ErrorType')}")
            # LOCKED by our own previous write: wait for it, then write on the version it made
            await anyio.sleep(0.01)
            state = (await self._post(update.datastore_id, update.image_set_id, "getImageSet")).json()
            if state["imageSetState"] == "ACTIVE" and state["versionId"] != version:
                raise RuntimeError("version moved under the writer")
        raise RuntimeError("image set stayed LOCKED")

    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        r = await self._post(datastore_id, image_set_id, "getImageSet")
        r.raise_for_status()
        return str(r.json()["versionId"])

    async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Sequence[VersionInfo]:
        out: list[VersionInfo] = []
        token = None
        while True:
            query = "maxResults=50" + (f"&nextToken={token}" if token else "")
            r = await self._post(datastore_id, image_set_id, "listImageSetVersions", query)
            r.raise_for_status()
            data = r.json()
            for item in data["imageSetPropertiesList"]:
                if int(item["versionId"]) > int(after):
                    out.append(
                        VersionInfo(
                            version_id=item["versionId"], workflow_status=item["ImageSetWorkflowStatus"]
                        )
                    )
            token = data.get("nextToken")
            if not token:
                return sorted(out, key=lambda v: int(v.version_id))

    async def metadata(self, datastore_id: str, image_set_id: str, version_id: str) -> Mapping[str, Any]:
        r = await self._post(datastore_id, image_set_id, "getImageSetMetadata", f"version={version_id}")
        r.raise_for_status()
        doc: dict[str, Any] = r.json()  # httpx undoes Content-Encoding: gzip
        return doc
