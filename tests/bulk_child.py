"""A bulk run in its own process, for the SIGKILL test: reconcile, then resume with the journal.

Usage: python -m tests.bulk_child ENDPOINT REGION KEY SECRET MANIFEST JOURNAL COALESCE DIE

Prints "KEY STATUS" per outcome and "reconciled LANDED NOT_LANDED" on stderr;
exits 0 when every request is applied or skipped, 2 otherwise. DIE is "none",
or "before-send:N" / "after-send:N": SIGKILL itself just before the N-th call
leaves (its intent is journaled) or just after its answer arrives (before the
outcome is journaled): exact crash points, besides the parent's random kills.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import anyio

from async_hi._bulk import update_many
from async_hi._journal import Journal
from async_hi._manifest import ManifestEntry, read_manifest
from async_hi._reconcile import reconcile
from async_hi._updates import MetadataUpdate
from tests.bulk_helpers import RawHealthImaging, Result


def entries(path: str) -> Iterator[ManifestEntry]:
    for item in read_manifest(path):
        if not isinstance(item, ManifestEntry):
            raise SystemExit(f"bad manifest: {item}")
        yield item


async def main(*argv: str) -> int:
    endpoint, region, key, secret, manifest, journal, coalesce, die = argv
    client = RawHealthImaging(endpoint, region=region, access_key_id=key, secret_access_key=secret)
    when, _, nth = die.partition(":")
    calls = 0

    async def apply(update: MetadataUpdate) -> Result:
        nonlocal calls
        calls += 1
        mine = calls
        if when == "before-send" and mine == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        result = await client.update(update)
        if when == "after-send" and mine == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    ok = True
    try:
        async with Journal(journal) as j:
            verdicts = await reconcile(j, entries(manifest), client, poll_interval=0.01)
            landed = sum(v.applied for v in verdicts)
            print(f"reconciled {landed} {len(verdicts) - landed}", file=sys.stderr, flush=True)
            run = update_many(
                entries(manifest),
                apply=apply,
                journal=j,
                reader=client,
                concurrency=3,
                coalesce=coalesce == "1",
            )
            async with run:
                async for outcome in run:
                    ok = ok and outcome.status in ("applied", "skipped")
                    error = repr(outcome.error) if outcome.error else ""
                    print(outcome.index, outcome.status, error, flush=True)
    finally:
        await client.aclose()
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(anyio.run(main, *sys.argv[1:9]))
