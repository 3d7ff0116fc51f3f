"""The conflict resolver on virtual time: stale versions, LOCKED windows, rebase, lost answers, budgets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from async_hi import (
    DeadlineExceededError,
    FakeClock,
    ImageSetDeletedError,
    MetadataUpdate,
    OutcomeUnknownError,
    RetriesExhaustedError,
    RetryPolicy,
    ThrottlingError,
    UpdateBuilder,
    UpdateFinished,
    UpdateStarted,
    ValidationError,
    Waiting,
)
from async_hi._conflict import resolve_update
from async_hi._events import Event
from tests.fakes import FakeService, fast_caller

pytestmark = pytest.mark.anyio

UPD = "UpdateImageSetMetadata"


def study(svc: FakeService, desc: str, version: str | None = None) -> MetadataUpdate:
    return (
        UpdateBuilder(svc.datastore_id, svc.image_set_id, latest_version_id=version)
        .study(StudyDescription=desc)
        .build()
    )


def desc_of(doc: Mapping[str, Any]) -> Any:
    return doc["Study"]["DICOM"].get("StudyDescription")


def other_writer(svc: FakeService, key: str, value: str) -> dict[str, Any]:
    return {"SchemaVersion": "1.1", "Study": {"DICOM": {key: value}}}


async def test_plain_update_one_attempt() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock))
    assert (r.outcome, r.attempts, r.conflicts, r.latest_version_id, r.base_version_id) == (
        "applied",
        1,
        0,
        "2",
        "1",
    )
    assert r.workflow_status == "UPDATING"  # no wait: the answer as given


async def test_stale_version_retries_at_the_new_version_and_keeps_both_changes() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.0)
    # another writer lands between our read and our write: a 409 on a stale latestVersion
    svc.before_send = lambda n: svc.write(other_writer(svc, "AccessionNumber", "OTHER")) if n == 1 else None
    async with clock.autojump():
        r = await resolve_update(study(svc, "A", version="1"), ops=svc, caller=fast_caller(clock), wait=True)
    assert svc.sent == ["1", "2"]
    assert (r.latest_version_id, r.conflicts, r.attempts, r.workflow_status) == ("3", 1, 2, "UPDATED")
    final = svc.image_set().latest.metadata
    assert desc_of(final) == "A"
    assert final["Study"]["DICOM"]["AccessionNumber"] == "OTHER"


async def test_a_stale_caller_version_is_found_by_a_read_not_a_409() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.5)
    svc.write(other_writer(svc, "AccessionNumber", "OTHER"))
    await clock.advance(1.0)
    async with clock.autojump():
        r = await resolve_update(study(svc, "A", version="1"), ops=svc, caller=fast_caller(clock))
    assert svc.sent == ["2"]
    assert r.conflicts == 0
    assert r.latest_version_id == "3"


async def test_without_read_before_write_a_known_version_is_written_at_once() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.0)
    policy = RetryPolicy(read_before_write=False)
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "A", version="1"), ops=svc, caller=fast_caller(clock, policy=policy)
        )
    assert (svc.reads, svc.sent, r.latest_version_id, r.conflicts) == (0, ["1"], "2", 0)


async def test_without_read_before_write_a_stale_version_costs_a_409_then_a_read() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.0)
    svc.write(other_writer(svc, "AccessionNumber", "OTHER"))
    await clock.advance(1.0)
    policy = RetryPolicy(read_before_write=False)
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "A", version="1"), ops=svc, caller=fast_caller(clock, policy=policy)
        )
    assert svc.sent == ["1", "2"]
    assert (r.conflicts, r.latest_version_id) == (1, "3")
    final = svc.image_set().latest.metadata
    assert (desc_of(final), final["Study"]["DICOM"]["AccessionNumber"]) == ("A", "OTHER")


async def test_locked_window_is_waited_out_by_polling_reads_not_writes() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=5.0)
    svc.write(other_writer(svc, "AccessionNumber", "OTHER"))  # LOCKED for 5 s from t=0
    events: list[Event] = []
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "A"), ops=svc, caller=fast_caller(clock, events=events), wait=True
        )
    assert svc.sent == ["2"]  # one write, after the lock: no 409 spent
    assert clock.now() >= 5.0
    waits = [e for e in events if isinstance(e, Waiting)]
    assert waits
    assert all(e.reason in ("locked", "applying") for e in waits)
    assert r.latest_version_id == "3"
    assert r.workflow_status == "UPDATED"


async def test_lock_that_starts_between_read_and_write_is_a_409_then_waited_out() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=3.0)
    svc.before_send = lambda n: svc.write(other_writer(svc, "AccessionNumber", "X")) if n == 1 else None
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), wait=True)
    assert svc.sent == ["1", "2"]
    assert r.conflicts == 1
    assert r.latest_version_id == "3"
    assert [v[0] for v in svc.versions()] == [1, 2, 3]


async def test_rebase_gets_fresh_metadata_and_its_update_is_sent() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.5)
    svc.write(other_writer(svc, "StudyDescription", "THEIRS"))
    await clock.advance(1.0)
    seen: list[Any] = []

    def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate:
        seen.append(desc_of(fresh))
        return study(svc, f"{desc_of(fresh)}+MINE")

    async with clock.autojump():
        r = await resolve_update(
            study(svc, "MINE", version="1"), ops=svc, caller=fast_caller(clock), rebase=rebase, wait=True
        )
    assert seen == ["THEIRS"]
    assert svc.sent == ["2"]  # the version moved before the first write: rebased, no 409 spent
    assert desc_of(svc.image_set().latest.metadata) == "THEIRS+MINE"
    assert r.base_version_id == "2"


async def test_async_rebase_returning_none_drops_the_update() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.5)
    svc.before_send = lambda n: svc.write(other_writer(svc, "StudyDescription", "THEIRS")) if n == 1 else None

    async def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate | None:
        return None

    events: list[Event] = []
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "MINE"), ops=svc, caller=fast_caller(clock, events=events), rebase=rebase
        )
    assert r.outcome == "dropped"
    assert r.latest_version_id == "2"
    assert svc.sent == ["1"]  # the 409 (version moved under us), then nothing more
    ends = [e for e in events if isinstance(e, (UpdateStarted, UpdateFinished))]
    assert ends == [
        UpdateStarted(svc.image_set_id),
        UpdateFinished(svc.image_set_id, "2", "dropped", 1, ends[1].seconds),
    ]
    assert [v[0] for v in svc.versions()] == [1, 2]


async def test_deleted_image_set_is_a_typed_error() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    svc.image_set().deleted = True
    async with clock.autojump():
        with pytest.raises(ImageSetDeletedError, match=svc.image_set_id):
            await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock))
    assert svc.sent == []


async def test_validation_error_from_the_service_is_raised_at_once() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    bad = UpdateBuilder(svc.datastore_id, svc.image_set_id).series("1.2.3.4", SeriesDescription="X").build()
    async with clock.autojump():
        with pytest.raises(ValidationError) as info:
            await resolve_update(bad, ops=svc, caller=fast_caller(clock))
    assert svc.sent == ["1"]
    assert "X" not in str(info.value)


async def test_throttles_are_retried_at_the_same_version_and_cut_the_rate() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    svc.script = ["throttle", "throttle", "ok"]
    caller = fast_caller(clock)
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=caller)
    assert svc.sent == ["1", "1", "1"]
    assert r.attempts == 3
    assert caller.limiter.current_rate(UPD) < 100.0
    assert caller.limiter.current_rate("GetImageSet") == 100.0


async def test_attempt_budget_ends_with_the_last_error() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    svc.script = ["throttle"] * 10
    async with clock.autojump():
        with pytest.raises(RetriesExhaustedError) as info:
            await resolve_update(
                study(svc, "A"), ops=svc, caller=fast_caller(clock, policy=RetryPolicy(max_attempts=3))
            )
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ThrottlingError)
    assert [v[0] for v in svc.versions()] == [1]


async def test_deadline_ends_connect_failures() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    svc.script = ["connect"] * 1000
    policy = RetryPolicy(max_attempts=1000, deadline=30.0, base_delay=1.0, max_delay=4.0)
    async with clock.autojump():
        with pytest.raises(DeadlineExceededError):
            await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock, policy=policy))
    assert 30.0 <= clock.now() < 35.0
    assert set(svc.sent) == {"1"}


async def test_too_many_conflicts() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.1)
    svc.before_send = lambda n: svc.write(other_writer(svc, "AccessionNumber", str(n)))  # always first
    async with clock.autojump():
        with pytest.raises(RetriesExhaustedError, match="conflicts"):
            await resolve_update(
                study(svc, "A"), ops=svc, caller=fast_caller(clock, policy=RetryPolicy(max_conflicts=2))
            )
    assert all(v[2] != "update" or v[0] <= 4 for v in svc.versions())


@pytest.mark.parametrize("fault", ["lost", "500-applied"])
async def test_applied_write_whose_answer_was_lost_is_not_applied_twice(fault: str) -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=1.0)
    svc.script = [fault]
    events: list[Event] = []
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "A"), ops=svc, caller=fast_caller(clock, events=events), wait=True
        )
    assert r.outcome == "already-applied"
    assert r.latest_version_id == "2"
    assert r.workflow_status == "UPDATED"
    assert svc.sent == ["1"]
    assert svc.versions() == [(1, "CREATED", "created"), (2, "UPDATED", "update")]
    assert any(isinstance(e, UpdateFinished) and e.outcome == "already-applied" for e in events)


async def test_lost_answer_then_someone_else_wrote_ours_is_still_found() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=1.0)
    svc.script = ["lost"]  # ours becomes v2, the answer is lost

    async def intruder() -> None:
        await clock.sleep(1.2)  # v2 applied; another writer makes v3 before we look
        svc.write(other_writer(svc, "AccessionNumber", "OTHER"))

    async with clock.autojump(), anyio.create_task_group() as tg:
        tg.start_soon(intruder)
        r = await resolve_update(
            study(svc, "A"), ops=svc, caller=fast_caller(clock, policy=RetryPolicy(base_delay=2.0))
        )
    assert r.outcome == "already-applied"
    assert r.latest_version_id == "2"
    assert svc.sent == ["1"]
    assert [v[0] for v in svc.versions()] == [1, 2, 3]
    assert desc_of(svc.image_set().latest.metadata) == "A"  # v3 kept ours; nothing sent twice


async def test_dropped_write_then_a_concurrent_writer_ours_is_applied_exactly_once() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=1.0)
    svc.script = ["drop"]  # nothing applied, the answer never came
    # before our retry, another writer moves the version: the resolver must prove v2 is not ours
    svc.before_send = lambda n: svc.write(other_writer(svc, "AccessionNumber", "OTHER")) if n == 1 else None
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), wait=True)
    assert r.outcome == "applied"
    assert r.latest_version_id == "3"
    assert r.base_version_id == "2"
    updates_with_a = [v for v in svc.image_set().versions if desc_of(v.metadata) == "A"]
    assert [v.version_id for v in updates_with_a] == [3]


async def test_failed_candidate_version_is_not_counted_as_applied() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=1.0)
    svc.script = ["lost"]
    svc.image_set().fail_next_apply = "injected failure"
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), wait=True)
    # v2 ended UPDATE_FAILED (changed nothing), so writing again at v2 was safe
    assert [v[:2] for v in svc.versions()] == [(1, "CREATED"), (2, "UPDATE_FAILED"), (3, "UPDATED")]
    assert r.outcome == "applied"
    assert r.latest_version_id == "3"
    assert desc_of(svc.image_set().latest.metadata) == "A"


async def test_revert_lost_answer_is_recognised() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.5)
    svc.write(other_writer(svc, "StudyDescription", "CHANGED"))
    await clock.advance(1.0)
    svc.script = ["lost"]
    revert = MetadataUpdate.revert(svc.datastore_id, svc.image_set_id, "1")
    async with clock.autojump():
        r = await resolve_update(revert, ops=svc, caller=fast_caller(clock), wait=True)
    assert r.outcome == "already-applied"
    assert r.latest_version_id == "3"
    assert [v[2] for v in svc.versions()] == ["created", "update", "revert"]


async def test_budget_running_out_while_the_outcome_is_unknown() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    svc.script = ["drop"] * 5
    async with clock.autojump():
        with pytest.raises(OutcomeUnknownError, match="may or may not"):
            await resolve_update(
                study(svc, "A"), ops=svc, caller=fast_caller(clock, policy=RetryPolicy(max_attempts=3))
            )


async def test_update_failed_is_reported_after_wait() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=2.0)
    svc.image_set().fail_next_apply = "could not apply"
    events: list[Event] = []
    async with clock.autojump():
        r = await resolve_update(
            study(svc, "A"), ops=svc, caller=fast_caller(clock, events=events), wait=True
        )
    assert r.failed
    assert r.workflow_status == "UPDATE_FAILED"
    assert r.message == "could not apply"
    assert r.state == "ACTIVE"
    assert any(isinstance(e, UpdateFinished) and e.outcome == "update-failed" for e in events)


async def test_a_version_hint_is_written_at_without_a_read() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.0)
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), version_hint="1")
    assert (svc.reads, svc.sent, r.latest_version_id, r.outcome) == (0, ["1"], "2", "applied")


async def test_a_stale_version_hint_costs_one_refusal_then_the_normal_path() -> None:
    clock = FakeClock()
    svc = FakeService(clock, lock_seconds=0.0)
    svc.write(other_writer(svc, "AccessionNumber", "OTHER"))
    await clock.advance(1.0)
    async with clock.autojump():
        r = await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), version_hint="1")
    assert svc.sent == ["1", "2"]
    assert (r.conflicts, r.latest_version_id, r.outcome) == (1, "3", "applied")
    final = svc.image_set().latest.metadata
    assert (desc_of(final), final["Study"]["DICOM"]["AccessionNumber"]) == ("A", "OTHER")


async def test_a_version_hint_must_be_a_version() -> None:
    clock = FakeClock()
    svc = FakeService(clock)
    with pytest.raises(ValueError, match="version_hint"):
        await resolve_update(study(svc, "A"), ops=svc, caller=fast_caller(clock), version_hint="latest")
    assert svc.sent == []
