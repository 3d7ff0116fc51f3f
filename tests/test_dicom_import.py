"""The DICOM importer: pydicom's shipped test files, levels, frames, grouping, primary image sets."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from async_hi.emulator import pydicom_test_data_paths
from async_hi.emulator._dicom_import import add_to_store, read_dicom
from async_hi.emulator._store import Store
from async_hi.levels import Level, is_private_tag, level_of

DATA = Path(pydicom.data.data_manager.DATA_ROOT)
CT_SMALL = str(DATA / "test_files" / "CT_small.dcm")


@pytest.fixture(scope="module")
def all_files_report() -> Any:
    store = Store()
    d = store.create_datastore().datastore_id
    started = time.perf_counter()
    report = add_to_store(store, d, read_dicom(pydicom_test_data_paths()))
    return store, report, time.perf_counter() - started


def test_shipped_test_files_are_local_and_never_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tried to download pydicom test data")

    monkeypatch.setattr(pydicom.data.download, "data_path_with_download", no_download)
    monkeypatch.setattr(pydicom.data.data_manager, "data_path_with_download", no_download)
    paths = pydicom_test_data_paths()
    assert len(paths) > 150
    assert all(Path(p).is_file() and Path(p).is_relative_to(DATA) for p in paths)


def test_every_readable_shipped_file_imports_fast(all_files_report: Any) -> None:
    store, report, seconds = all_files_report
    assert seconds < 5
    assert report.imported + len(report.skipped) == report.files
    # every file pydicom reads as P10 with the three UIDs is imported; nothing else is
    readable = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom_test_data_paths():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                continue
            if all(ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
                readable += 1
    assert report.imported == readable == 160
    reasons = report.skipped_by_reason()
    assert reasons == {
        "not a DICOM P10 file (no DICM prefix or file meta)": 14,
        "lacks StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID": 16,
        "lacks StudyInstanceUID, SeriesInstanceUID": 4,
    }
    assert all(s.primary and s.outcome == "created" for s in report.image_sets)
    assert len(report.image_sets) == 49
    assert len(store.datastores[report.datastore_id].image_sets) == 49


def test_elements_sit_at_the_level_of_the_one_table(all_files_report: Any) -> None:
    store, report, _ = all_files_report
    seen_private = 0
    for isid in report.image_set_ids:
        doc = store.image_set(report.datastore_id, isid).latest.metadata
        assert doc["SchemaVersion"] == "1.1"
        assert all(level_of(k) is Level.PATIENT for k in doc["Patient"]["DICOM"])
        assert all(level_of(k) is Level.STUDY for k in doc["Study"]["DICOM"])
        for series in doc["Study"]["Series"].values():
            assert all(level_of(k) is Level.SERIES for k in series["DICOM"])
            for inst in series["Instances"].values():
                assert set(inst) == {"DICOM", "DICOMVRs", "StoredTransferSyntaxUID", "ImageFrames"}
                assert all(level_of(k) is Level.INSTANCE for k in inst["DICOM"])
                private = {k for k in inst["DICOM"] if is_private_tag(k)}
                assert private == set(inst["DICOMVRs"])
                assert all(len(vr) == 2 for vr in inst["DICOMVRs"].values())
                seen_private += len(private)
    assert seen_private > 100  # CT_small alone carries GE private groups


def _instance(path: str) -> dict[str, Any]:
    batch = read_dicom([path])
    (draft,) = batch.drafts
    (series,) = draft.metadata["Study"]["Series"].values()
    (inst,) = series["Instances"].values()
    result: dict[str, Any] = inst
    return result


@pytest.mark.parametrize(
    ("name", "frames", "frame_size", "stored"),
    [
        ("CT_small.dcm", 1, 128 * 128 * 2, "1.2.840.10008.1.2.4.202"),  # explicit LE -> HTJ2K
        ("SC_rgb_rle_2frame.dcm", 2, 100 * 100 * 3, "1.2.840.10008.1.2.4.202"),  # RLE -> HTJ2K
        ("rtdose.dcm", 15, 10 * 10 * 4, "1.2.840.10008.1.2.4.202"),
        ("SC_rgb_jpeg_dcmtk.dcm", 1, 100 * 100 * 3, "1.2.840.10008.1.2.4.50"),  # kept
        ("693_J2KI.dcm", 1, None, "1.2.840.10008.1.2.4.91"),  # kept
        ("test-SR.dcm", 0, None, "1.2.840.10008.1.2.4.202"),  # no pixels, no frames
    ],
)
def test_image_frames_and_stored_transfer_syntax(
    name: str, frames: int, frame_size: int | None, stored: str
) -> None:
    inst = _instance(str(DATA / "test_files" / name))
    assert inst["StoredTransferSyntaxUID"] == stored
    assert len(inst["ImageFrames"]) == frames
    ds = pydicom.dcmread(DATA / "test_files" / name, stop_before_pixels=True)
    for frame in inst["ImageFrames"]:
        assert len(frame["ID"]) == 32
        (level,) = frame["PixelDataChecksumFromBaseToFullResolution"]
        assert (level["Width"], level["Height"]) == (ds.Columns, ds.Rows)
        expected = frame_size or ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        assert frame["FrameSizeInBytes"] == expected
    assert ("PixelData" in inst["DICOM"]) is (frames > 0)
    assert len({f["ID"] for f in inst["ImageFrames"]}) == frames


def test_bad_inputs_are_reported_by_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not dicom")
    sub = tmp_path / "sub"
    sub.mkdir()
    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"  # a private one: not in the service's table
    ds.save_as(sub / "private.dcm", enforce_file_format=False, implicit_vr=False, little_endian=True)
    batch = read_dicom([tmp_path, str(tmp_path / "*.nothing"), tmp_path / "missing.dcm", CT_SMALL])
    reasons = {Path(s.path).name: s.reason for s in batch.skipped}
    assert reasons == {
        "notes.txt": "not a DICOM P10 file (no DICM prefix or file meta)",
        "private.dcm": "transfer syntax 1.2.3.4.5 is not supported",
        "*.nothing": "the pattern matches nothing",
        "missing.dcm": "no such file or folder",
    }
    assert batch.instances == 1
    assert batch.files == 5


def test_import_is_silent_about_values(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # badVR.dcm makes pydicom warn and log "Invalid value for VR IS: '1A'": a value
    caplog.set_level(logging.DEBUG)
    store = Store()
    d = store.create_datastore().datastore_id
    report = add_to_store(store, d, read_dicom([DATA / "test_files" / "badVR.dcm", DATA / "test_files"]))
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")
    text = "\n".join(report.lines())
    for value in ("1A", "CompressedSamples", "Lastname", "1CT1"):
        assert value not in text


def _copy(tmp_path: Path, name: str, **changes: Any) -> str:
    ds = pydicom.dcmread(CT_SMALL)
    ds.SOPInstanceUID = changes.pop("SOPInstanceUID", generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=False)
    return str(path)


def test_grouping_by_series_and_grouping_elements(tmp_path: Path) -> None:
    a, b = _copy(tmp_path, "a.dcm"), _copy(tmp_path, "b.dcm")
    other_patient = _copy(tmp_path, "c.dcm", PatientID="OTHER")
    other_series = _copy(tmp_path, "d.dcm", SeriesInstanceUID=generate_uid(), SeriesNumber="2")
    store = Store()
    d = store.create_datastore().datastore_id
    report = add_to_store(store, d, read_dicom([a, b, other_patient, other_series]))
    assert [(s.instances, s.primary, s.outcome) for s in report.image_sets] == [
        (2, True, "created"),  # a and b: one series, same grouping elements
        (1, False, "created"),  # same series, another PatientID: conflicts with the first
        (1, True, "created"),  # another series of the same study
    ]
    assert (
        report.image_sets[1].note == f"PatientID conflicts with primary image set {report.image_set_ids[0]}"
    )


def test_second_import_adds_a_version_or_a_non_primary_image_set(tmp_path: Path) -> None:
    store = Store()
    d = store.create_datastore().datastore_id
    first = add_to_store(store, d, read_dicom([CT_SMALL]))
    (isid,) = first.image_set_ids
    again = add_to_store(store, d, read_dicom([CT_SMALL, _copy(tmp_path, "more.dcm")]))
    assert [(s.image_set_id, s.primary, s.version_id, s.outcome) for s in again.image_sets] == [
        (isid, True, 2, "new version")
    ]
    image_set = store.image_set(d, isid)
    assert image_set.latest.workflow_status == "IMPORTED"
    (series,) = image_set.latest.metadata["Study"]["Series"].values()
    assert len(series["Instances"]) == 2
    assert image_set.latest.metadata["ImageSetID"] == isid

    conflicting = _copy(tmp_path, "date.dcm", StudyDate="20200101")
    third = add_to_store(store, d, read_dicom([conflicting]))
    (made,) = third.image_sets
    assert (made.primary, made.outcome, made.note) == (
        False,
        "created",
        f"StudyDate conflicts with primary image set {isid}",
    )
    assert len(store.datastores[d].image_sets) == 2

    unprimary = add_to_store(store, d, read_dicom([CT_SMALL]), primary=False)
    assert [(s.primary, s.outcome) for s in unprimary.image_sets] == [(False, "created")]


def test_a_locked_primary_image_set_gets_a_non_primary_sibling() -> None:
    now = [1000.0]
    store = Store(lock_seconds=5, clock=lambda: now[0])
    d = store.create_datastore().datastore_id
    (isid,) = add_to_store(store, d, read_dicom([CT_SMALL])).image_set_ids
    update = {"Study": {"DICOM": {"StudyDescription": "X"}}}
    store.update(d, isid, latest_version=1, updatable=update)
    (made,) = add_to_store(store, d, read_dicom([CT_SMALL])).image_sets
    assert (made.primary, made.note) == (False, f"primary image set {isid} was LOCKED")
    now[0] += 6  # the update has applied: the next import goes into the primary image set
    (merged,) = add_to_store(store, d, read_dicom([CT_SMALL])).image_sets
    assert (merged.image_set_id, merged.version_id, merged.outcome) == (isid, 3, "new version")
    # the most recently received data wins over the update
    assert store.image_set(d, isid).latest.metadata["Study"]["DICOM"]["StudyDescription"] == "e+1"
