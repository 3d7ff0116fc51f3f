"""GetImageSetMetadata of an imported file shows every top-level element as pydicom reads it.

Each shipped pydicom test file that imports goes into its own datastore (so no
other file's patient, study or series values win), then boto3 fetches the
metadata and every top-level element of the file is looked up at its level
and compared with the value pydicom reads, in the shapes of a real document
(evidence E6: aws-samples/aws-healthimaging-samples
ahi-batch-image-frame-retrieve/test/usdoppler.json): elements whose dictionary
VM allows several values are lists even with one, binary values base64 text,
the file meta elements kept. Not copied by design: group lengths and the pixel
data (never read).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import warnings
from typing import Any

import boto3
import pydicom
from botocore.config import Config
from pydicom import datadict
from pydicom.multival import MultiValue

from async_hi.emulator import EmulatorThread, pydicom_test_data_paths
from async_hi.levels import Level, level_of

_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NUMBERS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}


def _key(tag: int) -> tuple[str, Level]:
    keyword = "" if tag >> 16 & 1 else datadict.keyword_for_tag(tag)
    if keyword and datadict.tag_for_keyword(keyword) == tag:
        return keyword, level_of(keyword)
    return f"{tag:08X}", Level.INSTANCE


def _kept(tag: int) -> bool:
    return tag & 0xFFFF != 0 and tag != 0x7FE00010


def _vm_allows_several(tag: int) -> bool:
    if tag >> 16 & 1:
        return False
    try:
        return str(datadict.dictionary_VM(tag)) != "1"
    except KeyError:
        return False


def _same_scalar(expected: Any, got: Any, vr: str) -> bool:
    if expected is None or expected == "":
        return got is None
    if vr in _NUMBERS or (" or " in vr and isinstance(expected, int)):
        return isinstance(got, (int, float)) and math.isclose(got, float(expected))
    if vr == "AT":
        return int(got, 16) == int(expected)
    if vr in ("IS", "DS"):
        try:
            return float(got) == float(expected)
        except ValueError:  # an invalid number is kept as written
            return bool(got == str(expected))
    return bool(got == str(expected))


def _same(elem: Any, got: Any) -> bool:
    vr, value = str(elem.VR), elem.value
    if vr in _BINARY or isinstance(value, bytes):
        if value is None:
            return got is None
        return isinstance(value, bytes) and got == base64.b64encode(value).decode()
    if value not in (None, "") and not isinstance(value, (MultiValue, list)) and _vm_allows_several(elem.tag):
        # a single value of a VM 1-n element is a one-element list
        return isinstance(got, list) and len(got) == 1 and _same_scalar(value, got[0], vr)
    if vr == "SQ":
        if not value:
            return got is None
        return len(got) == len(value) and all(
            # iterating a Dataset yields elements (and decodes them): tags come from keys()
            set(g) == {_key(int(t))[0] for t in item.keys() if _kept(int(t))}  # noqa: SIM118
            for g, item in zip(got, value, strict=True)
        )
    if isinstance(value, (MultiValue, list)):
        return (
            isinstance(got, list)
            and len(got) == len(value)
            # an empty value in a list stays "" (usdoppler.json: "ImageType": ["ORIGINAL", "PRIMARY", "", ..])
            and all(g == "" if e == "" else _same_scalar(e, g, vr) for e, g in zip(value, got, strict=True))
        )
    return _same_scalar(value, got, vr)


def _levels(doc: dict[str, Any]) -> dict[Level, dict[str, Any]]:
    (series,) = doc["Study"]["Series"].values()
    (inst,) = series["Instances"].values()
    return {
        Level.PATIENT: doc["Patient"]["DICOM"],
        Level.STUDY: doc["Study"]["DICOM"],
        Level.SERIES: series["DICOM"],
        Level.INSTANCE: inst["DICOM"],
    }


def test_every_imported_file_round_trips_through_get_image_set_metadata(
    emulator_thread: EmulatorThread,
) -> None:
    emu = emulator_thread
    client = boto3.client("medical-imaging", config=Config(inject_host_prefix=False), **emu.client_kwargs())
    checked_files = checked_elements = 0
    for path in pydicom_test_data_paths():
        report = emu.call(lambda path=path: emu.emulator.import_dicom([path]))  # type: ignore[misc]
        if not report.image_sets:
            continue
        (isid,) = report.image_set_ids
        r = client.get_image_set_metadata(datastoreId=report.datastore_id, imageSetId=isid)
        doc = json.loads(gzip.decompress(r["imageSetMetadataBlob"].read()))
        assert (doc["DatastoreID"], doc["ImageSetID"]) == (report.datastore_id, isid)
        levels = _levels(doc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            sources = [(ds.file_meta, t) for t in ds.file_meta.keys()]  # noqa: SIM118
            sources += [(ds, t) for t in ds.keys()]  # noqa: SIM118 (tags without decoding, see above)
            for source, tag in sources:
                if not _kept(int(tag)):
                    continue
                key, level = _key(int(tag))
                assert key in levels[level], f"{path}: {key} missing at {level.value} level"
                others = [lv for lv in Level if lv is not level and key in levels[lv]]
                assert not others, f"{path}: {key} also at {others}"
                try:
                    elem = source[tag]
                except Exception:  # pydicom cannot decode it: the import keeps null
                    assert levels[level][key] is None
                    continue
                assert _same(elem, levels[level][key]), f"{path}: {key} differs"
                checked_elements += 1
        checked_files += 1
    assert checked_files == 160
    assert checked_elements > 5000
