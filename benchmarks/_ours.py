"""How the scenarios drive async-hi: ``update_many`` over a ``HealthImagingClient``.

``apply_all`` returns one :class:`Done` per request, in input order, with the
moment it finished, so scenarios can compute completion percentiles. Before
the bulk runner existed the scenarios ran the client under a task group; that
path remains as :func:`_task_group` for a checkout without ``async_hi._bulk``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from async_hi import HealthImagingClient, LimiterConfig, MetadataUpdate, Quota
from async_hi.contract import DEFAULT_QUOTAS, OPERATIONS

try:
    from async_hi._bulk import update_many
except ImportError:  # pragma: no cover - only on a checkout without the bulk runner
    update_many = None  # type: ignore[assignment]

HAVE_BULK = update_many is not None
RUNNER = "update_many" if HAVE_BULK else "client under a task group"


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
    """Apply ``updates`` through ``update_many`` (or a task group); one :class:`Done` per request.

    Args:
        hi: an open client.
        updates: the requests, in order.
        concurrency: image sets with a call in flight.
        coalesce: merge requests queued for one image set (update_many only).
    """
    if update_many is None:
        return await _task_group(hi, updates, concurrency=concurrency)
    start = time.monotonic()
    out: list[Done | None] = [None] * len(updates)
    async with update_many(
        updates, apply=hi.update_image_set_metadata, concurrency=concurrency, coalesce=coalesce
    ) as run:
        async for o in run:
            out[o.index] = Done(
                o.index,
                o.status == "applied",
                time.monotonic() - start,
                o.result,
                o.error,
                o.coalesced,
            )
    missing = [k for k, d in enumerate(out) if d is None]
    if missing:
        raise RuntimeError(f"update_many reported no outcome for {len(missing)} request(s)")
    return [d for d in out if d is not None]


async def _task_group(
    hi: HealthImagingClient, updates: Sequence[MetadataUpdate], *, concurrency: int
) -> list[Done]:
    start = time.monotonic()
    out: list[Done | None] = [None] * len(updates)
    gate = anyio.Semaphore(concurrency)

    async def one(k: int, u: MetadataUpdate) -> None:
        async with gate:
            try:
                r = await hi.update_image_set_metadata(u)
            except Exception as exc:
                out[k] = Done(k, False, time.monotonic() - start, error=exc)
            else:
                out[k] = Done(k, True, time.monotonic() - start, result=r)

    async with anyio.create_task_group() as tg:
        for k, u in enumerate(updates):
            tg.start_soon(one, k, u)
    return [d for d in out if d is not None]
