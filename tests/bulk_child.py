"""A bulk run in its own process, for the SIGKILL test: reconcile, then resume with the journal.

Usage: python -m tests.bulk_child ENDPOINT REGION KEY SECRET MANIFEST JOURNAL COALESCE DIE

Prints "KEY STATUS" per outcome and "reconciled LANDED NOT_LANDED" on stderr;
exits 0 when every request is applied or skipped, 2 otherwise. DIE is "none",
or "before-send:N" / "after-send:N": SIGKILL itself just before the N-th call
leaves (its intent is journaled) or just after its answer arrives (before the
outcome is journaled), or "reconcile:N": at the N-th read of reconcile (in the
middle of settling the calls a previous crash left open): exact crash points,
besides the parent's random kills. Prints "reconciling K" (open intents) on
stderr before reconciling.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anyio

from async_hi._bulk import update_many
from async_hi._journal import Journal
from async_hi._manifest import ManifestEntry, read_manifest
from async_hi._reconcile import reconcile
from async_hi._updates import MetadataUpdate
from tests.bulk_helpers import RawHealthImaging, Result, VersionInfo


def entries(path: str) -> Iterator[ManifestEntry]:
    for item in read_manifest(path):
        if not isinstance(item, ManifestEntry):
            raise SystemExit(f"bad manifest: {item}")
        yield item


class DyingReader:
    """The client's reads, SIGKILLing the process at the N-th one (0: never)."""

    def __init__(self, client: RawHealthImaging, die_at: int) -> None:
        self.client = client
        self.die_at = die_at
        self.reads = 0

    def _read(self) -> None:
        self.reads += 1
        if self.reads == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        self._read()
        return await self.client.latest_version(datastore_id, image_set_id)

    async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Sequence[VersionInfo]:
        self._read()
        return await self.client.versions_after(datastore_id, image_set_id, after)

    async def metadata(self, datastore_id: str, image_set_id: str, version_id: str) -> Mapping[str, Any]:
        self._read()
        return await self.client.metadata(datastore_id, image_set_id, version_id)


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
            print(f"reconciling {len(j.open_intents)}", file=sys.stderr, flush=True)
            reader = DyingReader(client, int(nth) if when == "reconcile" else 0)
            verdicts = await reconcile(j, entries(manifest), reader, poll_interval=0.01)
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
