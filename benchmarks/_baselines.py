"""The baselines, written as a careful user of each would: aiobotocore, boto3 with threads, raw aiohttp.

Every baseline does what an update needs: read the image set's version
(GetImageSet), then write against it (UpdateImageSetMetadata).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from async_hi import MetadataUpdate


@contextlib.asynccontextmanager
async def aiobotocore_client(
    info: Mapping[str, Any], *, mode: str = "standard", max_attempts: int = 3, pool: int = 10
) -> AsyncIterator[Any]:
    """An aiobotocore medical-imaging client on the emulator.

    Args:
        info: the emulator's info line.
        mode: botocore's retry mode (``standard``, ``adaptive``, ``legacy``).
        max_attempts: botocore's ``total_max_attempts`` (1 turns its retries off).
        pool: HTTP connections.
    """
    config = AioConfig(
        inject_host_prefix=False,  # else requests go to runtime-<host>
        retries={"mode": mode, "total_max_attempts": max_attempts},  # type: ignore[typeddict-item]
        max_pool_connections=max(10, pool),
    )
    async with get_session().create_client(
        "medical-imaging",
        region_name=info["region"],
        endpoint_url=info["endpoint_url"],
        aws_access_key_id=info["aws_access_key_id"],
        aws_secret_access_key=info["aws_secret_access_key"],
        config=config,
    ) as raw:
        yield raw


async def aio_update(raw: Any, u: MetadataUpdate) -> str:
    """Read the version, write against it; returns the new version id."""
    info = await raw.get_image_set(datastoreId=u.datastore_id, imageSetId=u.image_set_id)
    r = await raw.update_image_set_metadata(
        datastoreId=u.datastore_id,
        imageSetId=u.image_set_id,
        latestVersionId=info["versionId"],
        updateImageSetMetadataUpdates=u.payload(),
    )
    return str(r["latestVersionId"])


def boto3_client(info: Mapping[str, Any], *, pool: int = 10) -> Any:
    """A boto3 medical-imaging client (thread-safe; share it across the pool's threads)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "medical-imaging",
        region_name=info["region"],
        endpoint_url=info["endpoint_url"],
        aws_access_key_id=info["aws_access_key_id"],
        aws_secret_access_key=info["aws_secret_access_key"],
        config=Config(
            inject_host_prefix=False,
            retries={"mode": "standard", "total_max_attempts": 3},
            max_pool_connections=max(10, pool),
        ),
    )


def boto3_update(client: Any, u: MetadataUpdate) -> str:
    info = client.get_image_set(datastoreId=u.datastore_id, imageSetId=u.image_set_id)
    r = client.update_image_set_metadata(
        datastoreId=u.datastore_id,
        imageSetId=u.image_set_id,
        latestVersionId=info["versionId"],
        updateImageSetMetadataUpdates=u.payload(),
    )
    return str(r["latestVersionId"])


async def raw_update(http: aiohttp.ClientSession, endpoint_url: str, u: MetadataUpdate) -> bool:
    """The same two requests, unsigned, straight over aiohttp (the emulator must run with --no-sigv4)."""
    base = f"{endpoint_url}/datastore/{u.datastore_id}/imageSet/{u.image_set_id}"
    async with http.post(f"{base}/getImageSet") as r:
        if r.status != 200:
            await r.read()
            return False
        version = (await r.json(content_type=None))["versionId"]
    blobs = u.payload()["DICOMUpdates"]
    body = json.dumps({"DICOMUpdates": {k: base64.b64encode(v).decode() for k, v in blobs.items()}}).encode()
    async with http.post(
        f"{base}/updateImageSetMetadata?latestVersion={version}",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as r:
        await r.read()
        return r.status == 200
