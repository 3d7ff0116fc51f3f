"""async-hi under trio: the httpx transport, three updates at once, each waited for.

The emulator (aiohttp, asyncio only) runs on a background thread; the client
runs on trio's event loop.

    python examples/trio_program.py
"""

from __future__ import annotations

import trio

from async_hi import HealthImagingClient, LimiterConfig, MetadataUpdate, Quota, UpdateBuilder
from async_hi.emulator import EmulatorThread


async def main(emu: EmulatorThread, datastore_id: str, image_set_ids: tuple[str, ...]) -> None:
    quotas = {"UpdateImageSetMetadata": Quota(rate=5.0, burst=1), "GetImageSet": Quota(rate=25.0, burst=50)}
    client = emu.client(transport="httpx", limiter_config=LimiterConfig(quotas=quotas))
    async with client as hi, trio.open_nursery() as nursery:
        for n, image_set_id in enumerate(image_set_ids):
            update = UpdateBuilder(datastore_id, image_set_id).study(StudyDescription=f"TRIO {n}").build()
            nursery.start_soon(report, hi, update)


async def report(hi: HealthImagingClient, update: MetadataUpdate) -> None:
    result = await hi.update_image_set_metadata(update, wait=True)
    print(f"{result.image_set_id}: version {result.latest_version_id} {result.workflow_status}")


if __name__ == "__main__":
    with EmulatorThread(lock_seconds=0.1, quotas={"UpdateImageSetMetadata": Quota(rate=5.0, burst=1)}) as emu:
        seeded = emu.call(lambda: emu.emulator.seed(3))
        trio.run(main, emu, seeded.datastore_id, seeded.image_set_ids)
