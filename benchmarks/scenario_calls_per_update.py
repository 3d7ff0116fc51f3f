"""Requests per update in ``update_many`` when one image set gets several updates in a row.

K image sets, M updates each (round after round, so each image set's
updates are consecutive), coalescing off (each update is its own call), quotas
off and no LOCKED window (``--lock-seconds 0``: what is measured is the
client's requests, not waiting). The ratio is the requests the emulator saw
(GetImageSet and UpdateImageSetMetadata) per update. The runner knows each
image set's version after its own write, so only the first update of an image
set needs a read: about 1 request per update (1 + 1/M).
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import (
    GET,
    UPD,
    Code,
    Mode,
    Row,
    emulator,
    pick,
    progress,
    run_async,
    run_child,
    server_requests,
)

NAME = "calls-per-update"
TITLE = "Requests per update, several consecutive updates per image set (update_many)"


def run(mode: Mode) -> list[Row]:
    k, m = pick(mode, (2, 3), (8, 10), (16, 25))
    spec: dict[str, Any] = {
        "kind": "ours",
        "concurrency": k,
        "per_set": m,
        "coalesce": False,
        "quotas": {UPD: [1e6, 1_000_000], GET: [1e6, 1_000_000]},
        "max_in_flight": 64,
    }
    rows = []
    chosen: list[tuple[str, Code]] = [
        ("async-hi update_many", "after"),
        ("async-hi before update_many", "before"),
    ]
    for name, code in chosen[:1] if mode == "tiny" else chosen:
        args = [
            "--no-throttle",
            "--lock-seconds",
            "0",
            "--seed-count",
            str(k),
            "--series",
            "1",
            "--instances",
            "1",
        ]
        try:
            with emulator(*args) as proc:
                r = run_child({**spec, "info": proc.info}, code)
                log = run_async(server_requests(proc.endpoint_url))
        except RuntimeError as exc:
            rows.append(Row(scenario=NAME, client=name, note=f"skipped: {exc}"[:300]))
            continue
        updates = k * m
        reads = sum(x[1] == GET for x in log)
        writes = sum(x[1] == UPD for x in log)
        ratio = (reads + writes) / updates
        row = Row(
            scenario=NAME,
            client=name,
            ratio=ratio,
            ratio_of="requests per update",
            figures={
                "GetImageSet per update": reads / updates,
                "update calls per update": writes / updates,
                "409s": sum(x[1] == UPD and x[2] == 409 for x in log),
                "failures": r["failures"],
                "image sets": k,
                "updates each": m,
                "seconds": r["end"] - r["t0"],
            },
        )
        if code == "after":
            row.target = "<= 1.1"
            row.met = ratio <= 1.1 and r["failures"] == 0
        progress(f"  {NAME}: {name}: {ratio:.3f} requests per update")
        rows.append(row)
    return rows
