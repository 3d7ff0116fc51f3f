"""The documented default quota, enforced by the emulator, held by the default client with zero 429s."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

from async_hi import HealthImagingClient, RequestFinished, UpdateBuilder
from async_hi._events import Event
from async_hi.emulator import Emulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

UPD = "UpdateImageSetMetadata"


@pytest.mark.timeout(90)
async def test_six_updates_at_the_default_quota_no_429_and_at_least_4_s_apart() -> None:
    async with Emulator(lock_seconds=0.02) as emu:  # quotas: DEFAULT_QUOTAS (0.25 tps, burst 1 for updates)
        assert emu.config.quotas is not None
        assert emu.config.quotas[UPD].rate == 0.25
        seeded = emu.seed(6)
        d = seeded.datastore_id
        sends: list[float] = []

        def on_event(e: Event) -> None:
            if isinstance(e, RequestFinished) and e.operation == UPD:
                sends.append(time.monotonic() - e.seconds)

        async with HealthImagingClient(
            endpoint_url=emu.endpoint_url,
            region=emu.region,
            aws_access_key_id=emu.access_key_id,
            aws_secret_access_key=emu.secret_access_key,
            on_event=on_event,
        ) as hi:  # every limiter setting at its default
            async with anyio.create_task_group() as tg:
                for n, i in enumerate(seeded.image_set_ids):
                    u = UpdateBuilder(d, i).study(StudyDescription=f"Q{n}").build()
                    tg.start_soon(hi.update_image_set_metadata, u)
            stats = hi.stats()
        arrivals = [r.at for r in emu.requests if r.operation == UPD]
        throttled = [r for r in emu.requests if r.status == 429]
    assert throttled == []
    assert stats[UPD].throttles == 0
    assert stats[UPD].calls == 6
    assert len(arrivals) == 6
    for log in (sorted(sends), sorted(arrivals)):
        gaps = [b - a for a, b in itertools.pairwise(log)]
        assert min(gaps) >= 4.0, gaps
