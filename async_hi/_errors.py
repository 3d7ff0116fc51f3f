"""The exception tree, and the one boundary where transport errors are translated.

::

    HealthImagingError
    ├── InvalidUpdateError (also ValueError)   the update breaks a rule; no quota spent
    ├── ServiceError                           the service answered with an error
    │   ├── AccessDeniedError                  403 AccessDeniedException (and front-door auth codes)
    │   ├── BadRequestError                    400 BadRequestException
    │   ├── ConflictError                      409 ConflictException (stale version, LOCKED, DELETED)
    │   ├── InternalServerError                500 InternalServerException (and any 5xx)
    │   ├── NotAcceptableError                 406 NotAcceptableException
    │   ├── ResourceNotFoundError              404 ResourceNotFoundException
    │   ├── ServiceQuotaExceededError          402 ServiceQuotaExceededException
    │   ├── ThrottlingError                    429 ThrottlingException
    │   └── ValidationError                    400 ValidationException
    ├── TransportError                         no answer
    │   ├── ConnectError                       never sent (connect failed or timed out)
    │   └── ResponseLostError                  maybe sent, answer lost (read timeout, dropped connection)
    ├── UpdateError                            an update could not be brought to an end
    │   ├── ImageSetDeletedError               the image set is DELETED
    │   ├── RetriesExhaustedError              the attempt budget ran out (``last_error`` says why)
    │   ├── DeadlineExceededError              the time budget ran out
    │   └── OutcomeUnknownError                a budget ran out while a write's fate was still unknown
    ├── ApplyFailedError (also RuntimeError)   bulk: the update was accepted but ended UPDATE_FAILED
    ├── ManifestError (also ValueError)        bulk: a manifest line is bad (line number, no values)
    ├── JournalError (also RuntimeError)       bulk: the journal cannot be used (locked, corrupt)
    │   ├── JournalMismatchError               the input at a journaled key has changed
    │   └── ReconcileError                     a call in flight at a crash could not be settled
    └── LimiterUnavailableError (also ConnectionError)  the limiter cannot grant a request: stop sending
        └── RedisUnavailableError              the shared limiter cannot reach Redis (fail-closed)

The bulk errors live beside the code that raises them (``_outcomes``, ``_manifest``,
``_journal``, ``_reconcile``, ``_redis_limiter``).

:func:`map_error` is the only place botocore, aiohttp and httpx exceptions are
turned into this tree, and the client raises the result ``from None``: the
original exception (botocore's ``ClientError`` prints the service's message,
which may echo request content) is neither chained nor printed by
``logging.exception()``. Messages carry codes, statuses, operation names, ids
and the service's reason with quoted values redacted (:func:`redact`), never
attribute values; the full message text is kept in ``ServiceError.service_message``.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from async_hi import contract

__all__ = [
    "AccessDeniedError",
    "BadRequestError",
    "ConflictError",
    "ConnectError",
    "DeadlineExceededError",
    "HealthImagingError",
    "ImageSetDeletedError",
    "InternalServerError",
    "LimiterUnavailableError",
    "NotAcceptableError",
    "OutcomeUnknownError",
    "ResourceNotFoundError",
    "ResponseLostError",
    "RetriesExhaustedError",
    "ServiceError",
    "ServiceQuotaExceededError",
    "ThrottlingError",
    "TransportError",
    "UpdateError",
    "ValidationError",
    "error_class",
    "map_error",
    "redact",
]


class HealthImagingError(Exception):
    """Base of every error async-hi raises."""


class ServiceError(HealthImagingError):
    """The service answered with an error.

    Attributes:
        code: the error code (``x-amzn-ErrorType``), e.g. ``"ConflictException"``.
        status: the HTTP status.
        operation: the operation called.
        request_id: the service's request id, if any.
        retry_after: seconds from ``Retry-After`` / ``x-amz-retry-after``, if any.
        service_message: the service's message text, in full (it may echo request content);
            ``str()`` carries it with quoted values redacted (see :func:`redact`).
    """

    def __init__(
        self,
        *,
        code: str,
        status: int,
        operation: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        service_message: str | None = None,
    ) -> None:
        self.code = code
        self.status = status
        self.operation = operation
        self.request_id = request_id
        self.retry_after = retry_after
        self.service_message = service_message
        rid = f", request id {request_id}" if request_id else ""
        reason = f": {redact(service_message)}" if service_message else ""
        super().__init__(f"{operation}: {code} (HTTP {status}{rid}){reason}")


class AccessDeniedError(ServiceError):
    """403: not allowed, or the front door refused the credentials or signature."""


class BadRequestError(ServiceError):
    """400 BadRequestException."""


class ConflictError(ServiceError):
    """409: the version is stale, the image set is LOCKED by an update, or DELETED."""


class InternalServerError(ServiceError):
    """5xx: the service failed; for a write, it may or may not have been applied."""


class NotAcceptableError(ServiceError):
    """406 NotAcceptableException."""


class ResourceNotFoundError(ServiceError):
    """404: no such datastore, image set or version."""


class ServiceQuotaExceededError(ServiceError):
    """402: a service quota (not a rate) is exhausted."""


class ThrottlingError(ServiceError):
    """429: the operation's request rate quota was exceeded."""


class ValidationError(ServiceError):
    """400: the service refused the request as invalid."""


class TransportError(HealthImagingError):
    """No answer from the service.

    Attributes:
        operation: the operation called.
        sent: False when the request certainly never reached the service.
    """

    sent: bool = True

    def __init__(self, operation: str, what: str) -> None:
        self.operation = operation
        super().__init__(f"{operation}: {what}")


