"""Which DICOM element HealthImaging keeps at which level, and which need care.

One table for the whole project: the emulator's "attribute at the wrong level"
rule, the update builder's checks, the DICOM importer and the conformance
suite's choice of a harmless study-level attribute all read it from here. It is
loaded from ``async_hi/data/healthimaging-levels.json`` (the element lists of
the HealthImaging developer guide's "Metadata normalization" page); elements
not listed there are kept at instance level. Keywords and VRs come from
pydicom's data dictionary.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from importlib import resources

from pydicom import datadict

__all__ = [
    "FORCE_ONLY",
    "NEVER_UPDATABLE",
    "Level",
    "is_private_tag",
    "keyword_vr",
    "level_of",
    "levels_table",
    "resolve_keyword",
]


class Level(str, enum.Enum):
    """A level of the HealthImaging metadata document."""

    PATIENT = "Patient"
    STUDY = "Study"
    SERIES = "Series"
    INSTANCE = "Instance"


#: Never updatable or removable, at any level, with or without ``force``.
NEVER_UPDATABLE: frozenset[str] = frozenset(
    {
        "SchemaVersion",
        "DatastoreID",
        "ImageSetID",
        "PixelData",
        "Checksum",
        "Width",
        "Height",
        "MinPixelValue",
        "MaxPixelValue",
        "FrameSizeInBytes",
    }
)

#: Updatable only with ``force=true`` (besides instance-level private tags,
#: sequences and multi-valued attributes, which are decided per value).
FORCE_ONLY: frozenset[str] = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID"})

_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


@functools.cache
def levels_table() -> dict[str, Level]:
    """keyword -> level for every element the service keeps above instance level."""
    text = resources.files("async_hi").joinpath("data/healthimaging-levels.json").read_text()
    data = json.loads(text)
    table: dict[str, Level] = {}
    for level_name, items in data["levels"].items():
        level = Level(level_name)
        for item in items:
            table[item["keyword"]] = level
    return table


def is_private_tag(key: str) -> bool:
    """True for an 8-hex-digit tag key whose group number is odd (a private element)."""
    return bool(_HEX8.fullmatch(key)) and int(key[:4], 16) % 2 == 1


def resolve_keyword(key: str) -> str | None:
    """The standard keyword ``key`` names (itself, or the keyword of a public 8-hex tag).

    Returns None for private tags and for names pydicom's dictionary does not know.
    """
    if _HEX8.fullmatch(key):
        if is_private_tag(key):
            return None
        kw = datadict.keyword_for_tag(int(key, 16))
        return kw or None
    if key in NEVER_UPDATABLE:
        return key
    return key if datadict.tag_for_keyword(key) is not None else None


def level_of(keyword: str) -> Level:
    """The level at which HealthImaging keeps ``keyword`` (instance level unless listed)."""
    return levels_table().get(keyword, Level.INSTANCE)


def keyword_vr(keyword: str) -> str | None:
    """The VR of a standard ``keyword`` per pydicom's dictionary, or None if unknown."""
    tag = datadict.tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return str(datadict.dictionary_VR(tag))
    except KeyError:
        return None
