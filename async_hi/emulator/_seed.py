"""Realistic synthetic image set metadata, reproducible from a seed.

Every value here is invented (names from a short list of obviously fake ones),
so the emulator never holds real PHI unless a user imports it.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["synthetic_metadata"]

_FAMILY = ["DOE", "ROE", "POE", "MOE", "LOE", "TESTER", "SAMPLE", "EXAMPLE"]
_GIVEN = ["JANE", "JOHN", "ALEX", "SAM", "RILEY", "JORDAN", "TAYLOR", "MORGAN"]
_STUDIES = ["CHEST", "ABDOMEN PELVIS", "HEAD WO CONTRAST", "KNEE LEFT", "LUMBAR SPINE", "BRAIN MRI"]
_MODALITIES = [
    ("CT", "1.2.840.10008.5.1.4.1.1.2"),
    ("MR", "1.2.840.10008.5.1.4.1.1.4"),
    ("CR", "1.2.840.10008.5.1.4.1.1.1"),
    ("DX", "1.2.840.10008.5.1.4.1.1.1.1"),
]
_BODY_PARTS = ["CHEST", "ABDOMEN", "HEAD", "KNEE", "LSPINE", "BRAIN"]
_TRANSFER_SYNTAX = "1.2.840.10008.1.2.4.202"  # HTJ2K lossless RPCL, as HealthImaging stores


def _uid(rng: random.Random) -> str:
    # 2.25 + a 128-bit integer: the UUID-derived UID root any system may use
    return "2.25." + str(rng.getrandbits(120))


def _date(rng: random.Random, start: int, end: int) -> str:
    return f"{rng.randint(start, end):04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def synthetic_metadata(
    rng: random.Random,
    *,
    series: int = 2,
    instances: int = 3,
    frames: int = 1,
    study_instance_uid: str | None = None,
) -> dict[str, Any]:
    """One image set's metadata document (without DatastoreID/ImageSetID).

    Args:
        rng: the random source (seed it for reproducible data).
        series: number of series.
        instances: instances per series.
        frames: image frames per instance.
        study_instance_uid: reuse a study UID (several image sets of one study).
    """
    for name, value in (("series", series), ("instances", instances), ("frames", frames)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    patient = {
        "PatientName": f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
        "PatientID": f"PID{rng.randint(100000, 999999)}",
        "PatientBirthDate": _date(rng, 1930, 2020),
        "PatientSex": rng.choice(["F", "M", "O"]),
    }
    study_date = _date(rng, 2015, 2025)
    study = {
        "StudyInstanceUID": study_instance_uid or _uid(rng),
        "StudyDate": study_date,
        "StudyTime": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00",
        "StudyDescription": rng.choice(_STUDIES),
        "StudyID": str(rng.randint(1, 9999)),
        "AccessionNumber": f"ACC{rng.randint(1000000, 9999999)}",
        "ReferringPhysicianName": f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^^DR",
        "PatientAge": f"{rng.randint(1, 99):03d}Y",
    }
    modality, sop_class = rng.choice(_MODALITIES)
    rows, cols = rng.choice([(512, 512), (256, 256), (1024, 1024)])
    all_series: dict[str, Any] = {}
    for s in range(series):
        suid = _uid(rng)
        insts: dict[str, Any] = {}
        for n in range(instances):
            iuid = _uid(rng)
            insts[iuid] = {
                "DICOM": {
                    "SOPClassUID": sop_class,
                    "SOPInstanceUID": iuid,
                    "InstanceNumber": str(n + 1),
                    "Rows": rows,
                    "Columns": cols,
                    "BitsAllocated": 16,
                    "BitsStored": 12,
                    "HighBit": 11,
                    "PixelRepresentation": 0,
                    "SamplesPerPixel": 1,
                    "PhotometricInterpretation": "MONOCHROME2",
                    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
                    "AcquisitionDate": study_date,
                },
                "DICOMVRs": {},
                "StoredTransferSyntaxUID": _TRANSFER_SYNTAX,
                "ImageFrames": [
                    {
                        "ID": f"{rng.getrandbits(128):032x}",
                        "PixelDataChecksumFromBaseToFullResolution": [
                            {"Width": cols, "Height": rows, "Checksum": rng.getrandbits(31)}
                        ],
                        "MinPixelValue": 0,
                        "MaxPixelValue": rng.randint(1000, 4095),
                        "FrameSizeInBytes": rows * cols * 2,
                    }
                    for _ in range(frames)
                ],
            }
        all_series[suid] = {
            "DICOM": {
                "Modality": modality,
                "SeriesInstanceUID": suid,
                "SeriesNumber": str(s + 1),
                "SeriesDescription": f"{modality} SERIES {s + 1}",
                "BodyPartExamined": rng.choice(_BODY_PARTS),
                "Manufacturer": "ASYNC-HI SYNTHETIC",
            },
            "Instances": insts,
        }
    return {
        "SchemaVersion": "1.1",
        "Patient": {"DICOM": patient},
        "Study": {"DICOM": study, "Series": all_series},
    }
