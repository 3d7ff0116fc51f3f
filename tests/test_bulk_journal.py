"""update_many with a journal: interrupted at random points, reconciled, resumed: each request lands once."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from async_hi._bulk import Outcome, update_many
from async_hi._journal import Journal, JournalError
from async_hi._reconcile import reconcile
from async_hi._updates import MetadataUpdate
from async_hi.document import apply_update
from async_hi.emulator._seed import synthetic_metadata
from async_hi.emulator._store import Store
from tests.bulk_helpers import StoreReader

pytestmark = pytest.mark.anyio


@dataclass
class Result:
    latest_version_id: str


def store_apply(store: Store) -> Any:
    async def apply(u: MetadataUpdate) -> Result:
        await anyio.lowlevel.checkpoint()
        current = store.image_set(u.datastore_id, u.image_set_id).latest.version_id
        store.update(
            u.datastore_id,
            u.image_set_id,
            latest_version=current,
            updatable=u.updatable,
            removable=u.removable,
        )
        await anyio.lowlevel.checkpoint()  # a cancellation here: landed, but nobody heard
        return Result(str(current + 1))

    return apply


def make_requests(ds: str, isets: list[str], n: int, seed: int) -> list[tuple[int, MetadataUpdate]]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        attr = rng.choice(["StudyDescription", "AccessionNumber", "StudyDate"])
        value = f"{k:08d}" if attr == "StudyDate" else f"V{k}"
        out.append(
            (
                k + 1,
                MetadataUpdate(
                    datastore_id=ds,
                    image_set_id=rng.choice(isets),
                    updatable={"Study": {"DICOM": {attr: value}}},
                ),
            )
        )
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_interrupted_runs_resume_to_exactly_once(tmp_path: Path, seed: int) -> None:
    store = Store(lock_seconds=0)
    ds = store.create_datastore().datastore_id
    rng = random.Random(seed)
    isets = [store.add_image_set(ds, synthetic_metadata(rng)).image_set_id for _ in range(4)]
    original = {i: store.image_set(ds, i).latest.metadata for i in isets}
    requests = make_requests(ds, isets, 40, seed)
    coalesce = seed % 2 == 1
    journal_path = tmp_path / "journal.jsonl"
    reports: dict[int, list[str]] = {k: [] for k, _ in requests}
    stops = 0
    for _attempt in range(20):
        async with Journal(journal_path) as journal:
            await reconcile(journal, requests, StoreReader(store))
            run = update_many(
                requests,
                apply=store_apply(store),
                concurrency=3,
                coalesce=coalesce,
                journal=journal,
                reader=StoreReader(store),
            )
            stop_after = rng.randint(1, 12)
            seen: list[Outcome] = []
            async with run:
                async for outcome in run:
                    seen.append(outcome)
                    if stops < 4 and len(seen) == stop_after:
                        stops += 1
                        break  # leaves the block: calls in flight are cancelled mid-way
            for o in seen:
                reports[o.index].append(o.status)
            if len(seen) == len(requests) and all(o.status in ("applied", "skipped") for o in seen):
                break
    assert stops == 4
    assert all(r[-1] in ("applied", "skipped") for r in reports.values())
    for iset in isets:
        mine = [u for _, u in requests if u.image_set_id == iset]
        versions = store.image_set(ds, iset).versions
        expected = original[iset]
        for u in mine:
            expected = apply_update(expected, u.updatable, u.removable)
        assert versions[-1].metadata["Study"] == expected["Study"]
        if not coalesce:
            # one version per request, in input order: nothing lost, nothing applied twice
            assert len(versions) == 1 + len(mine)
            for v, u in zip(versions[1:], mine, strict=True):
                previous = versions[v.version_id - 2].metadata
                assert v.metadata["Study"] == apply_update(previous, u.updatable, u.removable)["Study"]
        else:
            assert len(versions) <= 1 + len(mine)


async def test_a_journal_with_open_intents_refuses_to_run_until_reconciled(tmp_path: Path) -> None:
    store = Store(lock_seconds=0)
    ds = store.create_datastore().datastore_id
    iset = store.add_image_set(ds, synthetic_metadata(random.Random(0))).image_set_id
    requests = make_requests(ds, [iset], 3, 0)
    async with Journal(tmp_path / "j") as journal:
        await journal.intent(
            keys=[1], digests=[requests[0][1].digest()], datastore_id=ds, image_set_id=iset, base="1"
        )
        with pytest.raises(JournalError, match="run reconcile"):
            async with update_many(
                requests, apply=store_apply(store), journal=journal, reader=StoreReader(store)
            ):
                pass
        await reconcile(journal, requests, StoreReader(store))
        async with update_many(
            requests, apply=store_apply(store), journal=journal, reader=StoreReader(store)
        ) as run:
            assert sorted([o.index async for o in run]) == [1, 2, 3]


async def test_resume_skips_finished_and_reuses_no_quota_for_them(tmp_path: Path) -> None:
    store = Store(lock_seconds=0)
    ds = store.create_datastore().datastore_id
    isets = [store.add_image_set(ds, synthetic_metadata(random.Random(i))).image_set_id for i in range(3)]
    requests = make_requests(ds, isets, 12, 1)
    calls = 0
    inner = store_apply(store)

    async def counting(u: MetadataUpdate) -> Result:
        nonlocal calls
        calls += 1
        result: Result = await inner(u)
        return result

    async with (
        Journal(tmp_path / "j") as journal,
        update_many(requests, apply=counting, journal=journal, reader=StoreReader(store)) as run,
    ):
        first = [o async for o in run]
    assert {o.status for o in first} == {"applied"}
    before = calls
    async with (
        Journal(tmp_path / "j") as journal,
        update_many(requests, apply=counting, journal=journal, reader=StoreReader(store)) as run,
    ):
        second = [o async for o in run]
    assert calls == before
    assert [o.status for o in second] == ["skipped"] * 12
    assert all(o.previous == "applied" and o.ok for o in second)


async def test_a_call_reconciled_as_landed_is_not_sent_again_in_the_same_session(tmp_path: Path) -> None:
    store = Store(lock_seconds=0)
    ds = store.create_datastore().datastore_id
    iset = store.add_image_set(ds, synthetic_metadata(random.Random(0))).image_set_id
    requests = make_requests(ds, [iset], 3, 0)
    async with Journal(tmp_path / "j") as journal:
        await journal.intent(
            keys=[1], digests=[requests[0][1].digest()], datastore_id=ds, image_set_id=iset, base="1"
        )
    await store_apply(store)(requests[0][1])  # it landed; the process died before hearing so
    sent: list[MetadataUpdate] = []
    inner = store_apply(store)

    async def apply(u: MetadataUpdate) -> Result:
        sent.append(u)
        result: Result = await inner(u)
        return result

    async with Journal(tmp_path / "j") as journal:
        (verdict,) = await reconcile(journal, requests, StoreReader(store))
        assert verdict.applied
        async with update_many(
            requests, apply=apply, journal=journal, reader=StoreReader(store), coalesce=False
        ) as run:
            outcomes = {o.index: o async for o in run}
    assert outcomes[1].status == "skipped"
    assert outcomes[1].previous == "applied"
    assert [u.digest() for u in sent] == [requests[1][1].digest(), requests[2][1].digest()]
    assert len(store.image_set(ds, iset).versions) == 4


@pytest.mark.parametrize("coalesce", [False, True])
async def test_a_limiter_that_cannot_grant_stops_the_run_and_leaves_unsent_requests_unsent(
    tmp_path: Path, coalesce: bool
) -> None:
    from async_hi._errors import LimiterUnavailableError

    store = Store(lock_seconds=0)
    ds = store.create_datastore().datastore_id
    rng = random.Random(3)
    isets = [store.add_image_set(ds, synthetic_metadata(rng)).image_set_id for _ in range(3)]
    original = {i: store.image_set(ds, i).latest.metadata for i in isets}
    requests = make_requests(ds, isets, 30, 3)
    sent = store_apply(store)
    calls = 0

    async def apply(u: MetadataUpdate) -> Result:
        nonlocal calls
        calls += 1
        if calls >= 6:  # the shared limiter lost Redis: fail-closed, before anything is sent
            raise LimiterUnavailableError("Redis is unreachable")
        return await sent(u)

    journal_path = tmp_path / "journal.jsonl"
    outcomes: list[Outcome] = []
    async with Journal(journal_path) as journal:
        run = update_many(
            requests,
            apply=apply,
            concurrency=2,
            coalesce=coalesce,
            journal=journal,
            reader=StoreReader(store),
        )
        with pytest.raises(LimiterUnavailableError):
            async with run:
                outcomes = [o async for o in run]
        assert run.stats.failed == 0
    statuses = {o.status for o in outcomes}
    assert "failed" not in statuses
    assert "cancelled" in statuses
    assert run.stats.calls <= 6 + 1  # it stopped sending (one other drain may have been mid-call)
    assert '"t":"failed"' not in journal_path.read_text()  # nothing marked failed that was never sent
    # a resume (the limiter is back) sends the rest as they are: no --retry-failed needed
    async with Journal(journal_path) as journal:
        await reconcile(journal, requests, StoreReader(store))
        async with update_many(
            requests, apply=sent, concurrency=2, coalesce=coalesce, journal=journal, reader=StoreReader(store)
        ) as run:
            again = [o async for o in run]
    assert all(o.status in ("applied", "skipped") and o.previous != "failed" for o in again)
    assert len(again) == len(requests)
    for iset in isets:
        mine = [u for _, u in requests if u.image_set_id == iset]
        versions = store.image_set(ds, iset).versions
        expected = original[iset]
        for u in mine:
            expected = apply_update(expected, u.updatable, u.removable)
        assert versions[-1].metadata["Study"] == expected["Study"]
        if not coalesce:
            assert len(versions) == 1 + len(mine)  # each request exactly once
