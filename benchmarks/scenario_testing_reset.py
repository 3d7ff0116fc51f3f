"""Testing reset: what the ``hi_emulator`` fixture costs per test (async_hi.testing, issue #17).

The fixture keeps one emulator per session and resets it before each test
(``EmulatorHarness.reset``: no data, an empty call log, the session's
configuration). Each round first leaves behind what a test would: image sets
seeded and written, knobs turned (quotas, faults, the LOCKED window, value
recording), a conflict pending, and a call log filled by real boto3 requests
over HTTP; then times ``reset()`` alone, called from the test's thread as the
fixture calls it. A second row leaves a big test behind (500 image sets and
20,000 logged calls, the calls appended to the log directly). The baseline is
what function scope costs instead: starting and stopping a fresh emulator per
test. Target: a reset under 10 ms at the 95th percentile.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from botocore.exceptions import ClientError

from async_hi import Quota
from async_hi.emulator import FaultConfig
from async_hi.emulator._app import RequestRecord
from async_hi.testing import EmulatorHarness
from benchmarks._common import Mode, Row, median, percentile, pick, progress

NAME = "testing-reset"
TITLE = "Testing: the hi_emulator fixture's per-test reset"
TARGET_MS = 10.0


def _leave_a_test_behind(emu: EmulatorHarness, client: Any, requests: int) -> None:
    seeded = emu.seed(5, same_study=True)
    d, ids = seeded.datastore_id, seeded.image_set_ids
    emu.update(ids[0], updatable={"Study": {"DICOM": {"StudyDescription": "LEFT OVER"}}})
    emu.configure(
        quotas={"UpdateImageSetMetadata": Quota(rate=1.0, burst=1)},
        faults=FaultConfig(seed=1, slow_rate=0.0, error_rate=0.01),
        lock_seconds=2.0,
        record_values=True,
    )
    emu.concurrent_update(ids[1], updatable={"Study": {"DICOM": {"AccessionNumber": "X"}}})
    for k in range(requests):
        with contextlib.suppress(ClientError):  # an injected 500 is part of a test's leftovers too
            client.get_image_set(datastoreId=d, imageSetId=ids[k % len(ids)])


def _leave_a_big_test_behind(emu: EmulatorHarness, image_sets: int, calls: int) -> None:
    seeded = emu.seed(image_sets)
    record = RequestRecord(time.monotonic(), "GetImageSet", 200, None, seeded.image_set_ids[0], "r")
    emu.call(lambda: emu.emulator.state.requests.extend([record] * calls))
    emu.configure(quotas={"UpdateImageSetMetadata": Quota(rate=1.0, burst=1)}, lock_seconds=2.0)


def _time_reset(emu: EmulatorHarness) -> float:
    t0 = time.perf_counter()
    emu.reset()
    return (time.perf_counter() - t0) * 1000.0


def _check_clean(emu: EmulatorHarness) -> None:
    # the reset is only worth timing if it did its work
    left = (
        emu.calls(),
        emu.config.quotas,
        emu.config.lock_seconds,
        emu.call(lambda: len(emu.emulator.store.datastores)),
    )
    if left != (0, None, 0.05, 0):
        raise RuntimeError(f"the reset left calls, quotas, lock_seconds, datastores behind: {left}")


def _fresh_emulator_ms() -> float:
    t0 = time.perf_counter()
    with EmulatorHarness():
        pass
    return (time.perf_counter() - t0) * 1000.0


def _row(client: str, times: list[float], baseline: float, figures: dict[str, Any]) -> Row:
    p95 = percentile(times, 95)
    return Row(
        scenario=NAME,
        client=client,
        ratio=median(times) / baseline,
        ratio_of="time / fresh emulator per test",
        target=f"p95 < {TARGET_MS:g} ms",
        met=p95 < TARGET_MS,
        figures={
            "rounds": len(times),
            "median ms": median(times),
            "p95 ms": p95,
            "max ms": max(times),
            **figures,
        },
    )


def run(mode: Mode) -> list[Row]:
    rounds = pick(mode, 5, 100, 1000)
    big_rounds = pick(mode, 2, 10, 30)
    fresh_rounds = pick(mode, 2, 10, 30)
    requests = pick(mode, 5, 10, 20)

    fresh = [_fresh_emulator_ms() for _ in range(fresh_rounds)]
    baseline = median(fresh)
    progress(f"  {NAME}: fresh emulator per test, median {baseline:.1f} ms")

    typical: list[float] = []
    big: list[float] = []
    with EmulatorHarness() as emu:
        client = emu.boto3_client(retries={"total_max_attempts": 1})
        for _ in range(rounds):
            _leave_a_test_behind(emu, client, requests)
            typical.append(_time_reset(emu))
            _check_clean(emu)
        for _ in range(big_rounds):
            _leave_a_big_test_behind(emu, 500, 20_000)
            big.append(_time_reset(emu))
            _check_clean(emu)
    progress(f"  {NAME}: reset median {median(typical):.3f} ms, big {median(big):.3f} ms")
    return [
        Row(
            scenario=NAME,
            client="fresh emulator per test (function scope)",
            figures={"rounds": len(fresh), "median ms": baseline, "max ms": max(fresh)},
        ),
        _row("reset (session scope), a typical test left behind", typical, baseline, {"requests": requests}),
        Row(
            scenario=NAME,
            client="reset (session scope), 500 image sets + 20k calls left behind",
            ratio=median(big) / baseline,
            ratio_of="time / fresh emulator per test",
            figures={"rounds": len(big), "median ms": median(big), "p95 ms": percentile(big, 95)},
            note="no target: a test this big is rare; freeing its objects is most of the time",
        ),
    ]
