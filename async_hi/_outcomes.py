"""What ``update_many`` reports: one :class:`Outcome` per request, live :class:`BulkStats`, failure codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from async_hi._errors import HealthImagingError
from async_hi._updates import InvalidUpdateError, MetadataUpdate

__all__ = ["ApplyFailedError", "BulkStats", "Outcome", "OutcomeStatus", "is_rejection", "reason_code"]

OutcomeStatus = Literal["applied", "failed", "skipped", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one input request.

    ``status``: ``applied`` (``result`` is what ``apply`` returned, shared by
    the requests of one coalesced call), ``failed`` (``error``), ``skipped``
    (finished in an earlier run, per the journal; ``previous`` says how) or
    ``cancelled`` (not sent: the run was stopped).
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
        """The request's change is in place: applied now, or skipped as applied by an earlier run."""
        return self.status in ("applied", "skipped") and self.previous != "failed"


@dataclass(slots=True)
class BulkStats:
    """Live counters of a run (read them for progress displays)."""

    pulled: int = 0
    calls: int = 0
    applied: int = 0
    failed: int = 0
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
