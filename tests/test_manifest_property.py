"""Property tests of the manifest readers (Hypothesis): quoting, newlines, BOMs, mixed encodings.

The properties, for JSON Lines and CSV alike:

- a valid line (row) is read as the request its canonical form gives, with its true line number;
- an invalid line is reported with its true line number and yields no request;
- no input makes the reader raise;
- no value appears in an error.

The oracles are independent of the readers: line numbers come from counting
newlines in what the test wrote, and the expected requests are built from the
generated fields directly.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_hi._manifest import ManifestEntry, ManifestError, read_csv, read_jsonl
from async_hi._updates import MetadataUpdate

SECRET = "SECRETVALUE"
DS = "d" * 32
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# values: any text a user may type (no lone surrogates: those are not text), including quotes,
# commas, CR/LF, BOMs and NULs, and now and then something that looks like a whole CSV row
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
_TRICKY = st.sampled_from(['"', '""', ",", "\n", "\r\n", "\r", "\ufeff", "\x00", " ", "é", "\u2028"])
VALUES = st.one_of(
    _TEXT,
    st.lists(st.one_of(_TRICKY, _TEXT), min_size=1, max_size=6).map("".join),
    _TEXT.map(lambda t: f"{t}\n{DS},{'f' * 32},study,StudyDescription,{SECRET},,,,\n"),
).filter(lambda v: not v.startswith("json:"))
FIELDS = st.sampled_from(
    [
        ("patient", "Patient", "PatientName"),
        ("study", "Study", "StudyDescription"),
        ("study", "Study", "AccessionNumber"),
    ]
)


def iset(n: int) -> str:
    return f"{n:032d}"


def split_lines(data: bytes) -> list[bytes]:
    """Physical lines as the oracle sees them (no trailing empty piece)."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


# -- JSON Lines -----------------------------------------------------------------


@st.composite
def jsonl_request(draw: st.DrawFn, n: int) -> tuple[dict[str, Any], MetadataUpdate]:
    _, level, attr = draw(FIELDS)
    value = draw(VALUES)
    remove = draw(st.booleans())
    doc = {level: {"DICOM": {attr: "" if remove else value}}}
    obj: dict[str, Any] = {"datastoreId": DS, "imageSetId": iset(n)}
    obj["removable" if remove else "updatable"] = doc
    if draw(st.booleans()):
        obj["force"] = draw(st.booleans())
    if draw(st.booleans()):
        obj["latestVersionId"] = str(draw(st.integers(1, 10**6)))
    expected = MetadataUpdate(
        datastore_id=DS,
        image_set_id=iset(n),
        updatable=None if remove else doc,
        removable=doc if remove else None,
        force=obj.get("force", False),
        latest_version_id=obj.get("latestVersionId"),
    )
    return obj, expected


@st.composite
def jsonl_rendering(draw: st.DrawFn, obj: dict[str, Any]) -> bytes:
    """One of the many ways to write the same JSON object on a line."""
    text = json.dumps(
        obj,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :  ")])),
    )
    text = draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\t", "\r"]))
    return text.encode()


@st.composite
def jsonl_bad_line(draw: st.DrawFn, n: int) -> bytes:
    """A line that is invalid by construction, with the SECRET in its values."""
    good = {
        "datastoreId": DS,
        "imageSetId": iset(n),
        "updatable": {"Study": {"DICOM": {"StudyDescription": SECRET}}},
    }
    kind = draw(st.integers(0, 8))
    if kind == 0:  # cut short
        text = json.dumps(good)
        return text[: draw(st.integers(1, len(text) - 1))].encode()
    if kind == 1:  # another encoding (never valid UTF-8: 0xE9 then an ASCII byte)
        return json.dumps(
            {**good, "updatable": {"Study": {"DICOM": {"StudyDescription": SECRET + "éx"}}}},
            ensure_ascii=False,
        ).encode("latin-1")
    if kind == 2:
        return json.dumps({**good, "colour": SECRET}).encode()
    if kind == 3:
        return json.dumps({**good, "imageSetId": SECRET}).encode()
    if kind == 4:
        return json.dumps([SECRET]).encode()
    if kind == 5:
        return json.dumps({**good, "force": SECRET}).encode()
    if kind == 6:  # a UID change without force
        return json.dumps({**good, "updatable": {"Study": {"DICOM": {"StudyInstanceUID": SECRET}}}}).encode()
    if kind == 7:  # a lone surrogate, escaped
        return json.dumps(good).replace(SECRET, SECRET + "\\ud800").encode()
    return json.dumps(good).replace(f'"{SECRET}"', "NaN").encode() + SECRET.encode()


