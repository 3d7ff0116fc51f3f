"""Manifests: streaming JSON Lines and CSV readers with line-numbered errors.

A manifest is read as a stream (memory stays flat for any length); the
readers yield a :class:`ManifestEntry` ``(line, update)`` for every request and
a :class:`ManifestError` for every bad line, then go on with the next line.
The caller decides whether an error stops the job. Errors name the (physical,
1-based) line and the problem, never an attribute value (PHI).

JSON Lines (``.jsonl`` / ``.ndjson``), one request per line, blank lines skipped::

    {"datastoreId": "<32 chars>", "imageSetId": "<32 chars>",
     "updatable": {"Study": {"DICOM": {"StudyDescription": "CHEST CT"}}},
     "removable": {"Patient": {"DICOM": {"PatientSex": ""}}},
     "force": false, "latestVersionId": "3", "includeStudyImageSets": false, "primary": false}
    {"datastoreId": "...", "imageSetId": "...", "revertToVersionId": "1"}

``updatable`` / ``removable`` are the decoded ``updatableAttributes`` /
``removableAttributes`` documents (plain JSON, never base64). Either or both,
or ``revertToVersionId`` instead. ``force``, ``latestVersionId``,
``includeStudyImageSets`` and ``primary`` are optional. Any other key is an
error. The JSON is strict: ``NaN``/``Infinity``, a number out of the float
range and an object with the same key twice (parsers differ on which wins)
are errors. A UTF-8 byte order mark on the first line is skipped.

CSV (``.csv``), a header row then one attribute per row. Columns (any order):

- required ``datastore_id``, ``image_set_id``, ``level``, ``attribute``, ``value``;
- optional ``series_uid`` (series and instance level), ``sop_uid`` (instance level),
  ``action`` (``set``, the default, or ``remove``), ``force`` (``true``/``false``).

``level`` is ``patient``, ``study``, ``series`` or ``instance``. ``value`` is
the string as written; a value starting with ``json:`` is parsed as JSON after
the prefix (numbers, multi-valued lists, sequences). For ``remove`` the value
is ignored. Consecutive rows for the same image set with the same ``force``
form one request whose line number is its first row's; a group is cut short
after :data:`MAX_GROUP_ROWS` rows, or where a row would set an attribute the
group removes (or the reverse), so the rows always apply in file order. A bad
row makes its whole group an error (nothing of that group is sent).

The CSV is parsed by the ``csv`` module on the stream (RFC 4180 quoting), so a
quoted value may hold commas, quotes (doubled) and newlines; a row's line
number is the physical line it starts on, and a quoted newline never starts a
row. A record the parser cannot read (a quote out of place, a value never
closed, a bare carriage return outside quotes, a line over
:data:`MAX_LINE_BYTES`) ends the reading with one error: past a quoting
mistake no later line can be trusted to be a row of its own, so nothing after
it is sent. A UTF-8 byte order mark on the first line is skipped.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from async_hi._errors import HealthImagingError
from async_hi._updates import InvalidUpdateError, MetadataUpdate
from async_hi.document import key_label

__all__ = [
    "MAX_GROUP_ROWS",
    "MAX_LINE_BYTES",
    "ManifestEntry",
    "ManifestError",
    "read_csv",
    "read_jsonl",
    "read_manifest",
]

#: A longer line is an error, never held in memory (JSON Lines: that line; CSV: the rest of the file).
MAX_LINE_BYTES = 1 << 20
#: CSV rows per request at most; a longer run for one image set becomes several requests.
MAX_GROUP_ROWS = 500
_BOM = b"\xef\xbb\xbf"

_JSONL_KEYS = {
    "datastoreId": "datastore_id",
    "imageSetId": "image_set_id",
    "updatable": "updatable",
    "removable": "removable",
    "revertToVersionId": "revert_to_version_id",
    "force": "force",
    "latestVersionId": "latest_version_id",
    "includeStudyImageSets": "include_study_image_sets",
    "primary": "primary",
}
_BOOL_KEYS = ("force", "includeStudyImageSets", "primary")
_STR_KEYS = ("datastoreId", "imageSetId", "revertToVersionId", "latestVersionId")
_CSV_REQUIRED = ("datastore_id", "image_set_id", "level", "attribute", "value")
_CSV_OPTIONAL = ("series_uid", "sop_uid", "action", "force")
_LEVELS = ("patient", "study", "series", "instance")


class ManifestEntry(NamedTuple):
    """One request of a manifest and the (1-based) line it starts on."""

    line: int
    update: MetadataUpdate


class ManifestError(HealthImagingError, ValueError):
    """A bad manifest line: where it is and what is wrong (never its values).

    Args:
        line: the 1-based line number (the first row of a CSV group).
        problem: what is wrong, PHI-free.
        source: the manifest's name, for the message.
        last_line: the last line of a CSV group, when it spans several.
    """

    def __init__(self, line: int, problem: str, *, source: str = "manifest", last_line: int | None = None):
        self.line = line
        self.problem = problem
        self.source = source
        self.last_line = last_line
        where = f"line {line}" if last_line in (None, line) else f"lines {line}-{last_line}"
        super().__init__(f"{source} {where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (self.line, self.problem, self.source, self.last_line))


def _rebuild_error(line: int, problem: str, source: str, last_line: int | None) -> ManifestError:
    return ManifestError(line, problem, source=source, last_line=last_line)


def _key_name(key: object, known: tuple[str, ...]) -> str:
    # a key is user text (maybe a value in the wrong place): a digest, never the text
    return key_label(key, known)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the newline), or None for a line over MAX_LINE_BYTES."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            # skip the rest of the long line without holding it
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(MAX_LINE_BYTES)
            yield number, None
            continue
        yield number, chunk.rstrip(b"\r\n")


def _open(source: str | os.PathLike[str] | IO[bytes]) -> tuple[IO[bytes], str, bool]:
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb"), Path(source).name, True
    name = getattr(source, "name", None)
    return source, Path(name).name if isinstance(name, str) else "manifest", False


def read_jsonl(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[ManifestEntry | ManifestError]:
    """Stream a JSON Lines manifest (format in the module docstring).

    Args:
        source: a path, or a binary file object (not closed here).

    Yields:
        A :class:`ManifestEntry` per request, a :class:`ManifestError` per bad line.
    """
    stream, name, owned = _open(source)
    try:
        for number, raw in _lines(stream):
            if raw is None:
                yield ManifestError(number, f"line longer than {MAX_LINE_BYTES} bytes", source=name)
                continue
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]  # a UTF-8 byte order mark (Windows editors write one)
            if not raw.strip():
                continue
            try:
                yield ManifestEntry(number, _jsonl_update(raw))
            except _Bad as exc:
                yield ManifestError(number, str(exc), source=name)
    finally:
        if owned:
            stream.close()


class _Bad(Exception):
    """A PHI-free problem with one line (internal)."""


class _Duplicate(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate  # which value wins differs between parsers: the line is ambiguous
    return obj


def _constant(name: str) -> Any:
    raise _Bad(f"not valid JSON: {name} is not a JSON number")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Bad("not valid JSON: a number is out of range")
    return value


def _loads(text: str) -> Any:
    """Strict JSON: no NaN or Infinity, no number out of range, no key given twice."""
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_number)
    except json.JSONDecodeError as exc:
        # exc.msg and the column say where; exc.doc would quote the line
        raise _Bad(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise _Bad("not valid JSON: nested too deeply") from None
    except _Duplicate:
        raise _Bad("not valid JSON: an object has the same key twice") from None


def _jsonl_update(raw: bytes) -> MetadataUpdate:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"not UTF-8 (byte {exc.start + 1})") from None
    obj = _loads(text)
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in _JSONL_KEYS]
    if unknown:
        names = ", ".join(_key_name(k, tuple(_JSONL_KEYS)) for k in unknown)
        raise _Bad(f"unknown key(s) {names}; allowed: {', '.join(_JSONL_KEYS)}")
    for key in _BOOL_KEYS:
        if key in obj and not isinstance(obj[key], bool):
            raise _Bad(f"{key} must be true or false")
    for key in _STR_KEYS:
        if key in obj and not isinstance(obj[key], str):
            raise _Bad(f"{key} must be a string")
    for key in ("datastoreId", "imageSetId"):
        if key not in obj:
            raise _Bad(f"missing {key}")
    kwargs = {_JSONL_KEYS[k]: v for k, v in obj.items()}
    try:
        return MetadataUpdate(**kwargs)
    except InvalidUpdateError as exc:
        raise _Bad("; ".join(exc.problems)) from None


# -- CSV ---------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    first: int
    datastore_id: str
    image_set_id: str
    force: bool
    last: int = 0
    rows: int = 0
    updatable: dict[str, Any] = field(default_factory=dict)
    removable: dict[str, Any] = field(default_factory=dict)
    #: (path, attribute) -> "set" / "remove", to cut the group where order would matter
    touched: dict[tuple[tuple[str, ...], str], str] = field(default_factory=dict)
    error: str | None = None
    error_line: int = 0


def _truthy(text: str, column: str) -> bool:
    value = text.strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise _Bad(f"{column} must be true or false")


def _path(level: str, series_uid: str, sop_uid: str) -> tuple[str, ...]:
    if level == "patient":
        return ("Patient",)
    if level == "study":
        return ("Study",)
    if not series_uid:
        raise _Bad(f"{level}-level rows need series_uid")
    if level == "series":
        return ("Study", "Series", series_uid)
    if not sop_uid:
        raise _Bad("instance-level rows need sop_uid")
    return ("Study", "Series", series_uid, "Instances", sop_uid)


def _dicom_at(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = doc
    for part in path:
        node = node.setdefault(part, {})
    dicom: dict[str, Any] = node.setdefault("DICOM", {})
    return dicom


def _value(text: str) -> Any:
    if not text.startswith("json:"):
        return text
    try:
        return _loads(text[5:])
    except _Bad:
        raise _Bad("value after json: is not valid JSON") from None


def read_csv(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[ManifestEntry | ManifestError]:
    """Stream a CSV manifest (format in the module docstring).

    Args:
        source: a path, or a binary file object (not closed here).

    Yields:
        A :class:`ManifestEntry` per request (a group of rows), a
        :class:`ManifestError` per bad row or header.
    """
    stream, name, owned = _open(source)
    try:
        yield from _read_csv(stream, name)
    finally:
        if owned:
            stream.close()


class _Feed:
    """The physical lines of a binary stream, as text for ``csv.reader``, counted.

    Each line keeps its line ending (a quoted newline is part of a value). A
    line that is not UTF-8 is decoded with ``surrogateescape`` and remembered,
    so the record holding it is an error that names it. A line longer than
    :data:`MAX_LINE_BYTES` ends the feed (it is skipped without being held);
    ``too_long`` says where.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.number = 0  # physical lines handed to the parser so far
        self.not_utf8: dict[int, int] = {}  # line -> first bad byte (1-based)
        self.too_long: int | None = None

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.too_long is not None:
            raise StopIteration
        chunk = self.stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            raise StopIteration
        self.number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = self.stream.readline(MAX_LINE_BYTES)
            self.too_long = self.number
            raise StopIteration
        encoding = "utf-8-sig" if self.number == 1 else "utf-8"
        try:
            return chunk.decode(encoding)
        except UnicodeDecodeError as exc:
            self.not_utf8[self.number] = exc.start + 1
            return chunk.decode(encoding, "surrogateescape")

    def problem_in(self, first: int, last: int) -> str | None:
        """The first undecodable line of ``first..last``, as a problem (and forget lines up to ``last``)."""
        problem = None
        for n in sorted(n for n in self.not_utf8 if n <= last):
            byte = self.not_utf8.pop(n)
            if problem is None and n >= first:
                where = "" if first == last else f"line {n}: "
                problem = f"{where}not UTF-8 (byte {byte})"
        return problem


