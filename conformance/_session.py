"""The state one run shares across its checks, and the small types checks exchange.

:class:`Abort` ends a check that cannot go on (its message becomes the
failure); :class:`Skip` ends one that does not apply to the target.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from async_hi.levels import Level, level_of
from conformance._http import Exchange
from conformance._pacing import Pacer
from conformance._results import Failure
from conformance._target import Settings, Target
from conformance._validate import Problem, validate_response

__all__ = [
    "CONFLICT",
    "HARMLESS_ATTRIBUTE",
    "MALFORMED",
    "NOT_FOUND",
    "SETTLING",
    "VALIDATION",
    "Abort",
    "FirstWrite",
    "Session",
    "Skip",
    "Snapshot",
    "blob",
    "digest",
]

VALIDATION: tuple[str, ...] = ("ValidationException",)
MALFORMED: tuple[str, ...] = ("ValidationException", "SerializationException")
NOT_FOUND: tuple[str, ...] = ("ResourceNotFoundException",)
CONFLICT: tuple[str, ...] = ("ConflictException",)

#: The attribute the suite's writes touch: study level, free text, no meaning to a viewer.
HARMLESS_ATTRIBUTE = "StudyDescription"
if level_of(HARMLESS_ATTRIBUTE) is not Level.STUDY:  # pragma: no cover - guards the level table
    raise RuntimeError(f"{HARMLESS_ATTRIBUTE} is no longer a study-level attribute in levels.py")

SETTLING = ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY")


class Abort(Exception):
    """The check cannot go on; ``message`` says why (it is recorded as a failure)."""

    def __init__(self, message: str, exchange: Exchange | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exchange = exchange


class Skip(Exception):
    """The check does not apply to this target."""


def blob(doc: Any) -> str:
    """A restJson1 blob: the document's JSON bytes in base64."""
    raw = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode("ascii")


def digest(doc: Any) -> str:
    """A digest of a metadata document, to compare versions without holding or printing values."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The image set as GetImageSet reported it (``body``: the whole answer, for timestamps)."""

    version: str
    state: str
    workflow: str
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FirstWrite:
    """The run's first accepted update (SR, VS01, OC05 examine it)."""

    before: Snapshot
    before_digest: str
    exchange: Exchange
    marker: str


class Session:
    """State shared by every check of one run."""

    def __init__(self, target: Target, settings: Settings, http: httpx.AsyncClient, pacer: Pacer) -> None:
        self.target = target
        self.settings = settings
        self.http = http
        self.pacer = pacer
        self.exchanges: list[Exchange] = []
        #: set when the endpoint cannot be reached, or stopped answering: nothing more is sent
        self.unreachable: str | None = None
        self.preflight: str | None = None
        self.found: Snapshot | None = None
        self.found_digest: str | None = None
        #: set by the first settle wait that ran out: the write phase is over, and why
        self.stalled: str | None = None
        self.no_answers = 0
        self.throttle_waited = 0.0
        #: the image set as last verified (version, metadata digest), for "a refused write changes nothing"
        self.ledger: tuple[str, str] | None = None
        self.verify_refusals = False
        self.refusal_failures: list[Failure] = []
        self.refusals_verified = 0
        #: every version the run's accepted updates created (from their answers)
        self.created_versions: list[str] = []
        #: GetImageSet version=N of those versions, read once (VS09, VS10)
        self.version_reads: dict[str, Snapshot] = {}
        self.first_write: FirstWrite | Abort | None = None
        self.provoked_errors = False
        self.throttles = 0
        self._markers = 0
        self._judged: dict[int, list[Problem]] = {}

    def problems(self, exchange: Exchange) -> list[Problem]:
        """The shared validators' verdict on one exchange (computed once; none without an answer)."""
        key = id(exchange)
        if key not in self._judged:
            response = exchange.wire_response()
            self._judged[key] = [] if response is None else validate_response(exchange.probe.wire(), response)
        return self._judged[key]

    def next_marker(self) -> str:
        self._markers += 1
        return f"ASYNC-HI CONFORMANCE {int(time.time())} {self._markers}"
