"""How the scenarios drive async-hi: ``update_many`` over a ``HealthImagingClient``.

``apply_all`` returns one :class:`Done` per request, in input order, with the
moment it finished, so scenarios can compute completion percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from async_hi import HealthImagingClient, LimiterConfig, MetadataUpdate, Quota, update_many
from async_hi.contract import DEFAULT_QUOTAS, OPERATIONS

RUNNER = "update_many"


@dataclass(frozen=True, slots=True)
class Done:
    """What became of one request."""

    index: int
    ok: bool
    seconds: float  # from the start of the run
    result: Any = None
    error: BaseException | None = None
    coalesced: int = 1


def unlimited(max_in_flight: int) -> LimiterConfig:
    """A limiter that never waits (for runs with the emulator's quotas off)."""
    big = Quota(rate=1e6, burst=1_000_000)
    return LimiterConfig(quotas=dict.fromkeys(OPERATIONS, big), max_in_flight=max_in_flight, adaptive=False)


def quota_config(rate: float, *, burst: int = 1, max_in_flight: int = 16) -> LimiterConfig:
    """The documented quotas, with UpdateImageSetMetadata at ``rate``/``burst``."""
    return LimiterConfig(
        quotas={**DEFAULT_QUOTAS, "UpdateImageSetMetadata": Quota(rate=rate, burst=burst)},
        max_in_flight=max_in_flight,
    )


async def apply_all(
    hi: HealthImagingClient,
    updates: Sequence[MetadataUpdate],
    *,
    concurrency: int,
    coalesce: bool = True,
) -> list[Done]:
    """Apply ``updates`` through ``update_many``; one :class:`Done` per request.

    Args:
        hi: an open client.
        updates: the requests, in order.
        concurrency: image sets with a call in flight.
        coalesce: merge requests queued for one image set.
    """
    start = time.monotonic()
    out: list[Done | None] = [None] * len(updates)
    async with update_many(
        updates, apply=hi.update_image_set_metadata, concurrency=concurrency, coalesce=coalesce
    ) as run:
        async for o in run:
            out[o.index] = Done(
                o.index,
                o.ok,
                time.monotonic() - start,
                o.result,
                o.error,
                o.coalesced,
            )
    missing = [k for k, d in enumerate(out) if d is None]
    if missing:
        raise RuntimeError(f"update_many reported no outcome for {len(missing)} request(s)")
    return [d for d in out if d is not None]
