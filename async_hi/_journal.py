"""The bulk journal: an append-only, fsynced record of what was sent and what came of it.

One JSON object per line, never an attribute value (ids, request keys, request
digests, versions, status and error codes only)::

    {"t": "journal", "format": 2, "input": {"path": "/abs/m.jsonl", "size": 123, "sha256": ".."}}
    {"t": "intent", "id": 7, "keys": [12, 13], "digests": ["9f..", "c1.."],
     "ds": "..", "is": "..", "base": "3"}          (one line in the file)
    {"t": "applied", "id": 7, "keys": [12, 13], "version": "4"}
    {"t": "failed", "id": 8, "keys": [14], "reason": "ValidationException"}
    {"t": "reconciled", "id": 9, "keys": [15], "applied": false}

``keys`` are the caller's request keys (manifest line numbers for the CLI);
a coalesced call lists all the requests it carries. ``base`` is the version
the image set was at, as far as the runner knew, before the call: the lower
bound :mod:`async_hi._reconcile` searches the version history from.

Exactly once, across SIGKILL. The runner writes (and fsyncs) the *intent*
before a call leaves and the *outcome* before it reports the call done. On
resume every finished key is skipped; an intent without an outcome (the
process died while the call was in flight) is *open*, and :func:`reconcile`
must settle it before anything else runs: it reads the image set's versions
after ``base`` and decides from the metadata whether the call landed. So each
request is applied exactly once whatever instant the process died at.

Which input. The header names the input the journal belongs to (a
:class:`Fingerprint`: path, size, SHA-256 of the whole file). Opened with a
fingerprint, a journal whose input differs (another manifest, or this one
edited) is refused before anything is sent; a moved but unchanged file is
the same input. ``accept_changed_input=True`` records the new fingerprint
instead (an ``{"t": "input", ...}`` record); the per-request digests then
still refuse a journaled request whose content changed.

Foreign files. A file is a journal only if its first line is our header; any
other non-empty file (a notes file given by mistake, a directory, a FIFO) is
refused and left exactly as it was. Durability: records are appended by one
writer at a time and fsynced; callers that append concurrently share one
fsync (group commit). A torn last line (the process died mid-write: no
newline at the end, and the beginning of one of our records) is dropped on
open; a bad line anywhere else is an error and nothing is changed. An
exclusive ``flock`` keeps two processes off one journal. Journals of format 1
(no header fingerprint) are still read; a fingerprint given for one is
recorded.
"""

from __future__ import annotations

import array
import bisect
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread

from async_hi._errors import HealthImagingError

__all__ = ["FAILED", "Fingerprint", "Intent", "Journal", "JournalError", "JournalMismatchError"]

FORMAT = 2
#: formats this code reads (1: before the header named its input)
_READABLE = (1, 2)
#: every record we write begins so; a torn last line is a prefix of a record
_RECORD_START = b'{"t":"'
_KINDS = ("journal", "input", "intent", "applied", "failed", "reconciled")
#: status of a key whose call failed for good (not retried on resume unless asked)
FAILED = "failed"
APPLIED = "applied"


class JournalError(HealthImagingError, RuntimeError):
    """The journal cannot be used: unreadable, corrupt, locked, or written by a newer format."""


