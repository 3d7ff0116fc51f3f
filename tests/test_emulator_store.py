"""The emulator's state machine, driven directly on a fake clock (no sleeping)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from async_hi.contract import NOT_CONSISTENT_MESSAGE, STALE_VERSION_MESSAGE
from async_hi.emulator._seed import synthetic_metadata
from async_hi.emulator._store import ApiError, Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(lock_seconds=5.0, clock=clock)


def seeded(
    store: Store, *, primary: bool = False, seed: int = 1, study_uid: str | None = None
) -> tuple[str, str]:
    ds = next(iter(store.datastores.values()), None) or store.create_datastore()
    doc = synthetic_metadata(random.Random(seed), study_instance_uid=study_uid)
    image_set = store.add_image_set(ds.datastore_id, doc, primary=primary)
    return ds.datastore_id, image_set.image_set_id


STUDY = {"Study": {"DICOM": {"StudyDescription": "NEW"}}}


def test_update_locks_then_applies_after_the_window(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    image_set = store.update(d, i, latest_version=1, updatable=STUDY)
    assert image_set.state == "LOCKED"
    assert image_set.latest.version_id == 2
    assert image_set.latest.workflow_status == "UPDATING"
    clock.now += 4.9
    assert store.image_set(d, i).state == "LOCKED"
    with pytest.raises(ApiError) as info:
        store.update(d, i, latest_version=2, updatable=STUDY)
    assert info.value.code == "ConflictException"
    clock.now += 0.2
    image_set = store.image_set(d, i)
    assert image_set.state == "ACTIVE"
    assert image_set.latest.workflow_status == "UPDATED"
    assert image_set.latest.metadata["Study"]["DICOM"]["StudyDescription"] == "NEW"
    assert image_set.versions[0].metadata["Study"]["DICOM"]["StudyDescription"] != "NEW"


def test_failed_apply_keeps_the_version_with_the_old_content(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    before = store.image_set(d, i).latest.metadata
    store.image_set(d, i).fail_next_apply = "Injected apply failure"
    store.update(d, i, latest_version=1, updatable=STUDY)
    clock.now += 10
    image_set = store.image_set(d, i)
    assert image_set.latest.version_id == 2
    assert image_set.latest.workflow_status == "UPDATE_FAILED"
    assert image_set.latest.message == "Injected apply failure"
    assert image_set.latest.metadata == before
    # the next write names the failed version
    store.update(d, i, latest_version=2, updatable=STUDY)
    assert image_set.latest.version_id == 3


def test_revert_creates_a_new_version_equal_to_the_old(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    v1 = store.image_set(d, i).latest.metadata
    store.update(d, i, latest_version=1, updatable=STUDY)
    clock.now += 10
    store.update(d, i, latest_version=2, revert_to=1)
    clock.now += 10
    image_set = store.image_set(d, i)
    assert image_set.latest.version_id == 3
    assert image_set.latest.origin == "revert"
    assert image_set.latest.metadata == v1
    with pytest.raises(ApiError, match="does not exist"):
        store.update(d, i, latest_version=3, revert_to=4)


def test_refused_writes_change_nothing(store: Store) -> None:
    d, i = seeded(store)
    snapshot = [(v.version_id, v.metadata) for v in store.image_set(d, i).versions]
    bad: list[dict[str, Any]] = [
        {"latest_version": 2, "updatable": STUDY},
        {"latest_version": 1, "updatable": {"Study": {"DICOM": {"PatientName": "X"}}}},
        {"latest_version": 1, "updatable": {"Study": {"DICOM": {"StudyInstanceUID": "1.2"}}}},
        {"latest_version": 1, "updatable": {"Study": {"Series": {"1.2.3": {"DICOM": {"Modality": "CT"}}}}}},
        {"latest_version": 1, "removable": {"Patient": {"DICOM": {"PixelData": None}}}},
        {"latest_version": 1, "updatable": {"Study": {"DICOM": {"00091001": "x"}}}},
    ]
    for kwargs in bad:
        with pytest.raises(ApiError):
            store.update(d, i, **kwargs)
    assert [(v.version_id, v.metadata) for v in store.image_set(d, i).versions] == snapshot


def test_force_allows_uid_change_and_marks_the_version(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    doc = store.image_set(d, i).latest.metadata
    suid = next(iter(doc["Study"]["Series"]))
    change = {"Study": {"Series": {suid: {"DICOM": {"SeriesInstanceUID": "1.2.3.4"}}}}}
    store.update(d, i, latest_version=1, updatable=change, force=True)
    clock.now += 10
    latest = store.image_set(d, i).latest
    assert latest.forced
    assert "1.2.3.4" in latest.metadata["Study"]["Series"]
    assert suid not in latest.metadata["Study"]["Series"]


def test_primary_image_sets_refuse_patient_and_series_level_and_uid_changes(store: Store) -> None:
    d, i = seeded(store, primary=True)
    doc = store.image_set(d, i).latest.metadata
    suid = next(iter(doc["Study"]["Series"]))
    for change, force in [
        ({"Patient": {"DICOM": {"PatientName": "X^Y"}}}, False),
        ({"Study": {"Series": {suid: {"DICOM": {"Modality": "MR"}}}}}, False),
        ({"Study": {"DICOM": {"StudyInstanceUID": "1.2.3"}}}, True),
    ]:
        with pytest.raises(ApiError, match="primary"):
            store.update(d, i, latest_version=1, updatable=change, force=force)
    store.update(d, i, latest_version=1, updatable=STUDY)  # study level is fine


def test_include_study_image_sets_bumps_every_primary_of_the_study(store: Store, clock: FakeClock) -> None:
    d, a = seeded(store, primary=True, seed=1)
    study_uid = store.image_set(d, a).study_uid()
    _, b = seeded(store, primary=True, seed=2, study_uid=study_uid)
    _, c = seeded(store, primary=False, seed=3, study_uid=study_uid)  # not primary: untouched
    _, other = seeded(store, primary=True, seed=4)  # another study: untouched
    store.update(d, a, latest_version=1, updatable=STUDY, include_study=True)
    clock.now += 10
    assert store.image_set(d, a).latest.version_id == 2
    assert store.image_set(d, b).latest.version_id == 2
    assert store.image_set(d, b).latest.metadata["Study"]["DICOM"]["StudyDescription"] == "NEW"
    assert store.image_set(d, c).latest.version_id == 1
    assert store.image_set(d, other).latest.version_id == 1


def test_include_study_conflicts_if_any_member_is_locked(store: Store) -> None:
    d, a = seeded(store, primary=True, seed=1)
    _, b = seeded(store, primary=True, seed=2, study_uid=store.image_set(d, a).study_uid())
    store.update(d, b, latest_version=1, updatable=STUDY)
    with pytest.raises(ApiError) as info:
        store.update(d, a, latest_version=1, updatable=STUDY, include_study=True)
    assert info.value.code == "ConflictException"
    assert store.image_set(d, a).latest.version_id == 1


def test_remove_instance_and_series(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    doc = store.image_set(d, i).latest.metadata
    s1, s2 = list(doc["Study"]["Series"])
    inst = next(iter(doc["Study"]["Series"][s1]["Instances"]))
    store.update(
        d, i, latest_version=1, removable={"Study": {"Series": {s1: {"Instances": {inst: {}}}, s2: {}}}}
    )
    clock.now += 10
    after = store.image_set(d, i).latest.metadata
    assert list(after["Study"]["Series"]) == [s1]
    assert inst not in after["Study"]["Series"][s1]["Instances"]
    assert len(after["Study"]["Series"][s1]["Instances"]) == 2


def test_private_tag_needs_force_and_a_vr(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    doc = store.image_set(d, i).latest.metadata
    s = next(iter(doc["Study"]["Series"]))
    inst = next(iter(doc["Study"]["Series"][s]["Instances"]))
    tag = {
        "Study": {
            "Series": {s: {"Instances": {inst: {"DICOM": {"00091001": "V"}, "DICOMVRs": {"00091001": "LO"}}}}}
        }
    }
    with pytest.raises(ApiError, match="force"):
        store.update(d, i, latest_version=1, updatable=tag)
    no_vr = {"Study": {"Series": {s: {"Instances": {inst: {"DICOM": {"00091001": "V"}}}}}}}
    with pytest.raises(ApiError, match="VR"):
        store.update(d, i, latest_version=1, updatable=no_vr, force=True)
    store.update(d, i, latest_version=1, updatable=tag, force=True)
    clock.now += 10
    stored = store.image_set(d, i).latest.metadata["Study"]["Series"][s]["Instances"][inst]
    assert stored["DICOM"]["00091001"] == "V"
    assert stored["DICOMVRs"]["00091001"] == "LO"


# -- the real service's answers: stale version (E1), "not consistent yet" (E2) -----------------


@pytest.mark.parametrize(
    ("mode", "code"), [("not-found", "ResourceNotFoundException"), ("conflict", "ConflictException")]
)
def test_a_stale_or_future_version_is_refused_by_mode_even_while_locked(
    clock: FakeClock, mode: str, code: str
) -> None:
    store = Store(lock_seconds=5.0, clock=clock, stale_version_error=mode)  # type: ignore[arg-type]
    d, i = seeded(store)
    store.update(d, i, latest_version=1, updatable=STUDY)
    for stale in (1, 3):  # behind and ahead of the latest (2, still LOCKED)
        with pytest.raises(ApiError) as info:
            store.update(d, i, latest_version=stale, updatable=STUDY)
        assert (info.value.code, info.value.message) == (code, STALE_VERSION_MESSAGE)
    with pytest.raises(ApiError) as info:  # the latest version, but LOCKED: 409 in both modes
        store.update(d, i, latest_version=2, updatable=STUDY)
    assert info.value.code == "ConflictException"
    assert "LOCKED" in info.value.message
    assert [v.version_id for v in store.image_set(d, i).versions] == [1, 2]


def test_metadata_of_a_version_being_applied_is_not_consistent_yet(store: Store, clock: FakeClock) -> None:
    d, i = seeded(store)
    before = store.metadata(d, i)
    store.update(d, i, latest_version=1, updatable=STUDY)
    for version in (None, 2):  # the latest, and the version by number
        with pytest.raises(ApiError) as info:
            store.metadata(d, i, version)
        assert (info.value.code, info.value.message) == ("ConflictException", NOT_CONSISTENT_MESSAGE)
    assert store.metadata(d, i, 1) == before  # an applied version reads as ever
    clock.now += 5.0
    assert store.metadata(d, i)["Study"]["DICOM"]["StudyDescription"] == "NEW"
    assert store.metadata(d, i, 2) == store.metadata(d, i)


def test_not_consistent_yet_can_outlast_the_lock_be_shorter_or_be_off(clock: FakeClock) -> None:
    longer = Store(lock_seconds=1.0, clock=clock, not_consistent_seconds=3.0)
    d, i = seeded(longer)
    longer.update(d, i, latest_version=1, updatable=STUDY)
    clock.now += 2.0
    assert longer.image_set(d, i).state == "ACTIVE"  # applied ...
    with pytest.raises(ApiError):  # ... yet its metadata is not consistent yet (as after an import)
        longer.metadata(d, i)
    clock.now += 1.0
    assert longer.metadata(d, i)["Study"]["DICOM"]["StudyDescription"] == "NEW"

    shorter = Store(lock_seconds=5.0, clock=clock, not_consistent_seconds=1.0)
    d, i = seeded(shorter)
    old = shorter.metadata(d, i)
    shorter.update(d, i, latest_version=1, updatable=STUDY)
    with pytest.raises(ApiError):
        shorter.metadata(d, i)
    clock.now += 1.0  # still LOCKED, no longer 409: the content the version replaces
    assert shorter.image_set(d, i).state == "LOCKED"
    assert shorter.metadata(d, i) == old
    assert shorter.metadata(d, i, 2) == old

    off = Store(lock_seconds=5.0, clock=clock, not_consistent_reads=False)
    d, i = seeded(off)
    old = off.metadata(d, i)
    off.update(d, i, latest_version=1, updatable=STUDY)
    assert off.metadata(d, i) == old
    assert off.metadata(d, i, 2) == old


@pytest.mark.parametrize(
    "bad", [{"stale_version_error": "gone"}, {"not_consistent_seconds": -1.0}, {"lock_seconds": -1.0}]
)
def test_store_options_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Store(**bad)
