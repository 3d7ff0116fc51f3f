"""update_many with a fake ``apply``: ordering, one write per image set, laziness, coalescing, stopping."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import pytest

from async_hi._bulk import Outcome, update_many
from async_hi._updates import MetadataUpdate

pytestmark = pytest.mark.anyio
DS = "d" * 32


def image_set(n: int) -> str:
    return f"{n:032d}"


def req(n: int, iset: int, attr: str = "StudyDescription") -> MetadataUpdate:
    return MetadataUpdate(
        datastore_id=DS, image_set_id=image_set(iset), updatable={"Study": {"DICOM": {attr: f"V{n}"}}}
    )


@dataclass
class Result:
    latest_version_id: str


class FakeService:
    """Records calls; checks no two calls overlap on one image set; yields at random points."""

    def __init__(self, seed: int = 0, *, fail: set[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.total_in_flight = 0
        self.peak_total = 0
        self.calls: list[MetadataUpdate] = []
        self.versions: dict[str, int] = defaultdict(lambda: 1)
        self.fail = fail or set()
        self.gate: anyio.Event | None = None
        self.cancelled = 0

    async def apply(self, update: MetadataUpdate) -> Result:
        iset = update.image_set_id
        assert self.in_flight[iset] == 0, "two writes in flight on one image set"
        self.in_flight[iset] += 1
        self.total_in_flight += 1
        self.peak_total = max(self.peak_total, self.total_in_flight)
        try:
            self.calls.append(update)
            if self.gate is not None:
                await self.gate.wait()
            for _ in range(self.rng.randint(0, 5)):
                await anyio.lowlevel.checkpoint()
            if update.updatable and any(v in self.fail for v in update.updatable["Study"]["DICOM"].values()):
                raise RuntimeError("refused")
            self.versions[iset] += 1
            return Result(str(self.versions[iset]))
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.in_flight[iset] -= 1
            self.total_in_flight -= 1


def values(update: MetadataUpdate) -> list[str]:
    assert update.updatable is not None
    return list(update.updatable["Study"]["DICOM"].values())


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_every_request_once_in_order_per_image_set(anyio_backend: str) -> None:
    rng = random.Random(3)
    plan = [rng.randrange(6) for _ in range(120)]
    requests = [req(n, iset) for n, iset in enumerate(plan)]
    svc = FakeService(1)
    outcomes: list[Outcome] = []
    async with update_many(requests, apply=svc.apply, concurrency=3, coalesce=False) as run:
        async for outcome in run:
            outcomes.append(outcome)
    assert sorted(o.index for o in outcomes) == list(range(120))
    assert all(o.status == "applied" and o.coalesced == 1 for o in outcomes)
    assert svc.peak_total <= 3
    per_set: dict[str, list[str]] = defaultdict(list)
    for call in svc.calls:
        per_set[call.image_set_id] += values(call)
    for iset in set(plan):
        assert per_set[image_set(iset)] == [f"V{n}" for n, s in enumerate(plan) if s == iset]
    assert run.stats.calls == 120
    assert run.stats.applied == 120
    assert run.stats.pending == 0
    assert 1 <= run._workers <= 3  # a pool of workers, not a task per image set


async def test_async_iterable_input_and_keyed_items() -> None:
    async def gen() -> AsyncIterator[tuple[int, MetadataUpdate]]:
        for n in range(10):
            await anyio.lowlevel.checkpoint()
            yield (100 + n, req(n, n % 3))

    svc = FakeService()
    async with update_many(gen(), apply=svc.apply) as run:
        keys = sorted([o.index async for o in run])
    assert keys == list(range(100, 110))


@pytest.mark.parametrize("first_in_flight", [True, False])
async def test_queued_requests_for_one_image_set_are_coalesced_but_reported_each(
    first_in_flight: bool,
) -> None:
    svc = FakeService()
    svc.gate = anyio.Event()
    requests = [req(0, 0), req(1, 0, "AccessionNumber"), req(2, 0), req(3, 0, "StudyDate"), req(4, 1)]

    async def slowly() -> AsyncIterator[MetadataUpdate]:
        for r in requests:
            yield r
            await anyio.wait_all_tasks_blocked()  # the first call leaves before the rest arrive

    outcomes: list[Outcome] = []
    async with update_many(slowly() if first_in_flight else requests, apply=svc.apply, concurrency=2) as run:
        await anyio.wait_all_tasks_blocked()
        svc.gate.set()
        async for outcome in run:
            outcomes.append(outcome)
    by_index = {o.index: o for o in outcomes}
    assert [by_index[i].status for i in range(5)] == ["applied"] * 5
    calls0 = [c for c in svc.calls if c.image_set_id == image_set(0)]
    if first_in_flight:
        assert [by_index[i].coalesced for i in range(4)] == [1, 3, 3, 3]
        assert by_index[1].result is by_index[3].result
        assert len(calls0) == 2
        assert calls0[1].updatable == {
            "Study": {"DICOM": {"AccessionNumber": "V1", "StudyDescription": "V2", "StudyDate": "V3"}}
        }
        assert run.stats.saved == 2
    else:
        assert [by_index[i].coalesced for i in range(4)] == [4, 4, 4, 4]
        assert len(calls0) == 1
        assert calls0[0].updatable == {
            "Study": {"DICOM": {"StudyDescription": "V2", "AccessionNumber": "V1", "StudyDate": "V3"}}
        }
        assert run.stats.saved == 3
    assert run.stats.calls == len(calls0) + 1


async def test_coalescing_can_be_turned_off() -> None:
    svc = FakeService()
    svc.gate = anyio.Event()
    async with update_many([req(n, 0) for n in range(4)], apply=svc.apply, coalesce=False) as run:
        await anyio.wait_all_tasks_blocked()
        svc.gate.set()
        outcomes = [o async for o in run]
    assert len(svc.calls) == 4
    assert all(o.coalesced == 1 for o in outcomes)


async def test_a_refused_coalesced_call_is_resent_one_by_one() -> None:
    class Refused(Exception):
        code = "ValidationException"

    svc = FakeService()
    svc.gate = anyio.Event()
    sent: list[int] = []

    async def apply(update: MetadataUpdate) -> Result:
        sent.append(len(values(update)))
        if len(values(update)) > 1:
            raise Refused
        return await svc.apply(update)

    requests = [req(0, 0), req(1, 0, "AccessionNumber"), req(2, 0, "StudyDate")]
    async with update_many(requests, apply=apply) as run:
        await anyio.wait_all_tasks_blocked()
        svc.gate.set()
        outcomes = sorted([o async for o in run], key=lambda o: o.index)
    assert sent == [3, 1, 1, 1]  # all three queued at once: one merged call, refused, then one by one
    assert [o.status for o in outcomes] == ["applied"] * 3
    assert [values(c) for c in svc.calls] == [["V0"], ["V1"], ["V2"]]


async def test_failures_are_reported_and_the_rest_goes_on() -> None:
    svc = FakeService(fail={"V3", "V7"})
    async with update_many([req(n, n % 4) for n in range(10)], apply=svc.apply, coalesce=False) as run:
        outcomes = {o.index: o async for o in run}
    assert {i for i, o in outcomes.items() if o.status == "failed"} == {3, 7}
    assert isinstance(outcomes[3].error, RuntimeError)
    assert not outcomes[3].ok
    assert sum(o.status == "applied" for o in outcomes.values()) == 8


async def test_stop_on_error_stops_pulling_and_cancels_the_queued() -> None:
    svc = FakeService(fail={"V2"})

    def endless() -> Iterator[MetadataUpdate]:
        n = 0
        while True:
            yield req(n, n % 2)
            n += 1

    async with update_many(
        endless(), apply=svc.apply, concurrency=2, stop_on_error=True, coalesce=False
    ) as run:
        outcomes = [o async for o in run]
    statuses = {o.index: o.status for o in outcomes}
    assert statuses[2] == "failed"
    assert len(statuses) == run.stats.pulled  # every pulled request has exactly one outcome
    assert run.stats.pulled < 30


@pytest.mark.parametrize("coalesce", [False, True])
async def test_input_is_pulled_lazily_and_held_requests_stay_bounded(coalesce: bool) -> None:
    pulled = 0

    def endless_one_image_set() -> Iterator[MetadataUpdate]:
        nonlocal pulled
        while True:
            pulled += 1
            yield req(pulled, 0)

    svc = FakeService()
    svc.gate = anyio.Event()  # the first call never finishes: everything else must wait
    run = update_many(
        endless_one_image_set(), apply=svc.apply, concurrency=4, max_pending=10, coalesce=coalesce
    )
    async with run:
        await anyio.wait_all_tasks_blocked()
        assert run.stats.pending == 10
        # in flight (one request, or all that were queued when it left, merged) + 10 queued + 1 held
        assert pulled == (21 if coalesce else 12)
        run.stop()
        svc.gate.set()
        outcomes = [o async for o in run]
    assert [o.status for o in outcomes].count("applied") == (10 if coalesce else 1)
    assert [o.status for o in outcomes].count("cancelled") == 11


async def test_memory_stays_bounded_on_an_endless_input_of_distinct_image_sets() -> None:
    pulled = 0

    def endless() -> Iterator[MetadataUpdate]:
        nonlocal pulled
        while True:
            pulled += 1
            yield req(pulled, pulled % 1000)

    svc = FakeService()
    seen = 0
    async with update_many(endless(), apply=svc.apply, concurrency=8, max_pending=16) as run:
        async for _ in run:
            seen += 1
            assert run.stats.pending <= 16 + 1
            assert pulled - seen <= 8 + 16 + 8 + 2  # in flight + queued + outcome buffer + held
            if seen == 3000:
                break
    assert svc.peak_total <= 8
    assert run.stats.peak_pending <= 17


async def test_leaving_early_cancels_calls_in_flight() -> None:
    svc = FakeService()
    svc.gate = anyio.Event()  # never set
    with anyio.fail_after(5):
        async with update_many([req(n, n) for n in range(20)], apply=svc.apply, concurrency=4) as run:
            await anyio.wait_all_tasks_blocked()
            assert run.stats.in_flight == 4
    assert svc.cancelled == 4


async def test_graceful_stop_finishes_calls_in_flight() -> None:
    svc = FakeService()
    svc.gate = anyio.Event()
    requests = [req(n, n % 3) for n in range(12)]
    async with update_many(requests, apply=svc.apply, concurrency=3, coalesce=False) as run:
        await anyio.wait_all_tasks_blocked()
        run.stop()
        svc.gate.set()
        outcomes = [o async for o in run]
    assert svc.cancelled == 0
    applied = [o for o in outcomes if o.status == "applied"]
    assert len(applied) == 3
    assert len(outcomes) == run.stats.pulled
    assert {o.status for o in outcomes} == {"applied", "cancelled"}


async def test_bad_arguments() -> None:
    svc = FakeService()
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        update_many([], apply=svc.apply, concurrency=0)
    with pytest.raises(ValueError, match="max_pending must be >= 1"):
        update_many([], apply=svc.apply, max_pending=0)
    with pytest.raises(ValueError, match="reader is required with journal"):
        update_many([], apply=svc.apply, journal=object())  # type: ignore[arg-type]
    outcomes = []
    with pytest.raises(TypeError, match="input item 1: expected a MetadataUpdate"):
        async with update_many([req(0, 0), ("x", req(1, 0))], apply=svc.apply) as run:  # type: ignore[list-item]
            outcomes = [o async for o in run]
    assert [o.index for o in outcomes] == [0]  # what was pulled before the bad item is reported (cancelled)


async def test_outcome_repr_and_run_repr_hold_no_values() -> None:
    svc = FakeService()
    async with update_many([req(0, 0)], apply=svc.apply) as run:
        (outcome,) = [o async for o in run]
    assert "V0" not in repr(outcome)
    assert "applied=1" in repr(run)


async def test_an_error_in_the_callers_loop_propagates_unwrapped() -> None:
    svc = FakeService()
    svc.gate = anyio.Event()
    with pytest.raises(KeyError, match="mine"):  # noqa: PT012
        async with update_many([req(n, n) for n in range(5)], apply=svc.apply):
            await anyio.wait_all_tasks_blocked()
            raise KeyError("mine")
    assert svc.cancelled == 5


async def test_a_result_that_says_the_apply_failed_is_a_failure() -> None:
    from async_hi._bulk import ApplyFailedError

    @dataclass
    class Failed:
        latest_version_id: str = "2"
        failed: bool = True
        message: str = "SECRET service text"

    async def apply(update: MetadataUpdate) -> Failed:
        return Failed()

    async with update_many([req(0, 0)], apply=apply) as run:
        (outcome,) = [o async for o in run]
    assert outcome.status == "update-failed"  # the client's own word for it
    assert not outcome.ok
    assert run.stats.failed == 1
    assert run.stats.applied == 0
    assert isinstance(outcome.error, ApplyFailedError)
    assert "UPDATE_FAILED" in str(outcome.error)
    assert "SECRET" not in str(outcome.error)


async def test_busy_slots_do_not_block_pulling_so_interleaved_requests_coalesce() -> None:
    svc = FakeService()
    svc.gate = anyio.Event()
    attrs = ["StudyDescription", "AccessionNumber", "StudyDate", "PatientAge", "ReferringPhysicianName"]
    # five rounds over six image sets, two slots: requests for image sets without a slot
    # still queue, so each image set's later requests merge into one call
    requests = [req(r * 6 + s, s, attrs[r]) for r in range(5) for s in range(6)]
    async with update_many(requests, apply=svc.apply, concurrency=2, max_pending=64) as run:
        await anyio.wait_all_tasks_blocked()
        assert run.stats.pulled == 30
        assert run.stats.in_flight == 2
        svc.gate.set()
        outcomes = [o async for o in run]
    assert len(outcomes) == 30
    assert {o.status for o in outcomes} == {"applied"}
    # everything was queued before the first call left: one call per image set
    assert len(svc.calls) == 6
    assert run.stats.saved == 30 - 6
    assert sorted(len(values(c)) for c in svc.calls) == [5] * 6
    assert svc.peak_total <= 2


def test_bulk_public_names_and_redis_is_imported_only_when_asked_for() -> None:
    import subprocess
    import sys

    import async_hi

    bulk = {"update_many", "Outcome", "BulkRun", "Journal", "reconcile", "read_manifest", "ManifestError"}
    bulk |= {
        "ClientVersionReader",
        "merge_updates",
        "RedisLimiter",
        "RedisLimiterConfig",
        "RedisUnavailableError",
    }
    assert bulk <= set(async_hi.__all__)
    for name in (
        "ManifestError",
        "JournalError",
        "RedisUnavailableError",
        "ApplyFailedError",
        "ReconcileError",
    ):
        assert issubclass(getattr(async_hi, name), async_hi.HealthImagingError), name
    code = "import sys, async_hi; assert 'redis' not in sys.modules; async_hi.RedisLimiter; "
    code += "assert 'redis' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_apply_that_takes_a_version_hint_gets_the_version_of_our_last_write() -> None:
    service = FakeService(seed=3)
    hints: list[tuple[str, str | None, int]] = []

    async def apply(update: MetadataUpdate, *, version_hint: str | None = None) -> Result:
        iset = update.image_set_id
        hints.append((iset, version_hint, service.versions[iset]))
        return await service.apply(update)

    # image set 0's requests come back after its queue emptied (the other image sets in between)
    requests = [req(n, n % 3) for n in range(12)]
    async with update_many(requests, apply=apply, concurrency=3, coalesce=False) as run:
        outcomes = [o async for o in run]
    assert all(o.status == "applied" for o in outcomes)
    first: set[str] = set()
    for iset, hint, current in hints:
        if iset not in first:
            first.add(iset)
            assert hint is None  # nothing written yet: no hint
        else:
            assert hint == str(current)  # the version our previous write created
    assert len(first) == 3


async def test_consecutive_updates_of_one_image_set_need_one_read_in_all() -> None:
    from async_hi import LimiterConfig, Quota
    from async_hi.contract import OPERATIONS
    from async_hi.emulator import Emulator

    fast = LimiterConfig(quotas=dict.fromkeys(OPERATIONS, Quota(rate=1000.0, burst=1000)))
    async with Emulator(lock_seconds=0, quotas=None) as emu:
        seeded = emu.seed(3, series=1, instances=1)
        d = seeded.datastore_id
        requests = [
            MetadataUpdate(
                datastore_id=d, image_set_id=i, updatable={"Study": {"DICOM": {"StudyDescription": f"R{r}"}}}
            )
            for r in range(4)
            for i in seeded.image_set_ids
        ]
        async with (
            emu.client(limiter_config=fast) as hi,
            update_many(requests, apply=hi.update_image_set_metadata, concurrency=3, coalesce=False) as run,
        ):
            assert all([o.status == "applied" async for o in run])
        reads = [r for r in emu.requests if r.operation == "GetImageSet"]
        writes = [r for r in emu.requests if r.operation == "UpdateImageSetMetadata"]
        assert len(writes) == 12
        assert len(reads) == 3  # the first update of each image set; the rest go at the known version
        for i in seeded.image_set_ids:  # the emulator's history: four versions, the last one last
            versions = emu.history(d, i)
            assert len(versions) == 5
            assert versions[-1]["metadata"]["Study"]["DICOM"]["StudyDescription"] == "R3"


async def test_version_hints_stop_when_they_keep_being_refused() -> None:
    hinted: list[str | None] = []

    @dataclass
    class Refused:
        latest_version_id: str
        conflicts: int

    versions: dict[str, int] = defaultdict(lambda: 1)

    async def apply(update: MetadataUpdate, *, version_hint: str | None = None) -> Refused:
        hinted.append(version_hint)
        versions[update.image_set_id] += 1
        # e.g. the image set is still LOCKED applying the last write: a hinted write is refused first
        return Refused(str(versions[update.image_set_id]), conflicts=1 if version_hint else 0)

    async with update_many([req(n, 0) for n in range(10)], apply=apply, coalesce=False) as run:
        assert all([o.status == "applied" async for o in run])
    # the first has nothing to hint; then three refused hints; then it reads first again
    assert [h is not None for h in hinted] == [False, True, True, True] + [False] * 6
