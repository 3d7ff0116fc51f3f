"""One metadata update, end to end: build it, send it under the limiter, wait for UPDATED.

Runs against an embedded emulator (with the real default quota: one update per
4 s) unless you give an endpoint:

    python examples/one_update.py
    python examples/one_update.py --region us-east-1 --datastore-id D --image-set-id I   # real AWS
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import anyio

from async_hi import HealthImagingClient, UpdateBuilder
from async_hi.emulator import Emulator


@contextlib.asynccontextmanager
async def target(args: argparse.Namespace) -> AsyncIterator[tuple[HealthImagingClient, str, str]]:
    if args.datastore_id:
        async with HealthImagingClient(region=args.region) as hi:  # the normal AWS credential chain
            yield hi, args.datastore_id, args.image_set_id
        return
    async with Emulator(lock_seconds=0.5) as emu:
        seeded = emu.seed(1)
        async with emu.client() as hi:
            yield hi, seeded.datastore_id, seeded.image_set_ids[0]


async def main(args: argparse.Namespace) -> None:
    async with target(args) as (hi, datastore_id, image_set_id):
        before = await hi.get_image_set(datastore_id, image_set_id)
        update = UpdateBuilder(datastore_id, image_set_id).study(StudyDescription=args.description).build()
        result = await hi.update_image_set_metadata(update, wait=True)
        print(
            f"image set {image_set_id}: version {before.version_id} -> {result.latest_version_id}, "
            f"{result.workflow_status}"
        )
        stats = hi.stats()["UpdateImageSetMetadata"]
        print(f"update calls: {stats.calls}, throttled: {stats.throttles}, conflicts: {stats.conflicts}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--datastore-id")
    parser.add_argument("--image-set-id")
    parser.add_argument("--description", default="CHEST CT")
    ns = parser.parse_args()
    if bool(ns.datastore_id) != bool(ns.image_set_id):
        parser.error("give both --datastore-id and --image-set-id, or neither (embedded emulator)")
    anyio.run(main, ns)