_CSV_ERRORS = (
    ("unexpected end of data", "a quoted value is not closed before the end of the file"),
    ("expected after", "a quote ends a value that goes on (quote the whole value; double a quote inside it)"),
    ("new-line character", "a carriage return inside an unquoted value"),
    ("field larger than", "a value longer than {limit} characters"),
)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    for needle, problem in _CSV_ERRORS:
        if needle in text:
            return problem.format(limit=csv.field_size_limit())
    return "not valid CSV"


def _read_csv(stream: IO[bytes], name: str) -> Iterator[ManifestEntry | ManifestError]:
    """Records (rows, quoted newlines included) from ``csv.reader`` on the stream, grouped.

    A record the CSV parser cannot read (a quote out of place, a value never
    closed, an over-long line) ends the reading: where the quoting went wrong
    is unknowable, so no later line can be trusted to be a row of its own. It
    and everything after it is one error, and nothing of it is sent.
    """
    feed = _Feed(stream)
    reader = csv.reader(feed, strict=True)
    columns: list[str] | None = None
    group: _Group | None = None
    while True:
        first = feed.number + 1
        stop: str | None = None
        try:
            cells = next(reader)
        except StopIteration:
            cells = None
        except csv.Error as exc:
            cells, stop = None, _csv_problem(exc)
        if feed.too_long is not None:
            stop = f"line {feed.too_long} is longer than {MAX_LINE_BYTES} bytes"
            if feed.too_long != first:
                stop = f"a quoted value runs into {stop}"
        if cells is None:
            if group is not None:
                yield _finish(group, name)
            if stop is not None:
                what = "bad header" if columns is None else "not valid CSV"
                yield ManifestError(
                    first, f"{what}: {stop}; this line and every line after it are not read", source=name
                )
            return
        last = feed.number
        row_error = feed.problem_in(first, last)
        if not cells or (len(cells) == 1 and not cells[0].strip() and row_error is None):
            continue  # a blank line
        row: dict[str, str] = {}
        if columns is None:
            if row_error is not None:
                yield ManifestError(first, f"bad header: {row_error}", source=name)
                return
            header = [c.strip().lower() for c in cells]
            missing = [c for c in _CSV_REQUIRED if c not in header]
            unknown = [c for c in header if c not in _CSV_REQUIRED + _CSV_OPTIONAL]
            if missing or unknown or len(set(header)) != len(header):
                problem = "bad header:"
                if missing:
                    problem += f" missing column(s) {', '.join(missing)};"
                if unknown:
                    names = ", ".join(_key_name(c, _CSV_REQUIRED + _CSV_OPTIONAL) for c in unknown)
                    problem += f" unknown column(s) {names};"
                if len(set(header)) != len(header):
                    problem += " a column is repeated;"
                problem += f" expected {','.join(_CSV_REQUIRED)}[,{','.join(_CSV_OPTIONAL)}]"
                yield ManifestError(first, problem, source=name)
                return  # without a header no row can be read
            columns = header
            continue
        if row_error is None and len(cells) != len(columns):
            row_error = f"expected {len(columns)} cells, found {len(cells)}"
        elif row_error is None:
            row = dict(zip(columns, cells, strict=True))
        ds, iset = row.get("datastore_id", ""), row.get("image_set_id", "")
        try:
            force = _truthy(row.get("force", ""), "force")
        except _Bad as exc:
            row_error, force = str(exc), False
        # a row whose image set cannot be read is a group (an error) of its own
        same = (
            bool(row)
            and group is not None
            and (group.datastore_id, group.image_set_id, group.force)
            == (
                ds,
                iset,
                force,
            )
        )
        if group is not None and (not same or group.rows >= MAX_GROUP_ROWS):
            yield _finish(group, name)
            group = None
        if group is None:
            group = _Group(first=first, datastore_id=ds, image_set_id=iset, force=force)
        if row_error is None and group.error is None:
            try:
                key = _add_row(group, row)
            except _Bad as exc:
                row_error = str(exc)
            else:
                if key is not None:  # order matters here: close the group, start a new one
                    yield _finish(group, name)
                    group = _Group(first=first, datastore_id=ds, image_set_id=iset, force=force)
                    _add_row(group, row)
        if row_error is not None and group.error is None:
            group.error, group.error_line = row_error, first
        group.last = last
        group.rows += 1


