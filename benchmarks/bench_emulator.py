"""How many signed updates per second the emulator serves (quotas and faults off).

The emulator runs in its own process (as `async-hi emulator`), the load comes
from this process: raw aiohttp requests signed with botocore's SigV4, each
update on a distinct image set, `--concurrency` in flight. Two rows, same run:
SigV4 verification on (the default) and off, so later client benchmarks can
show the emulator is not their bottleneck.

    python -m benchmarks.bench_emulator [--updates 3000] [--concurrency 64] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from async_hi.emulator import EmulatorProcess
from async_hi.rawhttp import sign_headers

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
    with EmulatorProcess(args) as emu:
        elapsed, ok, failed = asyncio.run(load(emu.info, concurrency))
    return {"sigv4": sigv4, "updates": ok, "failed": failed, "seconds": elapsed, "per_second": ok / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="200 updates (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    count = 200 if args.quick else args.updates
    rows = [run_one(count, args.concurrency, True), run_one(count, args.concurrency, False)]
    base = rows[0]["per_second"]
    print(f"emulator throughput, {count} updates on distinct image sets, concurrency {args.concurrency}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'SigV4 verification':<20} {'ratio':>6} {'updates/s':>10} {'seconds':>8} {'failed':>7}")
    for row in rows:
        label = "on (default)" if row["sigv4"] else "off"
        print(
            f"{label:<20} {row['per_second'] / base:>6.2f} {row['per_second']:>10.0f} "
            f"{row['seconds']:>8.2f} {row['failed']:>7}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