@st.composite
def jsonl_manifest(draw: st.DrawFn) -> tuple[bytes, dict[int, MetadataUpdate | None]]:
    """A manifest and, per physical line, the request it holds (None: must be an error)."""
    lines: list[bytes] = []
    expected: dict[int, MetadataUpdate | None] = {}
    for n in range(draw(st.integers(1, 8))):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            lines.append(draw(st.sampled_from([b"", b" ", b"\t", b"\r"])))  # blank: skipped
            continue
        if choice == 1:
            lines.append(draw(jsonl_bad_line(n)))
            expected[len(lines)] = None
            continue
        obj, update = draw(jsonl_request(n))
        lines.append(draw(jsonl_rendering(obj)))
        expected[len(lines)] = update
    data = b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))
    if draw(st.booleans()):
        data = "\ufeff".encode() + data
    return data, expected


@FAST
@given(jsonl_manifest())
def test_jsonl_lines_read_as_their_canonical_request_and_bad_lines_as_errors(
    case: tuple[bytes, dict[int, MetadataUpdate | None]],
) -> None:
    data, expected = case
    items = list(read_jsonl(io.BytesIO(data)))
    assert [i.line for i in items] == sorted(expected)
    for item in items:
        want = expected[item.line]
        if want is None:
            assert isinstance(item, ManifestError), item
            assert item.line <= len(split_lines(data))
            assert SECRET not in str(item)
        else:
            assert isinstance(item, ManifestEntry), item
            canonical = list(read_jsonl(io.BytesIO(json.dumps(_jsonl_obj(want)).encode())))
            assert item.update == want == canonical[0].update  # type: ignore[union-attr]
            assert item.update.digest() == want.digest()


def _jsonl_obj(u: MetadataUpdate) -> dict[str, Any]:
    obj: dict[str, Any] = {"datastoreId": u.datastore_id, "imageSetId": u.image_set_id}
    if u.updatable is not None:
        obj["updatable"] = u.updatable
    if u.removable is not None:
        obj["removable"] = u.removable
    obj["force"] = u.force
    if u.latest_version_id is not None:
        obj["latestVersionId"] = u.latest_version_id
    return obj


@FAST
@given(st.binary(max_size=400), st.binary(max_size=40))
def test_jsonl_reader_never_raises_and_never_quotes_input(head: bytes, tail: bytes) -> None:
    data = head + SECRET.encode() + tail
    lines = split_lines(data)
    for item in read_jsonl(io.BytesIO(data)):
        assert isinstance(item, (ManifestEntry, ManifestError))
        assert 1 <= item.line <= len(lines)
        if isinstance(item, ManifestError):
            assert SECRET not in str(item)


# -- CSV -----------------------------------------------------------------------------

COLUMNS = ["datastore_id", "image_set_id", "level", "attribute", "value", "action", "force"]


@st.composite
def csv_row(draw: st.DrawFn, n: int) -> tuple[dict[str, str], MetadataUpdate]:
    low, level, attr = draw(FIELDS)
    remove = draw(st.booleans())
    value = draw(VALUES)
    force = draw(st.sampled_from(["", "false", "true", "TRUE", "1", "no"]))
    row = {
        "datastore_id": DS,
        "image_set_id": iset(n),
        "level": draw(st.sampled_from([low, low.upper(), f" {low} "])),
        "attribute": attr,
        "value": value,
        "action": draw(st.sampled_from(["remove", "Remove"]))
        if remove
        else draw(st.sampled_from(["", "set"])),
        "force": force,
    }
    doc = {level: {"DICOM": {attr: "" if remove else value}}}
    expected = MetadataUpdate(
        datastore_id=DS,
        image_set_id=iset(n),
        updatable=None if remove else doc,
        removable=doc if remove else None,
        force=force.lower() in ("true", "1"),
    )
    return row, expected