def _add_row(group: _Group, row: dict[str, str]) -> tuple[tuple[str, ...], str] | None:
    """Add one row; returns the clashing key instead when the group must be cut first."""
    level = row["level"].strip().lower()
    if level not in _LEVELS:
        raise _Bad(f"level must be one of {', '.join(_LEVELS)}")
    action = row.get("action", "").strip().lower() or "set"
    if action not in ("set", "remove"):
        raise _Bad("action must be set or remove")
    attribute = row["attribute"].strip()
    if not attribute:
        raise _Bad("attribute is empty")
    path = _path(level, row.get("series_uid", "").strip(), row.get("sop_uid", "").strip())
    key = (path, attribute)
    previous = group.touched.get(key)
    if previous is not None and previous != action:
        return key
    value = _value(row["value"]) if action == "set" else ""
    doc = group.updatable if action == "set" else group.removable
    _dicom_at(doc, path)[attribute] = value
    group.touched[key] = action
    return None


def _finish(group: _Group, name: str) -> ManifestEntry | ManifestError:
    last = group.last if group.last != group.first else None
    if group.error is not None:
        where = "" if group.error_line == group.first else f"line {group.error_line}: "
        return ManifestError(group.first, where + group.error, source=name, last_line=last)
    try:
        update = MetadataUpdate(
            datastore_id=group.datastore_id,
            image_set_id=group.image_set_id,
            updatable=group.updatable or None,
            removable=group.removable or None,
            force=group.force,
        )
    except InvalidUpdateError as exc:
        return ManifestError(group.first, "; ".join(exc.problems), source=name, last_line=last)
    return ManifestEntry(group.first, update)


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestEntry | ManifestError]:
    """Stream a manifest, choosing the format by extension (``.csv``; otherwise JSON Lines).

    Args:
        path: the manifest file.
    """
    if Path(path).suffix.lower() == ".csv":
        return read_csv(path)
    return read_jsonl(path)
