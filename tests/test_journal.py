"""The journal (durable records, torn lines, locking, mismatches) and reconciliation of open intents."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from async_hi._journal import Fingerprint, Journal, JournalError, JournalMismatchError
from async_hi._reconcile import ReconcileError, reconcile
from async_hi._updates import MetadataUpdate
from async_hi.emulator._seed import synthetic_metadata
from async_hi.emulator._store import Store
from tests.bulk_helpers import StoreReader

pytestmark = pytest.mark.anyio
SECRET = "SECRETVALUE"


def study_update(ds: str, iset: str, value: str = SECRET, **kw: Any) -> MetadataUpdate:
    return MetadataUpdate(
        datastore_id=ds, image_set_id=iset, updatable={"Study": {"DICOM": {"StudyDescription": value}}}, **kw
    )


DS, IS = "d" * 32, "a" * 32


async def test_records_survive_reopen_and_never_hold_values(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    u1, u2, u3 = (
        study_update(DS, IS, SECRET + "1"),
        study_update(DS, IS, SECRET + "2"),
        study_update(DS, IS, SECRET + "3"),
    )
    async with Journal(path) as j:
        a = await j.intent(
            keys=[1, 2], digests=[u1.digest(), u2.digest()], datastore_id=DS, image_set_id=IS, base="1"
        )
        await j.applied(a, version="2")
        b = await j.intent(keys=[3], digests=[u3.digest()], datastore_id=DS, image_set_id=IS, base="2")
        await j.failed(b, reason="ValidationException")
        await j.failed(None, reason="InvalidUpdateError", keys=[4], digests=["ab" * 32])
        c = await j.intent(keys=[5], digests=["cd" * 32], datastore_id=DS, image_set_id=IS, base="2")
    text = path.read_text()
    assert SECRET not in text
    assert all(json.loads(line) for line in text.splitlines())
    async with Journal(path) as j:
        assert j.finished(1, u1.digest()) == "applied"
        assert j.finished(2, u2.digest()) == "applied"
        assert j.finished(3, u3.digest()) == "failed"
        assert j.finished(4, "ab" * 32) == "failed"
        assert j.finished(5, "cd" * 32) is None
        assert [i.id for i in j.open_intents] == [c]
        assert j.open_intents[0].base == "2"
        with pytest.raises(JournalMismatchError, match="request 1 differs"):
            j.finished(1, u3.digest())
        new = await j.intent(keys=[6], digests=["ef" * 32], datastore_id=DS, image_set_id=IS, base="3")
        assert new == c + 1  # ids continue after the reopened ones
    async with Journal(path, retry_failed=True) as j:
        assert j.finished(3, u3.digest()) is None
        assert j.finished(1, u1.digest()) == "applied"
        again = await j.intent(keys=[3], digests=[u3.digest()], datastore_id=DS, image_set_id=IS, base="2")
        await j.applied(again, version="3")
    async with Journal(path) as j:
        assert j.finished(3, u3.digest()) == "applied"  # the newest record of a key wins


async def test_torn_last_line_is_dropped_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    async with Journal(path) as j:
        a = await j.intent(keys=[1], digests=["ab" * 32], datastore_id=DS, image_set_id=IS, base="1")
    with path.open("ab") as f:
        f.write(b'{"t":"applied","id":1,"keys":[1],"ver')  # SIGKILL mid-write
    async with Journal(path) as j:
        assert [i.id for i in j.open_intents] == [a]
        await j.applied(a, version="2")
    async with Journal(path) as j:
        assert j.finished(1, "ab" * 32) == "applied"
        assert not j.open_intents
    assert all(json.loads(line) for line in path.read_text().splitlines())


async def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"t":"journal","format":1}\nnot json\n{"t":"journal","format":1}\n')
    with pytest.raises(JournalError, match="line 2 is corrupt"):
        await Journal(path).__aenter__()
    path.write_text('{"t":"journal","format":1}\n{"t":"intent","id":1}\n')
    with pytest.raises(JournalError, match="line 2: malformed intent record"):
        await Journal(path).__aenter__()
    path.write_text('{"t":"journal","format":99}\n')
    with pytest.raises(JournalError, match="format 99"):
        await Journal(path).__aenter__()
    path.write_text('{"t":"journal","format":"' + SECRET + '"}\n')
    with pytest.raises(JournalError, match=r"format \?") as info:
        await Journal(path).__aenter__()
    assert SECRET not in str(info.value)
    path.write_text('{"t":"journal","format":1}\n{"t":"' + SECRET + '"}\n')
    with pytest.raises(JournalError, match="line 2: unknown record type") as info:
        await Journal(path).__aenter__()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"remember to call the lab\n",
        b"one line, no newline",
        b'{"t":"intent","id":1,"keys":[1],"digests":["ab"],"ds":"d","is":"i","base":"1"}\n',
        b'{"some": "other tool\'s JSON lines"}\n{"t":"journal","format":2}\n',
        b"\n" + b'{"t":"journal","format":2,"input":null}\n',
        b'{"t":"jour',  # not even a whole header: never ours to rewrite
        b"\xff\xfe" + "a UTF-16 note".encode("utf-16-le"),
    ],
)
async def test_a_file_that_is_not_a_journal_is_refused_and_left_byte_identical(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(JournalError, match=r"is not an async-hi journal .* left as it is"):
        await Journal(path).__aenter__()
    assert path.read_bytes() == content


async def test_a_directory_or_fifo_is_not_a_journal(tmp_path: Path) -> None:
    import os

    with pytest.raises(JournalError, match="not a regular file"):
        await Journal(tmp_path).__aenter__()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(JournalError, match="not a regular file"):
        await Journal(fifo).__aenter__()


async def test_garbage_after_a_journal_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    async with Journal(path) as j:
        await j.failed(None, reason="x", keys=[1], digests=["ab" * 32])
    for tail in (b"hello\n", b"hello", b"\x00\x00", b'["t"]\n'):
        original = path.read_bytes() + tail
        path.write_bytes(original)
        with pytest.raises(JournalError, match="line 3 is corrupt; nothing was changed"):
            await Journal(path).__aenter__()
        assert path.read_bytes() == original
        path.write_bytes(original[: -len(tail)])


def fingerprint(tmp_path: Path, name: str, text: str) -> Fingerprint:
    path = tmp_path / name
    path.write_text(text)
    return Fingerprint.of_file(path)


async def test_a_journal_of_another_input_is_refused_before_anything(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    mine = fingerprint(tmp_path, "a.jsonl", "line one\n")
    other = fingerprint(tmp_path, "b.jsonl", "line two\n")
    moved = fingerprint(tmp_path, "moved.jsonl", "line one\n")
    async with Journal(path, fingerprint=mine) as j:
        await j.failed(None, reason="x", keys=[1], digests=["ab" * 32])
    assert json.loads(path.read_text().splitlines()[0])["input"]["sha256"] == mine.sha256
    before = path.read_bytes()
    with pytest.raises(
        JournalMismatchError, match=r"belongs to a.jsonl \(9 bytes, sha256 .*\), not to b.jsonl"
    ):
        await Journal(path, fingerprint=other).__aenter__()
    assert path.read_bytes() == before
    async with Journal(path, fingerprint=moved) as j:  # the same bytes elsewhere: the same input
        assert j.finished(1, "ab" * 32) == "failed"
    async with Journal(path, fingerprint=other, accept_changed_input=True) as j:
        assert j.recorded_input == other
    async with Journal(path, fingerprint=other) as j:  # the accepted change was recorded
        assert j.finished(1, "ab" * 32) == "failed"
    with pytest.raises(JournalMismatchError, match=r"belongs to b\.jsonl"):
        await Journal(path, fingerprint=mine).__aenter__()


async def test_a_format_1_journal_is_read_and_given_its_input(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(
        '{"t":"journal","format":1}\n{"t":"failed","id":null,"keys":[3],"digests":["ab"],"reason":"x"}\n'
    )
    mine = fingerprint(tmp_path, "a.jsonl", "x\n")
    async with Journal(path, fingerprint=mine) as j:
        assert j.finished(3, "ab") == "failed"
    with pytest.raises(JournalMismatchError):
        await Journal(path, fingerprint=fingerprint(tmp_path, "b.jsonl", "y\n")).__aenter__()


async def test_after_a_torn_last_line_every_finished_key_is_still_found(tmp_path: Path) -> None:
    # outcomes arrive out of key order; the lookup table must be sorted on every path of the load
    path = tmp_path / "j.jsonl"
    keys = [9, 2, 7, 1, 5]
    async with Journal(path) as j:
        for k in keys:
            i = await j.intent(keys=[k], digests=["ab" * 32], datastore_id=DS, image_set_id=IS, base="1")
            await j.applied(i, version="2")
    with path.open("ab") as f:
        f.write(b'{"t":"intent","id":9')
    async with Journal(path) as j:
        assert [j.finished(k, "ab" * 32) for k in keys] == ["applied"] * len(keys)


async def test_a_second_process_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    async with Journal(path):
        with pytest.raises(JournalError, match="in use by another process"):
            await Journal(path).__aenter__()
    async with Journal(path):
        pass


async def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    import async_hi._journal as jmod

    syncs = []
    real = jmod.os.fsync
    monkeypatch.setattr(jmod.os, "fsync", lambda fd: (syncs.append(fd), real(fd)))
    async with Journal(tmp_path / "j.jsonl") as j:
        syncs.clear()

        async def one(k: int) -> None:
            await j.failed(None, reason="x", keys=[k], digests=["ab" * 32])

        async with anyio.create_task_group() as tg:
            for k in range(50):
                tg.start_soon(one, k)
    assert 1 <= len(syncs) < 50
    async with Journal(tmp_path / "j.jsonl") as j:
        assert all(j.finished(k, "ab" * 32) == "failed" for k in range(50))
        assert j.finished_count == 50
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 51


# -- reconciliation -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> tuple[Store, Clock, str, str]:
    clock = Clock()
    s = Store(lock_seconds=5, clock=clock)
    ds = s.create_datastore().datastore_id
    iset = s.add_image_set(ds, synthetic_metadata(random.Random(1))).image_set_id
    return s, clock, ds, iset


def write(s: Store, clock: Clock, u: MetadataUpdate, *, fail: bool = False) -> None:
    image_set = s.image_set(u.datastore_id, u.image_set_id)
    if fail:
        image_set.fail_next_apply = "apply failed"
    s.update(
        u.datastore_id,
        u.image_set_id,
        latest_version=image_set.latest.version_id,
        updatable=u.updatable,
        removable=u.removable,
        revert_to=int(u.revert_to_version_id) if u.revert_to_version_id else None,
    )
    clock.now += 10  # the apply completes


async def open_intent(path: Path, keyed: list[tuple[int, MetadataUpdate]], base: str) -> None:
    u = keyed[0][1]
    async with Journal(path) as j:
        await j.intent(
            keys=[k for k, _ in keyed],
            digests=[x.digest() for _, x in keyed],
            datastore_id=u.datastore_id,
            image_set_id=u.image_set_id,
            base=base,
        )


@pytest.mark.parametrize(
    ("scenario", "applied", "version"),
    [
        ("never-sent", False, None),
        ("landed", True, "2"),
        ("landed-then-other-writer", True, "2"),
        ("other-writer-only", False, None),
        ("landed-but-apply-failed", False, None),
        ("same-value-already-there-not-sent", False, None),
    ],
)
async def test_reconcile_decides_from_the_version_history(
    tmp_path: Path, store: tuple[Store, Clock, str, str], scenario: str, applied: bool, version: str | None
) -> None:
    s, clock, ds, iset = store
    ours = study_update(ds, iset, "OURS")
    other = study_update(ds, iset, "OTHER")
    if scenario == "same-value-already-there-not-sent":
        write(s, clock, ours)  # version 2 already has our value; the intent is based on 2
    base = str(s.image_set(ds, iset).latest.version_id)
    await open_intent(tmp_path / "j", [(7, ours)], base)
    if scenario.startswith("landed"):
        write(s, clock, ours, fail=scenario == "landed-but-apply-failed")
    if scenario in ("landed-then-other-writer", "other-writer-only"):
        write(s, clock, other)
    async with Journal(tmp_path / "j") as j:
        (verdict,) = await reconcile(j, [(6, other), (7, ours), (8, other)], StoreReader(s))
        assert (verdict.applied, verdict.version) == (applied, version)
        assert not j.open_intents
    async with Journal(tmp_path / "j") as j:
        assert not j.open_intents
        assert j.finished(7, ours.digest()) == ("applied" if applied else None)


async def test_reconcile_a_coalesced_call_and_a_revert(
    tmp_path: Path, store: tuple[Store, Clock, str, str]
) -> None:
    s, clock, ds, iset = store
    a = study_update(ds, iset, "A")
    b = MetadataUpdate(
        datastore_id=ds, image_set_id=iset, removable={"Study": {"DICOM": {"AccessionNumber": ""}}}
    )
    merged = MetadataUpdate(datastore_id=ds, image_set_id=iset, updatable=a.updatable, removable=b.removable)
    await open_intent(tmp_path / "j1", [(1, a), (2, b)], "1")
    write(s, clock, merged)
    async with Journal(tmp_path / "j1") as j:
        (verdict,) = await reconcile(j, iter([(1, a), (2, b)]), StoreReader(s))
    assert verdict.applied
    assert verdict.version == "2"
    revert = MetadataUpdate(datastore_id=ds, image_set_id=iset, revert_to_version_id="1")
    await open_intent(tmp_path / "j2", [(3, revert)], "2")
    async with Journal(tmp_path / "j2") as j:
        (verdict,) = await reconcile(j, [(3, revert)], StoreReader(s))
        assert not verdict.applied
    write(s, clock, revert)
    await open_intent(tmp_path / "j3", [(3, revert)], "2")
    async with Journal(tmp_path / "j3") as j:
        (verdict,) = await reconcile(j, [(3, revert)], StoreReader(s))
        assert verdict.applied


async def test_reconcile_waits_for_a_busy_image_set(
    tmp_path: Path, store: tuple[Store, Clock, str, str]
) -> None:
    s, clock, ds, iset = store
    ours = study_update(ds, iset, "OURS")
    await open_intent(tmp_path / "j", [(1, ours)], "1")
    s.update(ds, iset, latest_version=1, updatable=ours.updatable)  # LOCKED, UPDATING

    class Settling(StoreReader):
        async def versions_after(self, datastore_id: str, image_set_id: str, after: str) -> Any:
            out = await super().versions_after(datastore_id, image_set_id, after)
            clock.now += 2  # each look takes the clock closer to the end of the apply
            return out

    async with Journal(tmp_path / "j") as j:
        (verdict,) = await reconcile(j, [(1, ours)], Settling(s), poll_interval=0)
        assert verdict.applied
    s.update(ds, iset, latest_version=2, updatable=ours.updatable)
    await open_intent(tmp_path / "k", [(1, ours)], "2")
    async with Journal(tmp_path / "k") as j:
        with pytest.raises(ReconcileError, match="still has an update in progress"):
            await reconcile(j, [(1, ours)], StoreReader(s), settle_timeout=0.02, poll_interval=0.01)
        assert len(j.open_intents) == 1  # nothing decided, nothing lost


async def test_reconcile_refuses_input_that_lost_or_changed_the_request(
    tmp_path: Path, store: tuple[Store, Clock, str, str]
) -> None:
    s, _, ds, iset = store
    ours = study_update(ds, iset, "OURS")
    await open_intent(tmp_path / "j", [(5, ours)], "1")
    async with Journal(tmp_path / "j") as j:
        with pytest.raises(JournalMismatchError, match=r"request 5, in flight .* is not in the input"):
            await reconcile(j, [(4, ours)], StoreReader(s))
        with pytest.raises(JournalMismatchError, match="request 5 differs"):
            await reconcile(j, [(5, study_update(ds, iset, "EDITED"))], StoreReader(s))


async def test_reconcile_reads_input_only_as_far_as_needed(
    tmp_path: Path, store: tuple[Store, Clock, str, str]
) -> None:
    s, _, ds, iset = store
    ours = study_update(ds, iset, "OURS")
    await open_intent(tmp_path / "j", [(2, ours)], "1")

    def endless() -> Any:
        k = 0
        while True:
            k += 1
            yield k, ours

    async with Journal(tmp_path / "j") as j:
        (verdict,) = await reconcile(j, endless(), StoreReader(s))
        assert not verdict.applied
        assert await reconcile(j, endless(), StoreReader(s)) == []  # nothing open any more
