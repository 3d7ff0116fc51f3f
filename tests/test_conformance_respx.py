"""Non-conformant answers fed through respx: the right check fails, with a message that says why."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from conformance import Credentials, NoPacing, Outcome, Report, Settings, Target, run_conformance

pytestmark = pytest.mark.anyio

URL = "https://hi.test"
DS, IS = "d" * 32, "e" * 32
Handler = Callable[[httpx.Request], httpx.Response]


def ok_update(request: httpx.Request) -> httpx.Response:
    now = time.time()
    body = {
        "datastoreId": DS,
        "imageSetId": IS,
        "latestVersionId": "2",
        "imageSetState": "LOCKED",
        "imageSetWorkflowStatus": "UPDATING",
        "createdAt": now,
        "updatedAt": now,
    }
    return httpx.Response(200, json=body, headers={"x-amzn-RequestId": "r-ok"})


def validation(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        400,
        json={"message": "bad input"},
        headers={"x-amzn-ErrorType": "ValidationException", "x-amzn-RequestId": f"r-{time.monotonic_ns()}"},
    )


class FakeHI:
    """A respx-mocked endpoint: GetImageSet/GetImageSetMetadata answer properly, updates via ``update``."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.update: Handler = validation
        self.requests: list[httpx.Request] = []
        base = rf"{re.escape(URL)}/datastore/[^/]+/imageSet/[^/]+"
        router.post(url__regex=base + r"/getImageSet").mock(side_effect=self._get)
        router.post(url__regex=base + r"/getImageSetMetadata").mock(side_effect=self._metadata)
        router.route(url__regex=base + r"/updateImageSetMetadata.*").mock(side_effect=self._update)

    def _get(self, request: httpx.Request) -> httpx.Response:
        body = {
            "datastoreId": DS,
            "imageSetId": IS,
            "versionId": "1",
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": "CREATED",
        }
        return httpx.Response(200, json=body, headers={"x-amzn-RequestId": f"g-{time.monotonic_ns()}"})

    def _metadata(self, request: httpx.Request) -> httpx.Response:
        doc = gzip.compress(json.dumps({"SchemaVersion": "1.1", "Study": {"DICOM": {}}}).encode())
        return httpx.Response(
            200,
            content=doc,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "x-amzn-RequestId": "m"},
        )

    def _update(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.update(request)


@pytest.fixture
def hi() -> Iterator[FakeHI]:
    with respx.mock(assert_all_called=False) as router:
        yield FakeHI(router)


def _target(allow_writes: bool = True) -> Target:
    creds = Credentials(access_key_id="AKIAFAKE", secret_access_key="secret", region="us-east-1")
    return Target(
        endpoint_url=URL, credentials=creds, datastore_id=DS, image_set_id=IS, allow_writes=allow_writes
    )


async def _run(*select: str, settings: Settings | None = None, allow_writes: bool = True) -> Report:
    return await run_conformance(
        _target(allow_writes), select=select, pacer=NoPacing(), settings=settings or Settings(examples=5)
    )


async def test_string_timestamps_fail_sr04_naming_the_member(hi: FakeHI) -> None:
    def update(request: httpx.Request) -> httpx.Response:
        body = json.loads(ok_update(request).content)
        body["createdAt"] = "2024-05-01T10:00:00Z"
        return httpx.Response(200, json=body, headers={"x-amzn-RequestId": "r"})

    hi.update = update
    report = await _run("SR04", "SR08")
    sr04 = report.result("SR04")
    assert sr04.outcome is Outcome.FAIL
    assert "createdAt: string, not a JSON number of epoch seconds" in sr04.message
    assert sr04.failures[0].curl
    assert "Signature=****" in sr04.failures[0].curl
    assert report.result("SR08").outcome is Outcome.FAIL
    assert "strict parse" in report.result("SR08").message


async def test_error_without_a_code_fails_er02_and_the_expectation(hi: FakeHI) -> None:
    hi.update = lambda r: httpx.Response(400, json={"message": "nope"}, headers={"x-amzn-RequestId": "x"})
    report = await _run("RV03", "ER02", "ER05")
    assert (
        report.result("RV03").message
        == "no latestVersion: status 400 but error code (none), expected ValidationException"
    )
    er02 = report.result("ER02")
    assert er02.outcome is Outcome.FAIL
    assert "400 without an error code (no x-amzn-ErrorType, code or __type)" in er02.message
    assert "not a modeled error" in report.result("ER05").message


async def test_accepting_a_stale_version_fails_oc01(hi: FakeHI) -> None:
    hi.update = ok_update
    oc01 = (await _run("OC01")).result("OC01")
    assert oc01.outcome is Outcome.FAIL
    assert oc01.message == "stale latestVersion 0 (current 1): expected 404/409, got 200"


def _not_found(message: str) -> Handler:
    def update(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404,
            json={"message": message},
            headers={"x-amzn-ErrorType": "ResourceNotFoundException", "x-amzn-RequestId": "r-404"},
        )

    return update


async def test_oc01_passes_the_real_services_404_and_reports_it(hi: FakeHI) -> None:
    # evidence E1: the real service refuses a stale version with this 404 (DIAGNijmegen/rse-grand-challenge
    # app/grandchallenge/cases/tasks.py matches exactly this code and message)
    hi.update = _not_found("Requested version(s) of ImageSet(s) is not the latest.")
    oc01 = (await _run("OC01")).result("OC01")
    assert oc01.outcome is Outcome.PASS
    assert oc01.message == (
        'stale version refused with 404 ResourceNotFoundException "not the latest" '
        "(as the real service answers, E1)"
    )


async def test_oc01_fails_a_404_that_does_not_say_the_version_is_stale(hi: FakeHI) -> None:
    hi.update = _not_found("Image set not found")
    oc01 = (await _run("OC01")).result("OC01")
    assert oc01.outcome is Outcome.FAIL
    assert 'stale latestVersion 0 (current 1): 404 without "not the latest"' in oc01.message


async def test_accepting_unsigned_requests_fails_au01(hi: FakeHI) -> None:
    def update(request: httpx.Request) -> httpx.Response:
        if "Authorization" not in request.headers:
            return ok_update(request)
        return httpx.Response(
            403,
            json={"message": "denied"},
            headers={"x-amzn-ErrorType": "AccessDeniedException", "x-amzn-RequestId": "x"},
        )

    hi.update = update
    report = await _run("AU01", "AU02")
    assert report.result("AU01").outcome is Outcome.FAIL
    assert "update, unsigned: expected 403, got 200" in report.result("AU01").message
    assert report.result("AU02").outcome is Outcome.PASS


async def test_html_500_on_bad_json_fails_rb01_and_er07(hi: FakeHI) -> None:
    def update(request: httpx.Request) -> httpx.Response:
        try:
            json.loads(request.content)
        except ValueError:
            return httpx.Response(500, text="<html>oops</html>", headers={"Content-Type": "text/html"})
        return validation(request)

    hi.update = update
    report = await _run("RB01", "ER07")
    rb01 = report.result("RB01")
    assert rb01.outcome is Outcome.FAIL
    assert "expected 400, got 500" in rb01.message
    assert "the 500 body is not a JSON object" in report.result("ER07").message


async def test_a_numeric_version_id_fails_sr06_and_sr08(hi: FakeHI) -> None:
    def update(request: httpx.Request) -> httpx.Response:
        body = json.loads(ok_update(request).content)
        body["latestVersionId"] = 2
        return httpx.Response(200, json=body, headers={"x-amzn-RequestId": "r"})

    hi.update = update
    report = await _run("SR06", "SR08")
    assert "latestVersionId: expected a string, got number" in report.result("SR06").message
    assert report.result("SR08").outcome is Outcome.FAIL


async def test_an_overridden_status_is_honoured(hi: FakeHI) -> None:
    def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404,
            json={"message": "no"},
            headers={"x-amzn-ErrorType": "ResourceNotFoundException", "x-amzn-RequestId": "x"},
        )

    hi.update = not_found
    assert (await _run("RV01")).result("RV01").outcome is Outcome.FAIL
    report = await _run("RV01", settings=Settings(examples=5, expect={"RV01": (404,)}))
    assert report.result("RV01").outcome is Outcome.PASS


