"""Manifest readers: formats, line numbers, and PHI-free errors for every bad-line path."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from async_hi import _manifest
from async_hi._manifest import ManifestEntry, ManifestError, read_csv, read_jsonl, read_manifest

DS = "d" * 32
IS1 = "a" * 32
IS2 = "b" * 32
SECRET = "SECRETVALUE"  # must never appear in an error


def jsonl(*lines: Any) -> io.BytesIO:
    out = [line if isinstance(line, (str, bytes)) else json.dumps(line) for line in lines]
    return io.BytesIO(b"\n".join(x.encode() if isinstance(x, str) else x for x in out) + b"\n")


def study(value: str = SECRET) -> dict[str, Any]:
    return {"Study": {"DICOM": {"StudyDescription": value}}}


def req(**extra: Any) -> dict[str, Any]:
    return {"datastoreId": DS, "imageSetId": IS1, "updatable": study(), **extra}


def errors(items: list[ManifestEntry | ManifestError]) -> list[ManifestError]:
    return [i for i in items if isinstance(i, ManifestError)]


def test_jsonl_good_lines_and_line_numbers() -> None:
    items = list(
        read_jsonl(
            jsonl(
                req(),
                "",
                {"datastoreId": DS, "imageSetId": IS2, "revertToVersionId": "1"},
                req(removable={"Patient": {"DICOM": {"PatientSex": ""}}}, force=True, latestVersionId="4"),
            )
        )
    )
    assert [type(i) for i in items] == [ManifestEntry] * 3
    entries = [i for i in items if isinstance(i, ManifestEntry)]
    assert [e.line for e in entries] == [1, 3, 4]
    assert entries[0].update.updatable == study()
    assert entries[1].update.revert_to_version_id == "1"
    assert entries[2].update.force
    assert entries[2].update.latest_version_id == "4"
    assert entries[2].update.removable == {"Patient": {"DICOM": {"PatientSex": ""}}}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"datastoreId": "' + SECRET, "not valid JSON"),
        (b'{"x": "\xff' + SECRET.encode() + b'"}', "not UTF-8"),
        ('["' + SECRET + '"]', "expected a JSON object, got list"),
        (req(colour=SECRET), "unknown key(s) key#"),
        (req(**{SECRET + " x": 1}), "unknown key(s) key#"),
        (req(force="yes"), "force must be true or false"),
        (req(latestVersionId=3), "latestVersionId must be a string"),
        ({"imageSetId": IS1, "updatable": study()}, "missing datastoreId"),
        (req(imageSetId=SECRET), "image_set_id must be 32 characters"),
        (req(revertToVersionId="2"), "not both"),
        ({"datastoreId": DS, "imageSetId": IS1}, "give updatable and/or removable"),
        (req(updatable={"Patient": {"DICOM": {"StudyDescription": SECRET}}}), "belongs at Study level"),
        (req(updatable={"Study": {"DICOM": {"StudyInstanceUID": SECRET}}}), "needs force=true"),
        (req(updatable={"Study": {"DICOM": {"StudyDescription": SECRET * 4000}}}), "more than 30000"),
    ],
)
def test_jsonl_bad_line_names_line_and_problem_never_the_value(line: Any, problem: str) -> None:
    items = list(read_jsonl(jsonl(req(), line, req())))
    assert [type(i) for i in items] == [ManifestEntry, ManifestError, ManifestEntry]
    err = errors(items)[0]
    assert err.line == 2
    assert problem in err.problem
    assert str(err).startswith("manifest line 2: ")
    assert SECRET not in str(err)
    assert SECRET not in repr(err.args)


def test_jsonl_over_long_line_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_manifest, "MAX_LINE_BYTES", 300)
    big = json.dumps(req(updatable=study(SECRET * 40)))
    items = list(read_jsonl(jsonl(req(), big, req())))
    assert [type(i) for i in items] == [ManifestEntry, ManifestError, ManifestEntry]
    assert errors(items)[0].line == 2
    assert "longer than 300 bytes" in errors(items)[0].problem
    assert [i.line for i in items] == [1, 2, 3]


def test_jsonl_is_streamed_lazily() -> None:
    # an input that breaks after the first two lines: reading the first entry must not touch it
    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            self.lines = [json.dumps(req()).encode() + b"\n"] * 2

        def readline(self, size: int | None = -1) -> bytes:
            if not self.lines:
                raise AssertionError("read past what was asked for")
            return self.lines.pop(0)

    it = read_jsonl(Exploding())  # type: ignore[arg-type]
    assert isinstance(next(it), ManifestEntry)
    assert isinstance(next(it), ManifestEntry)


def test_read_manifest_picks_the_format_by_extension(tmp_path: Path) -> None:
    j = tmp_path / "m.jsonl"
    j.write_text(json.dumps(req()) + "\nnot json\n")
    items = list(read_manifest(j))
    assert isinstance(items[0], ManifestEntry)
    assert str(items[1]).startswith("m.jsonl line 2: not valid JSON")
    c = tmp_path / "m.csv"
    c.write_text(f"datastore_id,image_set_id,level,attribute,value\n{DS},{IS1},study,StudyDescription,X\n")
    (entry,) = read_manifest(c)
    assert isinstance(entry, ManifestEntry)
    assert entry.line == 2


# -- CSV ----------------------------------------------------------------------

HEADER = "datastore_id,image_set_id,level,attribute,value,series_uid,sop_uid,action,force"
SUID = "1.2.3.4"
IUID = "1.2.3.4.5"


def csv_items(*rows: str, header: str = HEADER) -> list[ManifestEntry | ManifestError]:
    return list(read_csv(io.BytesIO(("\n".join([header, *rows]) + "\n").encode())))


def test_csv_groups_consecutive_rows_per_image_set() -> None:
    items = csv_items(
        f"{DS},{IS1},patient,PatientName,DOE^J,,,,",
        f"{DS},{IS1},study,StudyDescription,X,,,,",
        f"{DS},{IS1},series,SeriesDescription,S,{SUID},,,",
        f"{DS},{IS1},instance,InstanceNumber,json:7,{SUID},{IUID},,",
        f"{DS},{IS1},study,AccessionNumber,,,,remove,",
        f"{DS},{IS2},study,StudyDescription,Y,,,,",
        f"{DS},{IS1},study,StudyDescription,Z,,,,true",
    )
    assert all(isinstance(i, ManifestEntry) for i in items)
    entries = [i for i in items if isinstance(i, ManifestEntry)]
    assert [e.line for e in entries] == [2, 7, 8]
    u = entries[0].update
    assert u.updatable == {
        "Patient": {"DICOM": {"PatientName": "DOE^J"}},
        "Study": {
            "DICOM": {"StudyDescription": "X"},
            "Series": {
                SUID: {
                    "DICOM": {"SeriesDescription": "S"},
                    "Instances": {IUID: {"DICOM": {"InstanceNumber": 7}}},
                }
            },
        },
    }
    assert u.removable == {"Study": {"DICOM": {"AccessionNumber": ""}}}
    assert entries[2].update.force  # a force change starts a new request


def test_csv_minimal_header_in_any_order() -> None:
    items = csv_items(
        f"X,study,StudyDescription,{IS1},{DS}", header="value,level,attribute,image_set_id,datastore_id"
    )
    assert isinstance(items[0], ManifestEntry)
    assert items[0].update.updatable == {"Study": {"DICOM": {"StudyDescription": "X"}}}


def test_csv_set_after_remove_of_same_attribute_starts_a_new_request() -> None:
    items = csv_items(
        f"{DS},{IS1},study,StudyDescription,,,,remove,",
        f"{DS},{IS1},study,StudyDescription,NEW,,,,",
    )
    entries = [i for i in items if isinstance(i, ManifestEntry)]
    assert [e.line for e in entries] == [2, 3]
    assert entries[0].update.removable
    assert entries[0].update.updatable is None
    assert entries[1].update.updatable == {"Study": {"DICOM": {"StudyDescription": "NEW"}}}


def test_csv_long_group_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_manifest, "MAX_GROUP_ROWS", 2)
    items = csv_items(*[f"{DS},{IS1},study,StudyDescription,V{n},,,," for n in range(5)])
    assert [i.line for i in items] == [2, 4, 6]
    assert all(isinstance(i, ManifestEntry) for i in items)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (f"{DS},{IS1},galaxy,StudyDescription,{SECRET},,,,", "level must be one of"),
        (f"{DS},{IS1},study,StudyDescription,{SECRET},,,frobnicate,", "action must be set or remove"),
        (f"{DS},{IS1},study,StudyDescription,{SECRET},,,,maybe", "force must be true or false"),
        (f"{DS},{IS1},series,SeriesDescription,{SECRET},,,,", "need series_uid"),
        (f"{DS},{IS1},instance,InstanceNumber,{SECRET},{SUID},,,", "need sop_uid"),
        (f"{DS},{IS1},study,,{SECRET},,,,", "attribute is empty"),
        (f'{DS},{IS1},study,StudyDescription,"json:[{SECRET}",,,,', "not valid JSON"),
        (f"{DS},{IS1},study,{SECRET}", "expected 9 cells, found 4"),
        (f"{DS},{IS1},patient,StudyDescription,{SECRET},,,,", "belongs at Study level"),
        (f"{DS},{SECRET},study,StudyDescription,{SECRET},,,,", "image_set_id must be 32 characters"),
    ],
)
def test_csv_bad_row_names_line_and_problem_never_the_value(row: str, problem: str) -> None:
    items = csv_items(
        f"{DS},{IS2},study,StudyDescription,OK,,,,",
        row,
        f"{DS},{IS2},study,StudyDescription,OK,,,,",
    )
    assert [type(i) for i in items] == [ManifestEntry, ManifestError, ManifestEntry]
    err = errors(items)[0]
    assert err.line == 3
    assert problem in err.problem
    assert SECRET not in str(err)


def test_csv_bad_row_inside_a_group_fails_the_whole_group_naming_the_row() -> None:
    items = csv_items(
        f"{DS},{IS1},study,StudyDescription,{SECRET},,,,",
        f"{DS},{IS1},galaxy,StudyDescription,{SECRET},,,,",
        f"{DS},{IS1},study,AccessionNumber,{SECRET},,,,",
        f"{DS},{IS2},study,StudyDescription,OK,,,,",
    )
    assert [type(i) for i in items] == [ManifestError, ManifestEntry]
    err = errors(items)[0]
    assert (err.line, err.last_line) == (2, 4)
    assert str(err) == "manifest lines 2-4: line 3: level must be one of patient, study, series, instance"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("datastore_id,image_set_id,level,attribute", "missing column(s) value"),
        (f"{HEADER},colour", "unknown column(s) key#"),
        (f"{HEADER},{SECRET} x", "unknown column(s) key#"),
        (f"{HEADER},value", "a column is repeated"),
    ],
)
def test_csv_bad_header_is_one_error_and_stops(header: str, problem: str) -> None:
    items = csv_items(f"{DS},{IS1},study,StudyDescription,X,,,,", header=header)
    assert len(items) == 1
    err = errors(items)[0]
    assert err.line == 1
    assert problem in err.problem
    assert SECRET not in str(err)


def test_csv_non_utf8_row() -> None:
    data = (HEADER + "\n").encode() + f"{DS},{IS1},study,StudyDescription,".encode() + b"\xff\xfe,,,,\n"
    (err,) = read_csv(io.BytesIO(data))
    assert isinstance(err, ManifestError)
    assert err.line == 2
    assert "not UTF-8" in err.problem


def test_manifest_error_pickles() -> None:
    import pickle

    err = ManifestError(3, "bad", source="m.csv", last_line=5)
    back = pickle.loads(pickle.dumps(err))
    assert (back.line, back.problem, back.source, back.last_line, str(back)) == (
        3,
        "bad",
        "m.csv",
        5,
        str(err),
    )


def test_csv_unreadable_rows_are_separate_errors_in_line_order() -> None:
    items = csv_items(
        f"{DS},{IS1},study,StudyDescription,OK,,,,",
        f"{DS},{IS1},study,{SECRET}",
        f"{DS},{IS1},study",
        f"{DS},{IS1},study,StudyDescription,OK,,,,",
    )
    assert [(type(i), i.line) for i in items] == [
        (ManifestEntry, 2),
        (ManifestError, 3),
        (ManifestError, 4),
        (ManifestEntry, 5),
    ]


def test_csv_quoted_newline_is_part_of_the_value_never_a_second_request() -> None:
    # the value's second line looks like a request for another image set: it must stay a value
    value = f'"first line\n{DS},{IS2},study,StudyDescription,{SECRET},,,,\nthird line"'
    items = csv_items(
        f"{DS},{IS1},study,StudyDescription,{value},,,,",
        f"{DS},{IS2},study,AccessionNumber,A1,,,,",
    )
    assert [(type(i), i.line) for i in items] == [(ManifestEntry, 2), (ManifestEntry, 5)]
    first, second = (i for i in items if isinstance(i, ManifestEntry))
    assert first.update.image_set_id == IS1
    assert first.update.updatable == {
        "Study": {
            "DICOM": {
                "StudyDescription": f"first line\n{DS},{IS2},study,StudyDescription,{SECRET},,,,\nthird line"
            }
        }
    }
    assert second.update.updatable == {"Study": {"DICOM": {"AccessionNumber": "A1"}}}


def test_csv_crlf_and_a_quoted_crlf_keep_true_line_numbers() -> None:
    data = (
        f'{HEADER}\r\n{DS},{IS1},study,StudyDescription,"a\r\nb",,,,\r\n'
        f"{DS},{IS1},study,AccessionNumber,A,,,,true\r\n{DS},{IS2},study,StudyDescription,{{,,,,\r\n"
    ).encode()
    items = list(read_csv(io.BytesIO(data)))
    assert [(type(i), i.line) for i in items] == [(ManifestEntry, 2), (ManifestEntry, 4), (ManifestEntry, 5)]
    assert items[0].update.updatable == {"Study": {"DICOM": {"StudyDescription": "a\r\nb"}}}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([f'{DS},{IS1},study,StudyDescription,"{SECRET},,,,'], "a quoted value is not closed"),
        ([f'{DS},{IS1},study,StudyDescription,"{SECRET}"x,,,,'], "a quote ends a value that goes on"),
        ([f"{DS},{IS1},study,StudyDescription,{SECRET}\r{SECRET},,,,"], "a carriage return"),
    ],
)
def test_csv_a_row_the_parser_cannot_read_ends_the_reading(rows: list[str], problem: str) -> None:
    # where the quoting went wrong is unknowable: no later line may be taken for a row of its own
    items = csv_items(
        f"{DS},{IS2},study,StudyDescription,OK,,,,",
        *rows,
        f"{DS},{IS2},study,AccessionNumber,OK,,,,",
        f"{DS},{IS1},study,AccessionNumber,OK,,,,",
    )
    assert [(type(i), i.line) for i in items] == [(ManifestEntry, 2), (ManifestError, 3)]
    err = errors(items)[0]
    assert problem in err.problem
    assert "every line after it are not read" in err.problem
    assert SECRET not in str(err)


def test_csv_over_long_line_ends_the_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_manifest, "MAX_LINE_BYTES", 300)
    items = csv_items(
        f"{DS},{IS1},study,StudyDescription,OK,,,,",
        f"{DS},{IS1},study,StudyDescription,{SECRET * 40},,,,",
        f"{DS},{IS2},study,StudyDescription,OK,,,,",
    )
    assert [(type(i), i.line) for i in items] == [(ManifestEntry, 2), (ManifestError, 3)]
    assert "line 3 is longer than 300 bytes" in errors(items)[0].problem
    assert SECRET not in str(errors(items)[0])


def test_csv_non_utf8_inside_a_multi_line_value_names_its_line() -> None:
    data = (HEADER + "\n").encode() + f'{DS},{IS1},study,StudyDescription,"a\n'.encode() + b'\xff",,,,\n'
    data += f"{DS},{IS2},study,StudyDescription,OK,,,,\n".encode()
    items = list(read_csv(io.BytesIO(data)))
    assert [(type(i), i.line) for i in items] == [(ManifestError, 2), (ManifestEntry, 4)]
    assert errors(items)[0].problem == "line 3: not UTF-8 (byte 1)"
    assert errors(items)[0].last_line == 3


def test_csv_and_jsonl_accept_a_utf8_bom_on_the_first_line() -> None:
    data = "\ufeff".encode() + f"{HEADER}\n{DS},{IS1},study,StudyDescription,X,,,,\n".encode()
    (entry,) = read_csv(io.BytesIO(data))
    assert isinstance(entry, ManifestEntry)
    items = list(read_jsonl(io.BytesIO("\ufeff".encode() + jsonl(req(), req()).getvalue())))
    assert [type(i) for i in items] == [ManifestEntry, ManifestEntry]
    items = list(
        read_jsonl(io.BytesIO(jsonl(req()).getvalue() + "\ufeff".encode() + jsonl(req()).getvalue()))
    )
    assert [type(i) for i in items] == [ManifestEntry, ManifestError]  # a BOM mid-file is a bad line


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            f'{{"datastoreId": "{DS}", "imageSetId": "{IS1}", "imageSetId": "{IS2}", "updatable": {{}}}}',
            "the same key twice",
        ),
        (json.dumps(req()).replace(f'"{SECRET}"', "NaN"), "NaN is not a JSON number"),
        (json.dumps(req()).replace(f'"{SECRET}"', "-Infinity"), "-Infinity is not a JSON number"),
        (json.dumps(req()).replace(f'"{SECRET}"', "1e400"), "a number is out of range"),
    ],
)
def test_jsonl_ambiguous_or_non_json_numbers_are_refused(line: str, problem: str) -> None:
    items = list(read_jsonl(jsonl(req(), line)))
    assert [type(i) for i in items] == [ManifestEntry, ManifestError]
    assert problem in errors(items)[0].problem
