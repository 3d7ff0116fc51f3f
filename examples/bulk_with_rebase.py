"""A bulk read-modify-write that survives concurrent writers: update_many with a rebase function.

The job title-cases every image set's StudyDescription ("CHEST CT" -> "Chest Ct"). Each update is computed
from a snapshot (version 1); meanwhile "another system" rewrites some of the
descriptions. When the client finds an image set at a newer version than the
update was computed against, it calls ``rebase`` with the fresh metadata, which
recomputes the change (or drops it when there is nothing left to do), so the
other writer's change is neither lost nor overwritten with stale data.

    python examples/bulk_with_rebase.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import anyio

from async_hi import LimiterConfig, MetadataUpdate, Quota, UpdateBuilder, update_many
from async_hi.emulator import Emulator


def title_case(metadata: Mapping[str, Any], datastore_id: str, image_set_id: str) -> MetadataUpdate | None:
    """The change for one image set, computed from its metadata (None: nothing to do)."""
    description = metadata["Study"]["DICOM"].get("StudyDescription")
    if not isinstance(description, str) or description == description.title():
        return None
    return UpdateBuilder(datastore_id, image_set_id).study(StudyDescription=description.title()).build()


def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate | None:
    return title_case(fresh, update.datastore_id, update.image_set_id)


async def main() -> None:
    quotas = {
        "UpdateImageSetMetadata": Quota(rate=10.0, burst=1),
        "GetImageSet": Quota(rate=25, burst=50),
        "GetImageSetMetadata": Quota(rate=50, burst=100),
    }
    async with Emulator(lock_seconds=0.05, quotas=quotas) as emu:
        seeded = emu.seed(6)
        d = seeded.datastore_id
        async with emu.client(limiter_config=LimiterConfig(quotas=quotas)) as hi:
            # the plan, computed from a snapshot at version 1
            plan = []
            for i in seeded.image_set_ids:
                update = title_case(await hi.get_image_set_metadata(d, i), d, i)
                assert update is not None  # synthetic descriptions are upper case
                plan.append(dataclasses.replace(update, latest_version_id="1"))
            # another system changes two image sets before the job runs
            for i, text in zip(
                seeded.image_set_ids[:2], ["MRI knee by OTHER system", "Abdomen From Pacs"], strict=True
            ):
                change = {"Study": {"DICOM": {"StudyDescription": text}}}
                emu.store.update(d, i, latest_version=1, updatable=change)

            async def apply(update: MetadataUpdate) -> Any:
                return await hi.update_image_set_metadata(update, rebase=rebase)

            async with update_many(plan, apply=apply, concurrency=4) as run:
                async for outcome in run:
                    result = outcome.result
                    print(
                        f"request {outcome.index}: {outcome.status}, {getattr(result, 'outcome', '-')}, "
                        f"version {getattr(result, 'latest_version_id', '-')}"
                    )
        await anyio.sleep(0.1)
        for i in seeded.image_set_ids:
            history = emu.history(d, i)
            final = history[-1]["metadata"]["Study"]["DICOM"]["StudyDescription"]
            print(f"{i}: {len(history)} versions, StudyDescription now {final!r}")


if __name__ == "__main__":
    anyio.run(main)
