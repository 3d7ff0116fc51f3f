"""async-hi: an asynchronous SDK for AWS HealthImaging metadata updates.

The public surface is re-exported here; everything else lives in private
``_modules`` and may change.
"""

from typing import TYPE_CHECKING, Any

from async_hi._bulk import ApplyFailedError, BulkRun, BulkStats, Outcome, update_many
from async_hi._client import HealthImagingClient
from async_hi._clock import Clock, FakeClock, SystemClock
from async_hi._coalesce import merge_updates
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
    RequestStarted,
    Retrying,
    UpdateFinished,
    UpdateStarted,
    Waiting,
)
from async_hi._journal import Journal, JournalError, JournalMismatchError
from async_hi._limiter import LimiterConfig, RateLimiter, TokenBucketLimiter
from async_hi._manifest import ManifestEntry, ManifestError, read_csv, read_jsonl, read_manifest
from async_hi._reconcile import ClientVersionReader, ReconcileError, VersionReader, reconcile
from async_hi._results import ImageSetInfo, UpdateResult, VersionInfo
from async_hi._retry import RetryPolicy
from async_hi._updates import MAX_BLOB_BYTES, InvalidUpdateError, MetadataUpdate, UpdateBuilder
from async_hi.contract import DEFAULT_QUOTAS, Quota

if TYPE_CHECKING:
    from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig, RedisUnavailableError

_LAZY = {"RedisLimiter", "RedisLimiterConfig", "RedisUnavailableError"}


def __getattr__(name: str) -> Any:
    # the Redis limiter needs the optional ``redis`` package: import it only when asked for
    if name in _LAZY:
        from async_hi import _redis_limiter

        return getattr(_redis_limiter, name)
    raise AttributeError(f"module 'async_hi' has no attribute {name!r}")


__all__ = [
    "DEFAULT_QUOTAS",
    "MAX_BLOB_BYTES",
    "AccessDeniedError",
    "ApplyFailedError",
    "BadRequestError",
    "BulkRun",
    "BulkStats",
    "ClientVersionReader",
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
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "LimiterConfig",
    "ManifestEntry",
    "ManifestError",
    "MetadataUpdate",
    "NotAcceptableError",
    "OperationStats",
    "Outcome",
    "OutcomeUnknownError",
    "Quota",
    "RateChanged",
    "RateLimiter",
    "Rebase",
    "ReconcileError",
    "RedisLimiter",
    "RedisLimiterConfig",
    "RedisUnavailableError",
    "RequestFinished",
    "RequestStarted",
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
    "UpdateStarted",
    "ValidationError",
    "VersionInfo",
    "VersionReader",
    "Waiting",
    "merge_updates",
    "read_csv",
    "read_jsonl",
    "read_manifest",
    "reconcile",
    "update_many",
]
