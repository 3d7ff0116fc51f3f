"""The public surface is exactly this, sorted, and every name is importable."""

from __future__ import annotations

import dataclasses

import async_hi

EXPECTED = [
    "AccessDeniedError",
    "BadRequestError",
    "Clock",
    "ConflictError",
    "ConnectError",
    "DEFAULT_QUOTAS",
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
    "MAX_BLOB_BYTES",
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


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted() -> None:
    assert async_hi.__all__ == sorted(async_hi.__all__, key=_isort_key)


def test_client_surface_is_pinned() -> None:
    # other parts of the SDK add names; these are the client's and must stay
    missing = sorted(set(EXPECTED) - set(async_hi.__all__))
    assert missing == []


def test_every_name_is_importable_and_public_classes_live_in_private_modules() -> None:
    for name in async_hi.__all__:
        obj = getattr(async_hi, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith(("async_hi._", "async_hi.contract")), name


def test_events_and_results_are_frozen_slotted_dataclasses() -> None:
    for cls in (
        async_hi.RequestStarted,
        async_hi.UpdateStarted,
        async_hi.RequestFinished,
        async_hi.Retrying,
        async_hi.Waiting,
        async_hi.RateChanged,
        async_hi.UpdateFinished,
        async_hi.OperationStats,
        async_hi.UpdateResult,
        async_hi.ImageSetInfo,
        async_hi.VersionInfo,
    ):
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert hasattr(cls, "__slots__"), cls
