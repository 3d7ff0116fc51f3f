"""async-hi: an asynchronous SDK for AWS HealthImaging metadata updates.

The public surface is re-exported here; everything else lives in private
``_modules`` and may change.
"""

from async_hi._client import HealthImagingClient
from async_hi._clock import Clock, FakeClock, SystemClock
from async_hi._conflict import Rebase
from async_hi._errors import (
    AccessDeniedError,
    BadRequestError,
    ConflictError,
    ConnectError,
    DeadlineExceededError,
    HealthImagingError,
    ImageSetDeletedError,
    InternalServerError,
    NotAcceptableError,
    OutcomeUnknownError,
    ResourceNotFoundError,
    ResponseLostError,
    RetriesExhaustedError,
    ServiceError,
    ServiceQuotaExceededError,
    ThrottlingError,
    TransportError,
    UpdateError,
    ValidationError,
)
from async_hi._events import (
    Event,
    EventHook,
    OperationStats,
    RateChanged,
    RequestFinished,
    Retrying,
    UpdateFinished,
    Waiting,
)
from async_hi._limiter import LimiterConfig, RateLimiter, TokenBucketLimiter
from async_hi._results import ImageSetInfo, UpdateResult, VersionInfo
from async_hi._retry import RetryPolicy
from async_hi._updates import MAX_BLOB_BYTES, InvalidUpdateError, MetadataUpdate, UpdateBuilder
from async_hi.contract import DEFAULT_QUOTAS, Quota

__all__ = [
    "DEFAULT_QUOTAS",
    "MAX_BLOB_BYTES",
    "AccessDeniedError",
    "BadRequestError",
    "Clock",
    "ConflictError",
    "ConnectError",
    "DeadlineExceededError",
    "Event",
    "EventHook",
    "FakeClock",
    "HealthImagingClient",
    "HealthImagingError",
    "ImageSetDeletedError",
    "ImageSetInfo",
    "InternalServerError",
    "InvalidUpdateError",
    "LimiterConfig",
    "MetadataUpdate",
    "NotAcceptableError",
    "OperationStats",
    "OutcomeUnknownError",
    "Quota",
    "RateChanged",
    "RateLimiter",
    "Rebase",
    "RequestFinished",
    "ResourceNotFoundError",
    "ResponseLostError",
    "RetriesExhaustedError",
    "RetryPolicy",
    "Retrying",
    "ServiceError",
    "ServiceQuotaExceededError",
    "SystemClock",
    "ThrottlingError",
    "TokenBucketLimiter",
    "TransportError",
    "UpdateBuilder",
    "UpdateError",
    "UpdateFinished",
    "UpdateResult",
    "ValidationError",
    "VersionInfo",
    "Waiting",
]
