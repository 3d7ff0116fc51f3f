"""What ``update_many`` reports: one :class:`Outcome` per request, live :class:`BulkStats`, failure codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from async_hi._errors import HealthImagingError
from async_hi._updates import InvalidUpdateError, MetadataUpdate

__all__ = [
    "DONE_STATUSES",
    "ApplyFailedError",
    "BulkStats",
    "Outcome",
    "OutcomeStatus",
    "is_rejection",
    "reason_code",
]

#: What became of one request. The first four are :data:`~async_hi._results.UpdateOutcome`,
#: the client's own words, copied from the call's result; the rest are the runner's.
OutcomeStatus = Literal[
    "applied",  # written (the call's result says so; a result without ``outcome`` counts as this)
    "already-applied",  # the change is present; this run's write may or may not have made it
    "dropped",  # the rebase function returned None: nothing to do
    "update-failed",  # accepted, but the service could not apply it (UPDATE_FAILED): nothing changed
    "failed",  # the call raised: refused, or a budget ran out with nothing applied (``error``)
    "unknown",  # the call may or may not have been applied (``OutcomeUnknownError`` in ``error``)
    "skipped",  # finished in an earlier run, per the journal (``previous`` says how)
    "cancelled",  # not sent: the run was stopped
]
#: statuses after which nothing is left to do for the request
DONE_STATUSES = frozenset({"applied", "already-applied", "dropped"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one input request.

    ``status`` is one of :data:`OutcomeStatus`. ``result`` is what ``apply``
    returned (shared by the requests of one coalesced call); ``error`` the
    exception of a ``failed``, ``update-failed`` (:class:`ApplyFailedError`) or
    ``unknown`` request; ``previous`` the journal's word for a ``skipped`` one.
    """

    index: int
    request: MetadataUpdate
    status: OutcomeStatus
    result: Any = None
    error: BaseException | None = None
    #: requests carried by the call (1: not coalesced)
    coalesced: int = 1
    previous: str | None = None

    @property
    def ok(self) -> bool:
        """The request's change is in place: applied now (or found present), dropped as nothing
        to do, or skipped as applied by an earlier run."""
        return self.status in DONE_STATUSES or (self.status == "skipped" and self.previous == "applied")


@dataclass(slots=True)
class BulkStats:
    """Live counters of a run (read them for progress displays)."""

    pulled: int = 0
    calls: int = 0
    #: requests written or found present (``applied`` and ``already-applied``)
    applied: int = 0
    dropped: int = 0
    #: requests that failed (``failed`` and ``update-failed``)
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    cancelled: int = 0
    #: calls saved by coalescing
    saved: int = 0
    in_flight: int = 0
    pending: int = 0
    peak_pending: int = 0
    peak_in_flight: int = 0


class ApplyFailedError(HealthImagingError, RuntimeError):
    """The service accepted the update but could not apply it (``UPDATE_FAILED``; nothing changed)."""

    code = "UPDATE_FAILED"

    def __init__(self, result: Any) -> None:
        self.result = result
        version = getattr(result, "latest_version_id", "?")
        # the service's message may echo request content: left out, it stays on .result
        super().__init__(f"the service could not apply the update (version {version} is UPDATE_FAILED)")


def is_rejection(exc: BaseException) -> bool:
    """Whether a failed call surely changed nothing because the request itself was refused.

    Used to split a refused coalesced call into its requests. Recognises
    :class:`InvalidUpdateError` and errors carrying a ``code`` (or botocore's
    ``response["Error"]["Code"]``) of ``ValidationException``.
    """
    if isinstance(exc, InvalidUpdateError):
        return True
    code = getattr(exc, "code", None)
    response = getattr(exc, "response", None)
    if code is None and isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
    return code == "ValidationException"


def reason_code(exc: BaseException | None) -> str:
    """A short, PHI-free name for a failure: the service's error code, else the exception's class."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code.isidentifier() else type(exc).__name__
