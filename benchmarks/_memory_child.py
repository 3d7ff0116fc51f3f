"""The scale scenario's memory child: one bulk run over a manifest, reporting its own peak RSS.

    python -m benchmarks._memory_child MANIFEST JOURNAL|-

Streams the JSON Lines manifest through ``read_manifest`` and ``update_many``
(coalescing on, a journal unless ``-``) with an ``apply`` that answers at
once, then prints one JSON line: requests, calls, seconds, peak RSS (MiB).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from async_hi._bulk import update_many
from async_hi._journal import Journal
from async_hi._manifest import ManifestEntry, read_manifest
from async_hi._updates import MetadataUpdate


@dataclass
class _Result:
    latest_version_id: str


class _Reader:
    async def latest_version(self, datastore_id: str, image_set_id: str) -> str:
        return "1"


def write_manifest(path: Path, n: int) -> None:
    ds = "d" * 32
    with path.open("w") as f:
        for k in range(n):
            iset = f"{k % 1000:032d}"
            doc = {"Study": {"DICOM": {"StudyDescription": f"DESC {k}"}}}
            f.write(json.dumps({"datastoreId": ds, "imageSetId": iset, "updatable": doc}) + "\n")


def _peak_rss_kib() -> int:
    """This process's own peak RSS. Linux's ``ru_maxrss`` keeps the *parent's* peak across
    fork/vfork + exec (a large parent makes every child look large), so read ``VmHWM``, which
    belongs to the memory map this process got at exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def child(manifest: str, journal_path: str | None) -> None:
    versions: dict[str, int] = {}

    async def apply(u: MetadataUpdate) -> _Result:
        await anyio.lowlevel.checkpoint()
        versions[u.image_set_id] = versions.get(u.image_set_id, 1) + 1
        return _Result(str(versions[u.image_set_id]))

    entries = (e for e in read_manifest(manifest) if isinstance(e, ManifestEntry))
    done = 0
    start = time.perf_counter()
    if journal_path is None:
        async with update_many(entries, apply=apply, concurrency=16) as run:
            async for _ in run:
                done += 1
    else:
        async with Journal(journal_path, fsync=False) as journal:
            run = update_many(entries, apply=apply, concurrency=16, journal=journal, reader=_Reader())  # type: ignore[arg-type]
            async with run:
                async for _ in run:
                    done += 1
    elapsed = time.perf_counter() - start
    peak_kib = _peak_rss_kib()
    print(
        json.dumps(
            {"requests": done, "seconds": elapsed, "peak_rss_mib": peak_kib / 1024, "calls": run.stats.calls}
        )
    )


def main() -> None:
    anyio.run(child, sys.argv[1], None if sys.argv[2] == "-" else sys.argv[2])


if __name__ == "__main__":
    main()
