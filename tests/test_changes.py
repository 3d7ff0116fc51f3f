"""The client's own reading of updates and versions (``_changes``), judged against the emulator's apply.

Here the emulator's ``apply_update`` is the *oracle*: the code under test
never calls it, so a disagreement shows up.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from async_hi._changes import named_changes, outside_named, same_content, shows, strictly_equal
from async_hi._updates import MetadataUpdate
from async_hi.document import apply_update
from async_hi.emulator._seed import synthetic_metadata
from tests.test_coalesce import META, SERIES, upd, updates, valid_on

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@SETTINGS
@given(updates())
def test_a_version_made_by_the_update_shows_it_and_changes_nothing_else(u: MetadataUpdate) -> None:
    assume(valid_on(META, u))
    after = apply_update(META, u.updatable, u.removable)
    named = named_changes(u)
    assert not outside_named(named, META, after)
    assert shows(named, after)


@SETTINGS
@given(updates(), updates())
def test_a_version_made_by_another_update_is_told_apart(mine: MetadataUpdate, theirs: MetadataUpdate) -> None:
    assume(valid_on(META, mine) and valid_on(META, theirs))
    after = apply_update(META, theirs.updatable, theirs.removable)
    named = named_changes(mine)
    mine_after = apply_update(META, mine.updatable, mine.removable)
    if not outside_named(named, META, after) and shows(named, after):
        # "theirs" changed only what mine names, to mine's values: exactly the state mine makes
        assert same_content(after, mine_after)
    if outside_named(named, META, after):
        assert not same_content(after, mine_after)  # provably not mine: mine could not have made it


def test_a_normalised_value_is_not_shown_but_stays_inside_the_named_paths() -> None:
    u = upd({"Study": {"DICOM": {"StudyDescription": "CHEST  "}}})
    stored = apply_update(META, {"Study": {"DICOM": {"StudyDescription": "CHEST"}}}, None)
    named = named_changes(u)
    assert not shows(named, stored)
    assert not outside_named(named, META, stored)


def test_another_attribute_changed_is_outside_the_named_paths() -> None:
    u = upd({"Study": {"DICOM": {"StudyDescription": "X"}}})
    theirs = apply_update(META, {"Study": {"DICOM": {"StudyDescription": "X", "AccessionNumber": "9"}}}, None)
    assert outside_named(named_changes(u), META, theirs)


def test_removals_and_whole_series() -> None:
    s = SERIES[0]
    u = upd(removable={"Study": {"DICOM": {"AccessionNumber": ""}, "Series": {s: {}}}})
    after = apply_update(META, None, u.removable)
    named = named_changes(u)
    assert shows(named, after)
    assert not outside_named(named, META, after)
    assert not shows(named, META)


def test_a_uid_change_moves_the_series_and_is_recognised() -> None:
    s = SERIES[0]
    change = {"SeriesInstanceUID": "1.2.3", "SeriesNumber": 9}
    u = upd({"Study": {"Series": {s: {"DICOM": change}}}}, force=True)
    after = apply_update(META, u.updatable, None)
    named = named_changes(u)
    assert shows(named, after)
    assert not outside_named(named, META, after)
    assert not shows(named, META)


def test_strict_equality_is_json_equality() -> None:
    assert strictly_equal(1, 1.0)
    assert not strictly_equal(True, 1)
    assert not strictly_equal("1.1", 1.1)
    assert not strictly_equal(["A"], "A")
    assert strictly_equal({"a": [1, "x"]}, {"a": [1.0, "x"]})
    assert not strictly_equal({"a": 1}, {"a": 1, "b": None})


def test_same_content_ignores_ids_only() -> None:
    other = synthetic_metadata(random.Random(8))
    twin: dict[str, Any] = {**META, "ImageSetID": "x" * 32, "DatastoreID": "y" * 32, "SchemaVersion": "1.1"}
    assert same_content(META, twin)
    assert not same_content(META, other)
