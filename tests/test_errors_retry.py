"""The error tree and its one boundary; the retry policy and read retries on a fake clock."""

from __future__ import annotations

import random

import botocore.exceptions
import pytest

import async_hi
from async_hi import (
    ConnectError,
    FakeClock,
    HealthImagingError,
    InternalServerError,
    InvalidUpdateError,
    ResourceNotFoundError,
    ResponseLostError,
    RetryPolicy,
    ServiceError,
    ThrottlingError,
)
from async_hi._errors import error_class, map_error, retry_after_seconds
from async_hi._events import Event, Retrying
from async_hi.contract import error_codes, error_status
from tests.fakes import fast_caller


def client_error(
    code: str, status: int, headers: dict[str, str] | None = None
) -> botocore.exceptions.ClientError:
    response = {
        "Error": {"Code": code, "Message": "secret value DOE^JANE"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}, "RequestId": "rid-1"},
    }
    return botocore.exceptions.ClientError(response, "UpdateImageSetMetadata")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", error_codes())
def test_every_modeled_error_code_has_its_own_class(code: str) -> None:
    cls = error_class(code)
    assert cls is not ServiceError, f"{code} has no class"
    assert cls.__name__ == code.replace("Exception", "Error")
    assert getattr(async_hi, cls.__name__) is cls
    mapped = map_error(client_error(code, error_status(code)), "GetImageSet")
    assert type(mapped) is cls
    assert mapped.status == error_status(code)


def test_the_docstring_tree_names_every_class() -> None:
    doc = async_hi._errors.__doc__ or ""
    for name in async_hi._errors.__all__:
        if name[0].isupper():
            assert name in doc, name


def test_service_message_is_kept_but_not_in_str() -> None:
    err = map_error(client_error("ValidationException", 400), "UpdateImageSetMetadata")
    assert isinstance(err, ServiceError)
    assert err.service_message == "secret value DOE^JANE"
    assert "DOE" not in str(err)
    assert "ValidationException" in str(err)
    assert "rid-1" in str(err)


def test_unmodeled_codes_fall_back_on_status() -> None:
    assert error_class("InvalidSignatureException", 403) is async_hi.AccessDeniedError
    assert error_class("ServiceUnavailable", 503) is InternalServerError
    assert error_class("Whatever", 418) is ServiceError
    assert error_class("TooManyRequestsException", 429) is ThrottlingError


def test_transport_errors_split_into_never_sent_and_maybe_sent() -> None:
    refused = map_error(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), "GetImageSet")
    assert isinstance(refused, ConnectError)
    assert refused.sent is False
    for exc in (
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
        botocore.exceptions.HTTPClientError(error=OSError("reset")),
    ):
        lost = map_error(exc, "UpdateImageSetMetadata")
        assert isinstance(lost, ResponseLostError)
        assert lost.sent is True
    assert map_error(KeyError("x"), "GetImageSet") is None


def test_invalid_update_error_is_in_the_tree_and_a_value_error() -> None:
    assert issubclass(InvalidUpdateError, HealthImagingError)
    assert issubclass(InvalidUpdateError, ValueError)


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"x-amz-retry-after": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=4.0) == 6.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    err = map_error(client_error("ThrottlingException", 429, {"retry-after": "2"}), "UpdateImageSetMetadata")
    assert isinstance(err, ThrottlingError)
    assert err.retry_after == 2.0


def test_full_jitter_backoff_stays_within_its_ceiling_and_spreads() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(1)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (30, 8.0)]:
        delays = [policy.backoff(retry, rng) for _ in range(500)]
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling
        assert min(delays) < 0.2 * ceiling
    polls = [policy.poll_delay(1, rng) for _ in range(100)]
    assert all(0.05 <= p <= 0.1 for p in polls)


@pytest.mark.parametrize(("field", "value"), [("max_attempts", 0), ("deadline", 0), ("max_conflicts", -1)])
def test_retry_policy_validation_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_reads_are_retried_on_5xx_and_transport_errors_then_succeed() -> None:
    clock = FakeClock()
    events: list[Event] = []
    caller = fast_caller(clock, events=events)
    failures: list[Exception] = [
        InternalServerError(code="InternalServerException", status=500, operation="GetImageSet"),
        ResponseLostError("GetImageSet", "no answer"),
        ThrottlingError(code="ThrottlingException", status=429, operation="GetImageSet"),
    ]

    async def fn() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    async with clock.autojump():
        assert await caller.with_retries("GetImageSet", None, fn) == "ok"
    assert [e.reason for e in events if isinstance(e, Retrying)] == [
        "InternalServerException",
        "ResponseLostError",
        "ThrottlingException",
    ]
    stats = caller.recorder.snapshot({})["GetImageSet"]
    assert (stats.calls, stats.successes, stats.server_errors, stats.transport_errors, stats.throttles) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert stats.retries == 3


@pytest.mark.anyio
async def test_reads_are_not_retried_on_404_and_stop_at_the_attempt_bound() -> None:
    clock = FakeClock()
    caller = fast_caller(clock, policy=RetryPolicy(max_attempts=3))
    calls = 0

    async def missing() -> None:
        nonlocal calls
        calls += 1
        raise ResourceNotFoundError(code="ResourceNotFoundException", status=404, operation="GetImageSet")

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise InternalServerError(code="InternalServerException", status=500, operation="GetImageSet")

    async with clock.autojump():
        with pytest.raises(ResourceNotFoundError):
            await caller.with_retries("GetImageSet", None, missing)
        assert calls == 1
        with pytest.raises(InternalServerError):
            await caller.with_retries("GetImageSet", None, broken)
    assert calls == 4


@pytest.mark.anyio
async def test_a_failing_event_hook_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    from async_hi._events import Recorder, RequestFinished

    def boom(event: Event) -> None:
        raise RuntimeError("hook")

    rec = Recorder(boom)
    rec.emit(RequestFinished("GetImageSet", None, "ok", 200, 0.1))
    assert rec.snapshot({})["GetImageSet"].calls == 1
    assert "on_event hook raised" in caplog.text


@pytest.mark.parametrize(
    ("message", "kept", "gone"),
    [
        ("Invalid value 'DOE^JANE' for PatientName", "Invalid value '…' for PatientName", "DOE"),
        ('StudyDescription "CHEST  " exceeds 64', 'StudyDescription "…" exceeds 64', "CHEST"),
        ("unknown series 1.2.840.113619.2.55.3 in image set", "unknown series … in image set", "113619"),
        ("name DOE^JANE is not valid", "name … is not valid", "JANE"),
        ("x" * 1000, "xxx…", "x" * 300),
    ],
)
def test_redact_keeps_the_reason_and_drops_what_looks_like_a_value(
    message: str, kept: str, gone: str
) -> None:
    from async_hi._errors import redact

    out = redact(message)
    assert kept in out
    assert gone not in out
    assert len(out) <= 300