class ConnectError(TransportError):
    """The connection could not be made: the request was never sent."""

    sent = False


class ResponseLostError(TransportError):
    """The request may have been sent but no answer came (timeout, dropped connection)."""


class UpdateError(HealthImagingError):
    """An update could not be brought to an end.

    Attributes:
        datastore_id, image_set_id: the target.
        attempts: write attempts made.
        last_error: the last error seen, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        datastore_id: str,
        image_set_id: str,
        attempts: int,
        last_error: BaseException | None = None,
    ) -> None:
        self.datastore_id = datastore_id
        self.image_set_id = image_set_id
        self.attempts = attempts
        self.last_error = last_error
        cause = f"; last error: {last_error}" if last_error is not None else ""
        super().__init__(f"image set {image_set_id}: {message} after {attempts} attempt(s){cause}")


class ImageSetDeletedError(UpdateError):
    """The image set is DELETED; no write can succeed."""


class RetriesExhaustedError(UpdateError):
    """The attempt budget (``RetryPolicy.max_attempts``) ran out."""


class DeadlineExceededError(UpdateError):
    """The time budget (``RetryPolicy.deadline``) ran out."""


class OutcomeUnknownError(UpdateError):
    """A budget ran out while a write might have been applied and could not be checked."""


class LimiterUnavailableError(HealthImagingError, ConnectionError):
    """The rate limiter cannot grant a request (its shared state is unreachable): send nothing more.

    Raised by a limiter's ``acquire`` before anything is sent. ``update_many``
    treats it as the end of the run, not as a failed request: it stops
    sending, leaves every unsent request unsent (resumable as it is) and the
    calls it interrupted open in the journal, and re-raises it on exit.
    """


#: the longest service reason ``str()`` carries; the rest is cut (the full text is on the attribute)
MAX_REASON_CHARS = 300
_QUOTED = re.compile(r"""'[^'\n]*'|"[^"\n]*"|`[^`\n]*`|‘[^’\n]*’|“[^”\n]*”""")


#: unquoted words that look like DICOM values rather than prose: person names (``^``), escapes,
#: ``key=value`` pairs, e-mail-like words, UIDs and other long dotted numbers
_VALUE_LIKE = re.compile(r"[\^\\=@]|^[0-9]+(\.[0-9]+){3,}")


def redact(message: str, *, limit: int = MAX_REASON_CHARS) -> str:
    """A service message fit for ``str()`` and logs: quoted values replaced by ``'…'``, one line, cut short.

    A service may quote what it was sent (``Invalid value 'DOE^JANE' for PatientName``);
    what it says around the quotes is the reason a user needs. Unquoted words
    that look like values (``DOE^JANE``, a UID) are replaced by ``…`` too.
    """
    text = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[-1], message)
    text = " ".join("…" if _VALUE_LIKE.search(word) else word for word in text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_BY_CODE: dict[str, type[ServiceError]] = {
    "AccessDeniedException": AccessDeniedError,
    "BadRequestException": BadRequestError,
    "ConflictException": ConflictError,
    "InternalServerException": InternalServerError,
    "NotAcceptableException": NotAcceptableError,
    "ResourceNotFoundException": ResourceNotFoundError,
    "ServiceQuotaExceededException": ServiceQuotaExceededError,
    "ThrottlingException": ThrottlingError,
    "ValidationException": ValidationError,
}
_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    402: ServiceQuotaExceededError,
    403: AccessDeniedError,
    404: ResourceNotFoundError,
    406: NotAcceptableError,
    409: ConflictError,
    429: ThrottlingError,
}


def error_class(code: str, status: int | None = None) -> type[ServiceError]:
    """The class for a service error ``code`` (falling back on the HTTP ``status``).

    Args:
        code: the error code, e.g. ``"ThrottlingException"``.
        status: the HTTP status, used when the code is not modeled.
    """
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls
    if code in ("Throttling", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded"):
        return ThrottlingError
    if status is None:
        try:
            status = contract.error_status(code)
        except KeyError:
            return ServiceError
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, ServiceError)


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The server's retry hint in seconds.

    ``x-amz-retry-after`` is read as milliseconds, ``Retry-After`` as seconds or an HTTP date.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    amz = lower.get("x-amz-retry-after")
    if amz is not None:
        try:
            return max(0.0, float(amz) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_NOT_SENT = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)
_LOST = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.HTTPClientError,
)


def map_error(exc: BaseException, operation: str) -> HealthImagingError | None:
    """Translate a botocore/aiohttp/httpx exception into the tree; None if it is not one of them.

    Args:
        exc: the exception raised by the aiobotocore call.
        operation: the operation that was called.
    """
    if isinstance(exc, HealthImagingError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Mapping[str, Any] = exc.response or {}
        err = response.get("Error", {}) or {}
        meta = response.get("ResponseMetadata", {}) or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(err.get("Code") or status or "Unknown")
        headers = meta.get("HTTPHeaders", {}) or {}
        cls = error_class(code, status or None)
        return cls(
            code=code,
            status=status,
            operation=operation,
            request_id=meta.get("RequestId") or headers.get("x-amzn-requestid"),
            retry_after=retry_after_seconds(headers),
            service_message=err.get("Message"),
        )
    if isinstance(exc, _NOT_SENT):
        return ConnectError(operation, f"could not connect ({type(exc).__name__})")
    if isinstance(exc, _LOST):
        return ResponseLostError(operation, f"no answer ({type(exc).__name__})")
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ResponseLostError(operation, f"no answer ({type(exc).__name__})")
    return None
