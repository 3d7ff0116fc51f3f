"""A bulk run in its own process, for the SIGKILL test: reconcile, then resume with the journal.

Usage: python -m tests.bulk_child ENDPOINT REGION KEY SECRET MANIFEST JOURNAL COALESCE
Prints "KEY STATUS" per outcome; exits 0 when every request is applied or skipped, 2 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import anyio

from async_hi._bulk import update_many
from async_hi._journal import Journal
from async_hi._manifest import ManifestEntry, read_manifest
from async_hi._reconcile import reconcile
from tests.bulk_helpers import RawHealthImaging


def entries(path: str) -> Iterator[ManifestEntry]:
    for item in read_manifest(path):
        if not isinstance(item, ManifestEntry):
            raise SystemExit(f"bad manifest: {item}")
        yield item


async def main(
    endpoint: str, region: str, key: str, secret: str, manifest: str, journal: str, coalesce: str
) -> int:
    client = RawHealthImaging(endpoint, region=region, access_key_id=key, secret_access_key=secret)
    ok = True
    try:
        async with Journal(journal) as j:
            verdicts = await reconcile(j, entries(manifest), client, poll_interval=0.01)
            landed = sum(v.applied for v in verdicts)
            print(f"reconciled {landed} {len(verdicts) - landed}", file=sys.stderr, flush=True)
            run = update_many(
                entries(manifest),
                apply=client.update,
                journal=j,
                reader=client,
                concurrency=3,
                coalesce=coalesce == "1",
            )
            async with run:
                async for outcome in run:
                    ok = ok and outcome.status in ("applied", "skipped")
                    print(
                        outcome.index,
                        outcome.status,
                        repr(outcome.error) if outcome.error else "",
                        flush=True,
                    )
    finally:
        await client.aclose()
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(anyio.run(main, *sys.argv[1:8]))