def render_row(cells: list[str], *, quoting: int, terminator: str) -> str:
    out = io.StringIO()
    # the writer quotes a value holding a character of its line terminator only: with "\n" alone
    # a lone "\r" would go out unquoted (unreadable). Write CRLF rows, then end them as asked.
    csv.writer(out, quoting=quoting, lineterminator="\r\n").writerow(cells)
    return out.getvalue()[:-2] + terminator


@st.composite
def csv_manifest(draw: st.DrawFn) -> tuple[bytes, dict[int, MetadataUpdate | None]]:
    """A CSV manifest, one image set per row (so each row is a request of its own), and the oracle."""
    order = draw(st.permutations(COLUMNS))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    parts = [render_row(list(order), quoting=quoting, terminator=terminator).encode()]
    expected: dict[int, MetadataUpdate | None] = {}
    line = 2
    for n in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 4))
        if kind == 0:
            part = terminator.encode()  # a blank line
        else:
            row, update = draw(csv_row(n))
            result: MetadataUpdate | None = update
            encoding = "utf-8"
            if kind == 1:  # a bad cell, a bad level, a short row, or another encoding
                bad = draw(st.integers(0, 3))
                if bad == 0:
                    row["image_set_id"] = f"{SECRET}{n}"  # one image set per row, still
                elif bad == 1:
                    row["level"] = "galaxy"
                    row["value"] += SECRET
                elif bad == 2:
                    row["value"] = SECRET + "éx"
                    encoding = "latin-1"
                else:
                    row["force"] = SECRET
                result = None
            cells = [row[c] for c in order]
            part = render_row(cells, quoting=quoting, terminator=terminator).encode(encoding)
            expected[line] = result
        parts.append(part)
        line += part.count(b"\n")
    data = b"".join(parts)
    if draw(st.booleans()):
        data = "\ufeff".encode() + data
    return data, expected


@FAST
@given(csv_manifest())
def test_csv_rows_read_as_their_canonical_request_with_true_line_numbers(
    case: tuple[bytes, dict[int, MetadataUpdate | None]],
) -> None:
    data, expected = case
    items = list(read_csv(io.BytesIO(data)))
    assert [i.line for i in items] == sorted(expected)
    for item in items:
        want = expected[item.line]
        if want is None:
            assert isinstance(item, ManifestError), item
            assert SECRET not in str(item)
        else:
            assert isinstance(item, ManifestEntry), item
            assert item.update == want
            assert item.update.digest() == want.digest()
            # and the canonical form of that row reads the same
            canonical = f"{','.join(COLUMNS)}\n" + render_row(
                [DS, want.image_set_id, *_csv_cells(want)], quoting=csv.QUOTE_MINIMAL, terminator="\n"
            )
            (again,) = read_csv(io.BytesIO(canonical.encode()))
            assert isinstance(again, ManifestEntry)
            assert again.update == want


def _csv_cells(u: MetadataUpdate) -> list[str]:
    remove = u.removable is not None
    doc = u.removable if remove else u.updatable
    assert doc is not None
    ((level, part),) = doc.items()
    ((attr, value),) = part["DICOM"].items()
    return [level.lower(), attr, value, "remove" if remove else "set", "true" if u.force else "false"]


@FAST
@given(st.binary(max_size=400), st.binary(max_size=40))
def test_csv_reader_never_raises_and_never_quotes_input(head: bytes, tail: bytes) -> None:
    header = b"datastore_id,image_set_id,level,attribute,value\n"
    data = header + head + SECRET.encode() + tail
    lines = split_lines(data)
    for item in read_csv(io.BytesIO(data)):
        assert isinstance(item, (ManifestEntry, ManifestError))
        assert 1 <= item.line <= len(lines)
        if isinstance(item, ManifestError):
            assert SECRET not in str(item)


@FAST
@given(st.lists(VALUES, min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_a_quoted_newline_never_makes_a_request_of_its_own(values: list[str], terminator: str) -> None:
    # every value is written as a row for image set 0; rows that look like other image sets hide inside
    rows = [[DS, iset(0), "study", "StudyDescription", v] for v in values]
    text = "datastore_id,image_set_id,level,attribute,value" + terminator
    text += "".join(render_row(r, quoting=csv.QUOTE_MINIMAL, terminator=terminator) for r in rows)
    items = list(read_csv(io.BytesIO(text.encode())))
    assert all(isinstance(i, ManifestEntry) and i.update.image_set_id == iset(0) for i in items), items
    assert items[0].line == 2
