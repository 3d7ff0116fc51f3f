"""Property tests of the journal reader: truncated at every byte, garbage appended, foreign files.

The properties:

- a journal cut at any byte opens with exactly the state of its complete
  records (a torn last record is dropped, nothing else), or, when not even its
  header is whole, is refused and left as it was;
- garbage after a journal is refused with the file left byte-identical, or
  (a torn record) dropped;
- a file that is not a journal is refused and left byte-identical;
- nothing but a ``JournalError`` comes out, and no content of the file appears in it.

The expected state after each record is tracked by the test as it writes the
records, not read back through the journal.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_hi._journal import Journal, JournalError

DS, IS = "d" * 32, "a" * 32
SECRET = "SECRETVALUE"
SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ROUNDS = 7  # records per built journal (every byte of it is cut: keep it small)
State = tuple[dict[int, str | None], list[tuple[int, ...]]]  # finished status per key, open intents' keys


def digest(key: int) -> str:
    return f"{key:064x}"


async def build(path: Path, seed: int) -> tuple[bytes, list[tuple[int, State]]]:
    """A journal of random records; per record: the file's length after it and the state it leaves."""
    rng = random.Random(seed)
    states: list[tuple[int, State]] = []
    finished: dict[int, str | None] = {}
    open_: dict[int, tuple[int, ...]] = {}
    file = anyio.Path(path)
    async with Journal(path, fsync=False) as j:
        states.append(((await file.stat()).st_size, ({}, [])))
        key = 0
        for _ in range(ROUNDS):
            choice = rng.random()
            if open_ and choice < 0.5:
                intent = rng.choice(sorted(open_))
                keys = open_.pop(intent)
                kind = rng.choice(["applied", "failed", "reconciled-yes", "reconciled-no"])
                if kind == "applied":
                    await j.applied(intent, version="2")
                elif kind == "failed":
                    await j.failed(intent, reason="ValidationException")
                else:
                    await j.reconciled(intent, applied=kind == "reconciled-yes")
                status = {"applied": "applied", "failed": "failed", "reconciled-yes": "applied"}.get(kind)
                finished.update(dict.fromkeys(keys, status))
            elif choice < 0.6:
                key += 1
                await j.failed(None, reason="InvalidUpdateError", keys=[key], digests=[digest(key)])
                finished[key] = "failed"
            else:
                keys = tuple(range(key + 1, key + 1 + rng.randint(1, 3)))
                key = keys[-1]
                intent = await j.intent(
                    keys=list(keys),
                    digests=[digest(k) for k in keys],
                    datastore_id=DS,
                    image_set_id=IS,
                    base="1",
                )
                open_[intent] = keys
            states.append(((await file.stat()).st_size, (dict(finished), sorted(open_.values()))))
    return await file.read_bytes(), states


_BUILT: dict[int, tuple[bytes, list[tuple[int, State]]]] = {}


def built(seed: int) -> tuple[bytes, list[tuple[int, State]]]:
    """One journal per seed, built once per session (Hypothesis draws many examples from it)."""
    if seed not in _BUILT:
        with tempfile.TemporaryDirectory() as d:
            _BUILT[seed] = anyio.run(build, Path(d) / "j.jsonl", seed)
    return _BUILT[seed]


async def state_of(path: Path, keys: range) -> State:
    async with Journal(path, fsync=False) as j:
        return (
            {k: s for k in keys if (s := j.finished(k, digest(k))) is not None},
            sorted(i.keys for i in j.open_intents),
        )


KEYS = range(1, 60)


def expected_at(states: list[tuple[int, State]], size: int) -> State:
    whole = [state for end, state in states if end <= size]
    finished, open_ = whole[-1]
    return {k: s for k, s in finished.items() if s is not None}, open_


def scratch(tmp_path: Path) -> Path:
    """A directory on tmpfs when there is one: the opens fsync, and fsync is not what is tested here."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(dir=shm))
    return tmp_path


def test_a_journal_cut_at_every_byte_opens_with_its_complete_records_or_is_refused_unchanged(
    tmp_path: Path,
) -> None:
    directory = scratch(tmp_path)
    try:
        cut_at_every_byte(directory)
    finally:
        if directory != tmp_path:
            shutil.rmtree(directory)


def cut_at_every_byte(directory: Path) -> None:
    full, states = built(15)
    finished, still_open = states[-1][1]
    assert set(finished.values()) == {"applied", "failed", None}  # every kind of record is cut somewhere
    assert still_open
    header_end = states[0][0]
    path = directory / "cut.jsonl"

    async def every_cut() -> None:
        for size in range(len(full) + 1):
            cut = full[:size]
            path.write_bytes(cut)
            complete = cut[: cut.rfind(b"\n") + 1]
            if 0 < size < header_end - 1:  # not even a whole header: not provably ours
                with pytest.raises(JournalError, match="not an async-hi journal"):
                    await state_of(path, KEYS)
                assert path.read_bytes() == cut
                continue
            got = await state_of(path, KEYS)
            if size >= header_end:
                assert got == expected_at(states, size), size
                assert path.read_bytes() == complete
            else:  # empty, or the header without its newline: a new journal
                assert got == ({}, [])

    anyio.run(every_cut)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([6, 15]))
def test_garbage_after_a_journal_is_refused_unchanged_or_dropped_as_torn(
    tmp_path: Path, garbage: bytes, seed: int
) -> None:
    full, states = built(seed)
    path = tmp_path / "garbage.jsonl"
    data = full + garbage + SECRET.encode()
    path.write_bytes(data)
    try:
        got = anyio.run(state_of, path, KEYS)
    except JournalError as exc:
        error = str(exc)
        assert path.read_bytes() == data
        assert SECRET not in error
        return
    # accepted only as a torn record of ours: the journal's records are all kept, the tail dropped
    tail = data[len(full) :]
    assert tail.rsplit(b"\n", 1)[-1].startswith(b'{"t":"'), "a tail that is no record of ours was dropped"
    assert path.read_bytes() == full
    assert got == expected_at(states, len(full))


@SETTINGS
@given(
    st.one_of(
        st.binary(min_size=1, max_size=300),
        st.text(min_size=1, max_size=200).map(str.encode),
        st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3).map(
            lambda d: (repr(d) + "\n").encode()
        ),
        st.sampled_from([b'{"t":"intent"}\n', b'{"t":"journa', b"\n\n", b"[1]\n", b'"journal"\n']),
    )
)
def test_a_file_that_is_not_a_journal_is_refused_and_left_byte_identical(
    tmp_path: Path, content: Any
) -> None:
    path = tmp_path / "notes.txt"
    data = content + SECRET.encode()
    path.write_bytes(data)
    with pytest.raises(JournalError) as info:
        anyio.run(state_of, path, range(1, 3))
    assert path.read_bytes() == data
    assert SECRET not in str(info.value)