async def test_throttles_are_retried_not_blamed(hi: FakeHI) -> None:
    calls = {"n": 0}

    def update(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(
                429,
                json={"message": "slow down"},
                headers={
                    "x-amzn-ErrorType": "ThrottlingException",
                    "Retry-After": "0",
                    "x-amzn-RequestId": "t",
                },
            )
        return validation(request)

    hi.update = update
    report = await _run("RV03")
    assert report.result("RV03").outcome is Outcome.PASS
    assert any("throttled" in n for n in report.result("RV03").notes)
    assert any("1 answers were 429 (throttled)" in n for n in report.notes)


async def test_read_only_runs_skip_writes_and_send_no_acceptable_update(hi: FakeHI) -> None:
    hi.update = ok_update
    report = await _run("SR11", "VS01", "OC03", allow_writes=False)
    assert {r.outcome for r in report.results} == {Outcome.SKIP}
    assert "--allow-writes" in report.result("SR11").message
    assert hi.requests == []


async def test_an_unreachable_endpoint_is_one_message_and_exit_status_4() -> None:
    with respx.mock() as router:
        route = router.route().mock(side_effect=httpx.ConnectError("connection refused"))
        report = await _run("RV01", "SR01", "ER01")
    assert report.results == ()
    assert report.unreachable == f"cannot reach {URL}: ConnectError: connection refused"
    assert report.exit_status == 4
    assert route.call_count == 1


async def test_an_endpoint_that_stops_answering_ends_the_run() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] > 3:  # the preflight's reads answer, then nothing does
            raise httpx.ReadTimeout("timed out")
        return (
            FakeHI._get(None, request)
            if "getImageSet" in request.url.path
            else FakeHI._metadata(None, request)
        )  # type: ignore[arg-type]

    with respx.mock() as router:
        router.route().mock(side_effect=flaky)
        report = await _run("RV", "OC06")
    assert report.unreachable is not None
    assert "stopped answering: 'datastoreId uppercase' got no answer" in report.unreachable
    assert "nor did a GetImageSet right after it" in report.unreachable
    assert calls["n"] == 3 + 2  # the preflight's reads, RV01's first probe, one liveness read
    assert {r.outcome for r in report.results[1:]} == {Outcome.SKIP}
    assert report.exit_status == 1  # RV01's probes got no answer: a MUST failed
