"""``async-hi demo``: the whole bulk path against an in-process emulator, then checked.

Starts the emulator (updates limited to ``--rate`` tps, burst 1, so the limiter
has work to do), seeds the image sets the bundled manifest
(``async_hi/data/demo-manifest.jsonl``) names, runs it exactly as ``async-hi
update`` would (progress display, coalescing, a journal in a temporary
directory), waits for the last apply, and verifies every image set against
what the manifest says, request by request. Exit code 0 when the job succeeded
and every image set matches.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_OP = "UpdateImageSetMetadata"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a bundled bulk update against an in-process emulator and verify it",
        description="Start the emulator, seed image sets, apply the bundled manifest with the progress "
        "display, verify the results against the emulator's state and print the summary.",
    )
    p.add_argument("--rate", type=float, default=4.0, help="the emulator's update quota in tps (default 4)")
    p.add_argument("--concurrency", type=int, default=4, help="image sets updated at once (default 4)")
    p.add_argument("--no-coalesce", action="store_true", help="one call per request")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(run=run)


def _manifest() -> Path:
    return Path(str(resources.files("async_hi").joinpath("data/demo-manifest.jsonl")))


def expected_metadata(initial: Mapping[str, Any], requests: list[Any]) -> dict[str, Any]:
    """What one image set must look like after ``requests``, in order (reverts go to version 1 only)."""
    from async_hi.document import apply_update

    doc = dict(initial)
    for update in requests:
        if update.is_revert:
            if update.revert_to_version_id != "1":
                raise ValueError("the demo manifest may only revert to version 1")
            doc = dict(initial)
        else:
            doc = apply_update(doc, update.updatable, update.removable)
    return doc


async def _main(args: argparse.Namespace) -> tuple[Any, list[str]]:
    import anyio

    from async_hi._client import HealthImagingClient
    from async_hi._limiter import LimiterConfig
    from async_hi._manifest import ManifestEntry, read_manifest
    from async_hi.cli._job import run_job
    from async_hi.cli._progress import Progress, Snapshot
    from async_hi.contract import DEFAULT_QUOTAS, Quota
    from async_hi.emulator import Emulator, EmulatorConfig
    from async_hi.emulator._seed import synthetic_metadata

    path = _manifest()
    requests = [e.update for e in read_manifest(path) if isinstance(e, ManifestEntry)]
    quotas = {**DEFAULT_QUOTAS, _OP: Quota(rate=args.rate, burst=1)}
    lock = 0.1
    config = EmulatorConfig(lock_seconds=lock, quotas=quotas)
    problems: list[str] = []
    async with Emulator(config) as emu:
        store = emu.store
        rng = random.Random(2024)
        initial: dict[str, dict[str, Any]] = {}
        for update in requests:
            if update.datastore_id not in store.datastores:
                store.create_datastore("demo", datastore_id=update.datastore_id)
            if update.image_set_id not in initial:
                image_set = store.add_image_set(
                    update.datastore_id, synthetic_metadata(rng), image_set_id=update.image_set_id
                )
                initial[update.image_set_id] = image_set.latest.metadata
        async with HealthImagingClient(
            endpoint_url=emu.endpoint_url,
            region=emu.region,
            aws_access_key_id=emu.access_key_id,
            aws_secret_access_key=emu.secret_access_key,
            limiter_config=LimiterConfig(quotas=quotas),
        ) as client:
            progress = Progress(Snapshot, enabled=not (args.json or args.no_progress))
            progress.note(
                f"demo: {len(requests)} requests on {len(initial)} image sets, emulator at "
                f"{emu.endpoint_url}, updates limited to {args.rate:g} tps"
            )
            with tempfile.TemporaryDirectory() as tmp:
                summary = await run_job(
                    path,
                    client,
                    concurrency=args.concurrency,
                    coalesce=not args.no_coalesce,
                    journal_path=Path(tmp) / "demo.journal",
                    progress=progress,
                )
        await anyio.sleep(lock * 2)  # let the last applies finish
        for image_set_id, start in initial.items():
            mine = [u for u in requests if u.image_set_id == image_set_id]
            want = expected_metadata(start, mine)
            got = store.image_set(mine[0].datastore_id, image_set_id).applied_metadata()
            if (got.get("Patient"), got.get("Study")) != (want.get("Patient"), want.get("Study")):
                problems.append(f"image set {image_set_id} does not match the manifest")
    return summary, problems


def run(args: argparse.Namespace) -> int:
    import json

    import anyio

    from async_hi.cli._progress import print_summary

    if not args.rate > 0 or args.concurrency < 1:
        print("async-hi demo: --rate must be > 0 and --concurrency >= 1", file=sys.stderr)
        return 2
    summary, problems = anyio.run(_main, args)
    verified = not problems and summary.exit_code == 0
    if args.json:
        print(json.dumps({**summary.to_json(), "verified": verified, "problems": problems}))
    else:
        print_summary(summary, as_json=False)
        for problem in problems:
            print(f"verification: {problem}")
        if verified:
            print("verified: every image set matches the manifest, request by request")
    return 0 if verified else 1