class JournalMismatchError(JournalError):
    """The input no longer matches the journal (a request key with a different request)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """Which input a journal belongs to: where it was, its size, and the SHA-256 of its bytes.

    Two fingerprints are the same input when size and digest agree (a moved file is the same).
    """

    path: str
    size: int
    sha256: str

    @classmethod
    def of_file(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read the whole file once (streamed) and fingerprint it."""
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        return cls(path=str(Path(path).resolve()), size=size, sha256=h.hexdigest())

    def same_input(self, other: Fingerprint) -> bool:
        return (self.size, self.sha256) == (other.size, other.sha256)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any) -> Fingerprint:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        path, size, digest = data["path"], data["size"], data["sha256"]
        if not isinstance(path, str) or not isinstance(size, int) or not isinstance(digest, str):
            raise TypeError("bad field types")
        return cls(path=path, size=size, sha256=digest)

    def describe(self) -> str:
        return f"{Path(self.path).name} ({self.size} bytes, sha256 {self.sha256[:12]})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """A call that was (or was about to be) sent and whose outcome is not journaled."""

    id: int
    keys: tuple[int, ...]
    digests: tuple[str, ...]
    datastore_id: str
    image_set_id: str
    base: str


class Journal:
    """The append-only outcome journal (an async context manager).

    Args:
        path: the journal file; created if missing, resumed if present.
        retry_failed: on resume, treat keys whose call failed as unfinished.
        fsync: fsync each group of records (off only for benchmarks of the runner).
        fingerprint: the input this run reads; a journal of another input is refused.
        accept_changed_input: record ``fingerprint`` as the journal's input instead
            of refusing a different one (the request digests still guard each key).

    Raises (on entering):
        JournalError: not a journal of ours, corrupt, locked, or of a newer format.
        JournalMismatchError: the journal belongs to another input.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retry_failed: bool = False,
        fsync: bool = True,
        fingerprint: Fingerprint | None = None,
        accept_changed_input: bool = False,
    ) -> None:
        self.path = Path(path)
        self.retry_failed = retry_failed
        self._fsync = fsync
        self.fingerprint = fingerprint
        self._accept_changed = accept_changed_input
        #: the input the journal names (None: format 1, or opened without a fingerprint)
        self.recorded_input: Fingerprint | None = None
        self._file: IO[bytes] | None = None
        # finished keys of earlier runs, sorted, as compact arrays (13 bytes a key):
        # a resumed million-line job costs megabytes, not a dict of tuples
        self._keys = array.array("q")
        self._digests = array.array("I")  # the first 32 bits of the request digest
        self._status = array.array("b")  # _CODES
        # keys settled in this session before the run reaches them (reconcile): few, by nature
        self._settled: dict[int, tuple[int, int]] = {}
        self._open: dict[int, Intent] = {}
        self._next_id = 1
        self._pending: list[bytes] = []
        self._queued = 0  # records handed to append so far
        self._durable = 0  # records known to be on disk
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return (
            f"Journal({str(self.path)!r}, finished={self.finished_count}, open={len(self._open)}, "
            f"next_id={self._next_id})"
        )

    async def __aenter__(self) -> Journal:
        await anyio.to_thread.run_sync(self._open_file)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            with anyio.CancelScope(shield=True):
                await self._flush()
            self._file.close()
            self._file = None

    # -- reading --------------------------------------------------------------

    def _open_file(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise JournalError(f"{self.path} is not a regular file, so it cannot be a journal")
        f = open(self.path, "a+b")  # noqa: SIM115 - kept open for the journal's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise JournalError(f"journal {self.path} is in use by another process") from None
        try:
            f.seek(0)
            good_end = self._load(f)  # raises, changing nothing, on anything not ours
            self._check_input()
            if good_end is not None:
                f.truncate(good_end)  # drop a torn last line before appending after it
                os.fsync(f.fileno())
            f.seek(0, os.SEEK_END)
            new = f.tell() == 0
        except BaseException:
            f.close()
            raise
        self._file = f
        if new:
            header: dict[str, Any] = {"t": "journal", "format": FORMAT}
            header["input"] = self.fingerprint.to_json() if self.fingerprint else None
            self.recorded_input = self.fingerprint
            self._write_now([_line(header)])
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        elif self.fingerprint is not None and self.recorded_input != self.fingerprint:
            # a format-1 journal, a moved input, or a change the caller accepted: record it
            self.recorded_input = self.fingerprint
            self._write_now([_line({"t": "input", **self.fingerprint.to_json()})])

    def _check_input(self) -> None:
        given, recorded = self.fingerprint, self.recorded_input
        if given is None or recorded is None or given.same_input(recorded) or self._accept_changed:
            return
        raise JournalMismatchError(
            f"journal {self.path} belongs to {recorded.describe()}, not to {given.describe()}: "
            "nothing was sent. Give the input it was written for, or a new journal"
        )

    def _load(self, f: IO[bytes]) -> int | None:
        """Read every record; returns where to truncate a torn last line, or None.

        Raises JournalError (and the file is left as it is) when the file is not
        a journal of ours or a line other than a torn last one is bad.
        """
        offset = 0
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            record = _parse(raw)
            if number == 1 and (record is None or record.get("t") != "journal"):
                raise JournalError(
                    f"{self.path} is not an async-hi journal (its first line is not a journal header); "
                    "it was left as it is: give a new path for the journal"
                )
            if record is None or not raw.endswith(b"\n"):
                last = f.read(1) == b""
                torn = not raw.endswith(b"\n") and (
                    raw.startswith(_RECORD_START) or _RECORD_START.startswith(raw)
                )
                if not (last and torn):
                    raise JournalError(f"journal {self.path} line {number} is corrupt; nothing was changed")
                self._sort_finished()
                return start  # a write the process did not finish
            self._apply(record, number, loading=True)
        self._sort_finished()
        return None

    def _sort_finished(self) -> None:
        # stable: among records of one key the last one (the newest) wins
        order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
        keys, digests, status = array.array("q"), array.array("I"), array.array("b")
        for i in order:
            if keys and keys[-1] == self._keys[i]:
                digests[-1], status[-1] = self._digests[i], self._status[i]
            else:
                keys.append(self._keys[i])
                digests.append(self._digests[i])
                status.append(self._status[i])
        self._keys, self._digests, self._status = keys, digests, status

    def _apply(self, record: dict[str, Any], number: int, *, loading: bool = False) -> None:
        kind = record.get("t")
        try:
            if kind == "journal":
                version = record.get("format")
                if number != 1:
                    raise ValueError("a second header")
                if version not in _READABLE:
                    shown = version if isinstance(version, int) and not isinstance(version, bool) else "?"
                    raise JournalError(
                        f"journal {self.path} has format {shown}, this version reads {_READABLE}"
                    )
                if record.get("input") is not None:
                    self.recorded_input = Fingerprint.from_json(record["input"])
            elif kind == "input":
                self.recorded_input = Fingerprint.from_json(
                    {k: record.get(k) for k in ("path", "size", "sha256")}
                )
            elif kind == "intent":
                intent = Intent(
                    id=int(record["id"]),
                    keys=tuple(int(k) for k in record["keys"]),
                    digests=tuple(str(d) for d in record["digests"]),
                    datastore_id=str(record["ds"]),
                    image_set_id=str(record["is"]),
                    base=str(record["base"]),
                )
                self._open[intent.id] = intent
                self._next_id = max(self._next_id, intent.id + 1)
            elif kind in ("applied", "failed", "reconciled"):
                intent_or_none = (
                    self._open.pop(int(record["id"]), None) if record.get("id") is not None else None
                )
                landed = kind == "applied" or (kind == "reconciled" and bool(record["applied"]))
                # reconciled as not applied: unfinished, to be sent again
                code = _CODES[APPLIED] if landed else _CODES[FAILED] if kind == "failed" else 0
                digests = intent_or_none.digests if intent_or_none else tuple(record.get("digests", ()))
                keys = [int(k) for k in record["keys"]]
                for i, key in enumerate(keys):
                    prefix = _prefix(digests[i]) if i < len(digests) else 0
                    if loading:
                        self._keys.append(key)
                        self._digests.append(prefix)
                        self._status.append(code)
                    elif kind == "reconciled":
                        # settled before the run meets these keys: remember them. The run's own
                        # outcomes are for keys it has already passed: nothing to remember.
                        self._settled[key] = (code, prefix)
            else:
                raise JournalError(f"journal {self.path} line {number}: unknown record type")
        except (KeyError, TypeError, ValueError, OverflowError):
            what = kind if kind in _KINDS else "a"  # never echo what the file holds
            raise JournalError(f"journal {self.path} line {number}: malformed {what} record") from None

    # -- state ----------------------------------------------------------------

    @property
    def open_intents(self) -> list[Intent]:
        """Calls whose outcome is unknown (the previous run died with them in flight)."""
        return sorted(self._open.values(), key=lambda i: i.id)

    def finished(self, key: int, digest: str) -> str | None:
        """The status a key finished with in an earlier run (``applied``/``failed``), or None.

        Raises:
            JournalMismatchError: the journal has this key for a different request.
        """
        if key in self._settled:
            code, prefix = self._settled[key]
        else:
            i = bisect.bisect_left(self._keys, key)
            if i == len(self._keys) or self._keys[i] != key:
                return None
            code, prefix = self._status[i], self._digests[i]
        if code == 0:
            return None
        if prefix and prefix != _prefix(digest):
            raise JournalMismatchError(
                f"journal {self.path}: request {key} differs from the one journaled (was the input edited?)"
            )
        status = APPLIED if code == _CODES[APPLIED] else FAILED
        if status == FAILED and self.retry_failed:
            return None
        return status

    @property
    def finished_count(self) -> int:
        """Requests the journal had finished when it was opened."""
        return sum(1 for code in self._status if code) + sum(1 for code, _ in self._settled.values() if code)

    # -- writing --------------------------------------------------------------

    async def intent(
        self, *, keys: Sequence[int], digests: Sequence[str], datastore_id: str, image_set_id: str, base: str
    ) -> int:
        """Record (durably) that a call is about to be sent; returns its intent id."""
        intent = Intent(
            id=self._next_id,
            keys=tuple(keys),
            digests=tuple(digests),
            datastore_id=datastore_id,
            image_set_id=image_set_id,
            base=base,
        )
        self._next_id += 1
        self._open[intent.id] = intent
        await self._append(
            {
                "t": "intent",
                "id": intent.id,
                "keys": list(intent.keys),
                "digests": list(intent.digests),
                "ds": datastore_id,
                "is": image_set_id,
                "base": base,
            }
        )
        return intent.id

    async def applied(self, intent_id: int, *, version: str | None) -> None:
        """Record (durably) that the call landed, creating ``version``."""
        await self._close(intent_id, {"t": "applied", "version": version})

    async def failed(
        self, intent_id: int | None, *, reason: str, keys: Sequence[int] = (), digests: Sequence[str] = ()
    ) -> None:
        """Record (durably) that a call failed for good (or, without an intent, requests never sent).

        Args:
            intent_id: the call's intent, or None for requests that were never sent.
            reason: an error code or class name (never a message: messages may quote input).
            keys: the requests, when there is no intent.
            digests: their digests, when there is no intent.
        """
        if intent_id is None:
            record: dict[str, Any] = {"t": "failed", "id": None, "keys": list(keys), "digests": list(digests)}
            record["reason"] = reason
            self._apply(record, 0)
            await self._append(record)
            return
        await self._close(intent_id, {"t": "failed", "reason": reason})

    async def reconciled(self, intent_id: int, *, applied: bool, version: str | None = None) -> None:
        """Record (durably) what reconciliation found for an open intent."""
        await self._close(intent_id, {"t": "reconciled", "applied": applied, "version": version})

    async def _close(self, intent_id: int, record: dict[str, Any]) -> None:
        intent = self._open.get(intent_id)
        if intent is None:
            raise JournalError(f"intent {intent_id} is not open")
        record = {"t": record["t"], "id": intent_id, "keys": list(intent.keys), **record}
        self._apply(record, 0)
        await self._append(record)

    async def _append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise JournalError("the journal is not open (use `async with Journal(...)`)")
        self._pending.append(_line(record))
        self._queued += 1
        mine = self._queued
        # group commit: whoever holds the lock writes everything queued so far
        async with self._lock:
            if self._durable >= mine:
                return
            await self._flush_locked()

    async def _flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        batch, self._pending = self._pending, []
        target = self._queued
        if batch:
            await anyio.to_thread.run_sync(self._write_now, batch)
        self._durable = target

    def _write_now(self, lines: list[bytes]) -> None:
        assert self._file is not None
        self._file.write(b"".join(lines))
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())


_CODES = {APPLIED: 1, FAILED: 2}


def _prefix(digest: str) -> int:
    try:
        return int(digest[:8], 16)
    except ValueError:
        return 0


def _parse(raw: bytes) -> dict[str, Any] | None:
    """One line as a record, or None when it is not a JSON object."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) else None


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
