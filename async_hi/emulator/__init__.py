"""A reference emulator of the AWS HealthImaging endpoints async-hi speaks.

``async with Emulator() as emu:`` serves UpdateImageSetMetadata, GetImageSet,
GetImageSetMetadata and ListImageSetVersions on ``emu.endpoint_url`` (port 0:
a free port, published once bound), with SigV4 verification, the documented
per-operation quotas, the LOCKED/versions state machine and optional seeded
fault injection. See ``EmulatorConfig`` for the knobs and ``_admin`` for the
HTTP admin API under ``/_emulator/``. ``emu.import_dicom(paths)`` loads real
DICOM P10 studies (headers only) as HealthImaging's import would.
"""

from async_hi.emulator._config import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_SECRET_ACCESS_KEY,
    EmulatorConfig,
)
from async_hi.emulator._dicom_import import (
    ImportedImageSet,
    ImportReport,
    SkippedFile,
    pydicom_test_data_paths,
)
from async_hi.emulator._faults import FaultConfig
from async_hi.emulator._process import EmulatorProcess
from async_hi.emulator._server import Emulator, EmulatorThread, SeededImageSets

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_SECRET_ACCESS_KEY",
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "EmulatorThread",
    "FaultConfig",
    "ImportReport",
    "ImportedImageSet",
    "SeededImageSets",
    "SkippedFile",
    "pydicom_test_data_paths",
]
