"""The fault soak, shared by the benchmark scenario and ``tests/test_fault_soak.py``.

Updates go round-robin over a set of image sets (several per image set, each
with a unique StudyDescription) while the emulator injects 500s, 429s,
dropped connections and "applied but the response lost". Afterwards every
image set's version history (the emulator's ground truth) is checked:

- each request reported applied names the version that carries it; that
  version must equal the previous version with the request's change (with the
  other requests of a coalesced call, in input order) applied: else **lost**;
- every version after the first must be claimed by exactly one call: an
  unclaimed version is a write applied twice (or by nobody we know): **duplicated**;
- a request reported failed is a **failure** (nothing silently lost, but not
  applied either).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from async_hi import MetadataUpdate, UpdateBuilder
from async_hi.document import apply_update
from benchmarks._ours import Done

#: the issue's fault mix, per request
FAULTS: dict[str, float] = {
    "error_rate": 0.05,
    "throttle_rate": 0.05,
    "drop_rate": 0.02,
    "lost_response_rate": 0.02,
}
#: the same as ``async-hi emulator`` arguments
FAULT_ARGS = ["--fault-500", "0.05", "--fault-429", "0.05", "--fault-drop", "0.02", "--fault-lost", "0.02"]

_IGNORED = ("DatastoreID", "ImageSetID", "SchemaVersion")

#: (datastore_id, image_set_id) -> the versions, oldest first, each with "versionId" and "metadata"
History = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


def soak_updates(datastore_id: str, image_set_ids: Sequence[str], per_set: int) -> list[MetadataUpdate]:
    """``per_set`` updates for each image set, interleaved, each with a unique value."""
    out = []
    for r in range(per_set):
        for s, i in enumerate(image_set_ids):
            out.append(UpdateBuilder(datastore_id, i).study(StudyDescription=f"SOAK {s} {r}").build())
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    requests: int
    exactly_once: int
    lost: int
    duplicated: int
    failures: int
    versions: int

    @property
    def ok(self) -> bool:
        return self.exactly_once == self.requests and not (self.lost or self.duplicated or self.failures)


def _norm(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _IGNORED}


async def _settled(history: History, d: str, i: str) -> list[dict[str, Any]]:
    """The history once its latest version is applied (until then it shows the content it replaces)."""
    for _ in range(500):
        hist = await history(d, i)
        if not str(hist[-1].get("workflowStatus", "")).startswith("UPDATING"):
            return hist
        await anyio.sleep(0.01)
    return hist


async def verify(updates: Sequence[MetadataUpdate], done: Sequence[Done], history: History) -> Verdict:
    """Check every request against the version histories (see the module docstring)."""
    by_set: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, u in enumerate(updates):
        by_set[(u.datastore_id, u.image_set_id)].append(k)
    lost = duplicated = versions = exactly_once = 0
    failures = sum(not d.ok for d in done)
    for (d, i), keys in by_set.items():
        hist = await _settled(history, d, i)
        versions += len(hist) - 1
        claims: dict[str, list[int]] = defaultdict(list)
        for k in keys:
            if done[k].ok:
                claims[str(getattr(done[k].result, "latest_version_id", ""))].append(k)
        by_version = {str(v["versionId"]): n for n, v in enumerate(hist)}
        for version, group in claims.items():
            n = by_version.get(version)
            # two separate calls claiming one version: one of them was not applied
            if n is None or n == 0 or any(done[k].coalesced != len(group) for k in group):
                lost += len(group)
                continue
            expected: Mapping[str, Any] = hist[n - 1]["metadata"]
            for k in sorted(group):
                expected = apply_update(expected, updates[k].updatable, updates[k].removable)
            if _norm(expected) == _norm(hist[n]["metadata"]):
                exactly_once += len(group)
            else:
                lost += len(group)
        duplicated += sum(1 for v in hist[1:] if str(v["versionId"]) not in claims)
    return Verdict(len(updates), exactly_once, lost, duplicated, failures, versions)
