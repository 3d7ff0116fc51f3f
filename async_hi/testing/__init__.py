"""Test your own HealthImaging code against the emulator, the way moto lets you test S3 code.

With pytest (the fixtures come with the package, through its pytest plugin)::

    def test_relabel(hi_emulator, hi_boto3):
        ids = hi_emulator.seed(3, same_study=True).image_set_ids
        relabel(hi_boto3, hi_emulator.datastore_id, ids, "CHEST CT")   # your code
        assert hi_emulator.calls("UpdateImageSetMetadata", status=200) == 3
        assert hi_emulator.history(ids[0])[-1].study["StudyDescription"] == "CHEST CT"

Fixtures: ``hi_emulator`` (an :class:`EmulatorHarness`, one per session, reset
before each test), ``hi_boto3``, ``hi_aioboto``, ``hi_client`` and
``hi_emulator_config``; see ``async_hi.testing._plugin``. In unittest and
scripts: ``with async_hi.testing.emulator() as emu:``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from async_hi.testing._harness import TEST_DEFAULTS, EmulatorHarness, emulator
    from async_hi.testing._records import Call, ImageSetVersion

# loaded on first use, so the pytest plugin costs nothing in runs that use no fixture
_WHERE = {
    "TEST_DEFAULTS": "async_hi.testing._harness",
    "EmulatorHarness": "async_hi.testing._harness",
    "emulator": "async_hi.testing._harness",
    "Call": "async_hi.testing._records",
    "ImageSetVersion": "async_hi.testing._records",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'async_hi.testing' has no attribute {name!r}")


__all__ = ["TEST_DEFAULTS", "Call", "EmulatorHarness", "ImageSetVersion", "emulator"]
