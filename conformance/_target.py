"""Where the suite runs: an endpoint, credentials, the image set, and how carefully.

A :class:`Target` names an endpoint and the image set to test on; a
:class:`Settings` says how (time bounds, examples, expected-status
overrides). :func:`emulator_target` starts our emulator in-process, seeds an
image set, and yields a target for it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from async_hi import contract
from conformance._http import Credentials

__all__ = ["Settings", "Target", "emulator_target", "parse_expectation"]

_ID = "[0-9a-z]{32}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The endpoint under test and the image set the checks use.

    Args:
        endpoint_url: ``http(s)://host[:port]`` of the HealthImaging runtime endpoint.
        credentials: what requests are signed with.
        datastore_id: the datastore holding the image set.
        image_set_id: the image set the checks read and (with writes) change.
        allow_writes: accepted updates are allowed; the image set is reverted
            to the version found at the start when the run ends.
        emulator: the target is our in-process emulator (for the report).
    """

    endpoint_url: str
    credentials: Credentials
    datastore_id: str
    image_set_id: str
    allow_writes: bool = False
    emulator: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Target.endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"Target.endpoint_url must have no path or query, got {self.endpoint_url!r}")
        for name in ("datastore_id", "image_set_id"):
            if not contract.matches(_ID, getattr(self, name)):
                raise ValueError(f"Target.{name} must be 32 characters of [0-9a-z]")

    def describe(self) -> str:
        """One line naming the datastore, the image set and whether writes are allowed."""
        mode = "writes allowed" if self.allow_writes else "read-only"
        kind = "emulator, " if self.emulator else ""
        return f"{kind}datastore {self.datastore_id}, image set {self.image_set_id} ({mode})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How the suite runs.

    The bounds keep a run against a broken endpoint short: one settle wait
    that runs out ends the write phase; a few requests without an answer end
    the run; 429 waits are capped and share one budget.

    Args:
        request_timeout: seconds to wait for any one whole answer (then: no response).
        time_bound: RB09's bound: every answer within this many seconds.
        settle_timeout: how long an accepted update may stay LOCKED/UPDATING
            (the first wait that runs out ends the write phase).
        examples: generated requests of the property-based check RB08.
        seed: random seed of the generated requests (None: random).
        writers: parallel updates OC03 sends.
        expect: check id -> the statuses to expect instead of the checklist's.
        max_failures: violations kept per check (the rest are counted).
        max_no_answers: requests without an answer after which the endpoint
            counts as stopped and the run ends.
        max_retry_after: the longest wait honoured for one 429 (its
            ``Retry-After`` is capped to this).
        throttle_budget: seconds of 429 waits the whole run may spend; after
            that a 429 is not retried.
    """

    request_timeout: float = 10.0
    time_bound: float = 5.0
    settle_timeout: float = 30.0
    examples: int = 40
    seed: int | None = 0
    writers: int = 4
    expect: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_failures: int = 5
    max_no_answers: int = 3
    max_retry_after: float = 5.0
    throttle_budget: float = 30.0

    def __post_init__(self) -> None:
        if self.max_no_answers < 1:
            raise ValueError(f"Settings.max_no_answers must be >= 1, got {self.max_no_answers!r}")
        for name in ("request_timeout", "time_bound", "settle_timeout", "max_retry_after", "throttle_budget"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Settings.{name} must be > 0, got {getattr(self, name)!r}")
        if self.examples < 0:
            raise ValueError(f"Settings.examples must be >= 0, got {self.examples!r}")
        if self.writers < 2:
            raise ValueError(f"Settings.writers must be >= 2, got {self.writers!r}")
        if self.max_failures < 1:
            raise ValueError(f"Settings.max_failures must be >= 1, got {self.max_failures!r}")
        for cid, statuses in self.expect.items():
            if not re.fullmatch(r"[A-Z]{2}[0-9]{2}", cid):
                raise ValueError(f"Settings.expect: {cid!r} is not a check id")
            if not statuses or any(not 100 <= s <= 599 for s in statuses):
                raise ValueError(f"Settings.expect[{cid!r}] must be HTTP statuses, got {statuses!r}")


def parse_expectation(text: str) -> tuple[str, tuple[int, ...]]:
    """``RV01=404`` or ``RV04=400,422`` -> ``("RV01", (404,))``.

    Raises:
        ValueError: not ``ID=STATUS[,STATUS...]``.
    """
    cid, sep, spec = text.partition("=")
    cid = cid.strip().upper()
    try:
        statuses = tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        statuses = ()
    if not sep or not re.fullmatch(r"[A-Z]{2}[0-9]{2}", cid) or not statuses:
        raise ValueError(f"expected CHECK=STATUS[,STATUS...] (for example RV01=404), got {text!r}")
    if any(not 100 <= s <= 599 for s in statuses):
        raise ValueError(f"statuses must be within 100..599, got {text!r}")
    return cid, statuses


@asynccontextmanager
async def emulator_target(*, lock_seconds: float = 0.2) -> AsyncIterator[Target]:
    """Start our emulator in-process (quotas off), seed one image set, yield a writable target for it.

    Args:
        lock_seconds: the emulator's LOCKED window after each accepted update.
    """
    from async_hi.emulator import Emulator

    async with Emulator(lock_seconds=lock_seconds, quotas=None) as emu:
        seeded = emu.seed(1)
        yield Target(
            endpoint_url=emu.endpoint_url,
            credentials=Credentials(
                access_key_id=emu.access_key_id, secret_access_key=emu.secret_access_key, region=emu.region
            ),
            datastore_id=seeded.datastore_id,
            image_set_id=seeded.image_set_ids[0],
            allow_writes=True,
            emulator=True,
        )
