"""How many signed updates per second the emulator serves (quotas and faults off).

The emulator runs in its own process; the load comes from this process: raw
aiohttp requests signed with botocore's SigV4, each update on a distinct image
set, ``concurrency`` in flight. Two rows, same run: SigV4 verification on (the
default) and off; the ratio is against "on". The client scenarios stay well
below these rates, so they measure the clients, not the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp

from async_hi.rawhttp import sign_headers
from benchmarks._common import Mode, Row, emulator, pick, progress, run_async

NAME = "emulator"
TITLE = "The emulator's own ceiling: signed updates per second"

BODY = json.dumps(
    {
        "DICOMUpdates": {
            "updatableAttributes": base64.b64encode(
                json.dumps({"Study": {"DICOM": {"StudyDescription": "BENCH"}}}).encode()
            ).decode()
        }
    }
).encode()


async def load(info: dict[str, Any], concurrency: int) -> tuple[float, int, int]:
    ids: list[str] = info["image_set_ids"]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)
    ok = failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal ok, failed
            while not queue.empty():
                image_set = queue.get_nowait()
                url = (
                    f"{info['endpoint_url']}/datastore/{info['datastore_id']}/imageSet/{image_set}"
                    "/updateImageSetMetadata?latestVersion=1"
                )
                headers = sign_headers(
                    "POST",
                    url,
                    body=BODY,
                    headers={"Content-Type": "application/json"},
                    access_key_id=info["aws_access_key_id"],
                    secret_access_key=info["aws_secret_access_key"],
                    region=info["region"],
                )
                async with http.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, ok, failed


def run_one(count: int, concurrency: int, sigv4: bool) -> dict[str, Any]:
    args = [
        "--no-throttle",
        "--lock-seconds",
        "0",
        "--seed-count",
        str(count),
        "--series",
        "1",
        "--instances",
        "1",
    ]
    if not sigv4:
        args.append("--no-sigv4")
    with emulator(*args) as emu:
        elapsed, ok, failed = run_async(load(emu.info, concurrency))
    return {"updates": ok, "failed": failed, "seconds": elapsed, "per_second": ok / elapsed}


def run(mode: Mode) -> list[Row]:
    count = pick(mode, 40, 400, 3000)
    concurrency = pick(mode, 8, 64, 64)
    rows = []
    base: float | None = None
    for sigv4 in (True, False):
        r = run_one(count, concurrency, sigv4)
        base = base or r["per_second"]
        progress(f"  {NAME}: SigV4 {'on' if sigv4 else 'off'}: {r['per_second']:.0f} updates/s")
        rows.append(
            Row(
                scenario=NAME,
                client=f"raw aiohttp, SigV4 verification {'on (default)' if sigv4 else 'off'}",
                ratio=r["per_second"] / base,
                ratio_of="updates/s / SigV4 on",
                figures={**r, "concurrency": concurrency},
            )
        )
    return rows
