"""One pydicom dataset as HealthImaging's metadata document holds it.

:func:`instance_parts` splits a dataset's top-level elements by level with
the one level table (:mod:`async_hi.levels`; elements it does not list stay
at instance level) and turns each value into the document's JSON form, the
one HealthImaging's GetImageSetMetadata shows:

- a standard element is keyed by its keyword; a private element, or one whose
  keyword names another tag (repeating groups such as overlays), by its tag as
  8 uppercase hex digits; private elements record their VR in ``DICOMVRs``;
- text VRs are strings as written in the file (IS and DS keep their digits,
  ``"40"``, not ``40``), person names their ``^``-separated form;
- binary numbers (US, SS, UL, SL, UV, SV, FL, FD) are JSON numbers, AT a tag;
- an element whose dictionary VM allows several values (``1-n``, ``2``,
  ``2-n``...) is a list even with one value (``"SpecificCharacterSet":
  ["ISO_IR 100"]``), with empty items kept as ``""``; other multi-valued
  elements (private ones) are lists when they hold several; sequences are
  lists of objects (same rules);
- empty values are ``null``; binary VRs (OB, OW, OF, OD, OL, OV, UN) are base64
  text (``"FileMetaInformationVersion": "AAE="``; empty: ``""``);
- the file meta elements are kept at instance level (``TransferSyntaxUID``,
  ``MediaStorageSOPClassUID``, ``ImplementationClassUID``...).

These are the shapes of a real GetImageSetMetadata document (evidence E6 of
healthimaging-semantics.md: aws-samples/aws-healthimaging-samples
``ahi-batch-image-frame-retrieve/test/usdoppler.json``, and the same repository's
``dicomweb-proxy/InstanceDICOMizer.py``, which turns such documents back into
DICOM by base64-decoding binary values and reading lists as multi-values).

Not copied: group lengths (gggg,0000) and the pixel data, never read
(``stop_before_pixels``); instances with an image pixel module get
``"PixelData": null`` as the service's documents show. An element pydicom
cannot decode becomes ``null`` and is counted, never reported by value.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from pydicom import datadict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from async_hi.levels import Level, level_of

__all__ = ["HTJ2K_LOSSLESS", "InstanceParts", "instance_parts", "stored_transfer_syntax"]

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_PIXEL_DATA = 0x7FE00010

#: What HealthImaging stores most pixel data as: HTJ2K lossless with RPCL options.
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.202"

# The developer guide's "Supported transfer syntaxes" table: the ones marked as
# keeping their encoding, and the ones transcoded to HTJ2K lossless.
_KEPT = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.203",
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
        *(f"1.2.840.10008.1.2.4.{n}.1" for n in range(100, 107)),
    }
)
_TRANSCODED = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.5",
    }
)
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def stored_transfer_syntax(transfer_syntax: str, ds: Dataset) -> str | None:
    """The ``StoredTransferSyntaxUID`` HealthImaging records, or None if it does not import it.

    Args:
        transfer_syntax: the file's TransferSyntaxUID.
        ds: the dataset (binary segmentations keep Explicit VR Little Endian).
    """
    if transfer_syntax in _KEPT:
        return transfer_syntax
    if (
        transfer_syntax == _EXPLICIT_LE
        and str(ds.get("SOPClassUID", "")) == _SEGMENTATION
        and str(ds.get("SegmentationType", "")) == "BINARY"
    ):
        return transfer_syntax
    if transfer_syntax in _TRANSCODED:
        return HTJ2K_LOSSLESS
    return None


@dataclass(slots=True)
class InstanceParts:
    """A dataset's elements split by level, plus the instance's own entries."""

    by_level: dict[Level, dict[str, Any]] = field(default_factory=lambda: {lvl: {} for lvl in Level})
    vrs: dict[str, str] = field(default_factory=dict)
    image_frames: list[dict[str, Any]] = field(default_factory=list)
    #: elements pydicom could not decode (stored as null)
    undecodable: int = 0


def _keyword(tag: int) -> str | None:
    """The keyword of a public tag when that keyword names exactly this tag (not a repeat)."""
    if tag >> 16 & 1:
        return None
    keyword = datadict.keyword_for_tag(tag)
    if keyword and datadict.tag_for_keyword(keyword) == tag:
        return str(keyword)
    return None


def _key(tag: int) -> str:
    """The document key of a tag: its keyword, else 8 uppercase hex digits."""
    return _keyword(tag) or f"{tag:08X}"


def _scalar(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (bytes, bytearray)):
        return None
    if vr in _INT_VRS or (" or " in vr and isinstance(value, int)):
        return int(value)
    if vr in _FLOAT_VRS:
        number = float(value)
        return number if math.isfinite(number) else None
    if vr == "AT":
        return f"{int(value):08X}"
    return str(value)


def _multi_valued(tag: int) -> bool:
    """Whether the dictionary lets ``tag`` hold more than one value (its VM is not ``1``)."""
    if tag >> 16 & 1:
        return False
    try:
        return str(datadict.dictionary_VM(tag)) != "1"
    except KeyError:
        return False


def _item(value: Any, vr: str) -> Any:
    """One value of a multi-valued element: as :func:`_scalar`, but an empty one stays ``""``."""
    return "" if value == "" else _scalar(value, vr)


class _Converter:
    def __init__(self) -> None:
        self.undecodable = 0

    def value(self, tag: int, elem: Any) -> Any:
        vr = str(elem.VR)
        value = elem.value
        if vr == "SQ" or isinstance(value, Sequence):
            items = [self.dataset(item) for item in value or ()]
            return items or None
        if vr in _BINARY_VRS or isinstance(value, (bytes, bytearray)):
            if value is None:
                return None
            if isinstance(value, (bytes, bytearray)):
                return base64.b64encode(bytes(value)).decode("ascii")
            return None  # a binary VR pydicom did not keep as bytes: no faithful text form
        if value is None or value == "":
            return None
        if isinstance(value, (MultiValue, list, tuple)):
            values = [_item(v, vr) for v in value]
            return values or None
        if _multi_valued(tag):
            return [_scalar(value, vr)]
        return _scalar(value, vr)

    def elements(self, ds: Dataset, *, meta: bool = False) -> list[tuple[int, str, Any]]:
        """(tag, VR, JSON value) of each element of ``ds``, decoding failures as null.

        Args:
            ds: a dataset, or (``meta``) its file meta group.
            meta: ``ds`` is the file meta: its elements are kept (not its group length).
        """
        out: list[tuple[int, str, Any]] = []
        for tag in list(ds.keys()):
            t = int(tag)
            if (t >> 16 == 0x0002 and not meta) or t & 0xFFFF == 0 or t == _PIXEL_DATA:
                continue
            try:
                elem = ds[tag]
                out.append((t, str(elem.VR), self.value(t, elem)))
            except Exception:  # a malformed value must not stop the import
                self.undecodable += 1
                out.append((t, "UN", None))
        return out

    def dataset(self, ds: Dataset) -> dict[str, Any]:
        return {_key(t): value for t, _vr, value in self.elements(ds)}


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return default


def _frames(ds: Dataset, sop_instance_uid: str) -> list[dict[str, Any]]:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        return []
    bits = _int(ds, "BitsAllocated", 8) or 8
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    count = max(_int(ds, "NumberOfFrames", 1) or 1, 1)
    size = (rows * cols * samples * bits + 7) // 8
    frames = []
    for n in range(count):
        # stable ids, so importing the same file twice gives the same frames
        frame_id = hashlib.sha256(f"{sop_instance_uid}/{n}".encode()).hexdigest()[:32]
        frames.append(
            {
                "ID": frame_id,
                # no pixels are decoded: checksums and pixel ranges are unknown
                "PixelDataChecksumFromBaseToFullResolution": [
                    {"Width": cols, "Height": rows, "Checksum": None}
                ],
                "MinPixelValue": None,
                "MaxPixelValue": None,
                "FrameSizeInBytes": size,
            }
        )
    return frames


def instance_parts(ds: Dataset, sop_instance_uid: str) -> InstanceParts:
    """Split ``ds`` by level and convert its values (see the module docstring).

    Args:
        ds: a dataset read with ``stop_before_pixels=True``.
        sop_instance_uid: its SOPInstanceUID (seeds the image frame ids).
    """
    conv = _Converter()
    parts = InstanceParts()
    meta = getattr(ds, "file_meta", None)
    found = conv.elements(meta, meta=True) if isinstance(meta, Dataset) else []
    for tag, vr, value in [*found, *conv.elements(ds)]:
        keyword = _keyword(tag)
        if keyword is not None:
            parts.by_level[level_of(keyword)][keyword] = value
            continue
        key = f"{tag:08X}"
        parts.by_level[Level.INSTANCE][key] = value
        if tag >> 16 & 1:
            parts.vrs[key] = vr
    parts.image_frames = _frames(ds, sop_instance_uid)
    if parts.image_frames:
        parts.by_level[Level.INSTANCE]["PixelData"] = None
    parts.undecodable = conv.undecodable
    return parts
