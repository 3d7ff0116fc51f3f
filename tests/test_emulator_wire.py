"""Error cases of checklist groups RV, OC, AU and RB, provoked with raw signed HTTP."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from typing import Any

import httpx
import pytest

from async_hi.emulator import Emulator
from async_hi.rawhttp import sign_headers
from tests.conftest import RawClient

pytestmark = pytest.mark.anyio


def b64(doc: Any) -> str:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return base64.b64encode(raw).decode()


STUDY_UPDATE = {"DICOMUpdates": {"updatableAttributes": b64({"Study": {"DICOM": {"StudyDescription": "X"}}})}}


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["x-amzn-ErrorType"] == code
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["x-amzn-RequestId"]
    body = r.json()
    assert isinstance(body["message"], str)
    assert body["message"]


async def versions(emu: Emulator, d: str, i: str) -> list[str]:
    return [v["versionId"] for v in emu.history(d, i)]


@pytest.fixture
def one(emulator: Emulator) -> tuple[str, str]:
    s = emulator.seed(1)
    return s.datastore_id, s.image_set_ids[0]


# -- RV: request validation ---------------------------------------------------


@pytest.mark.parametrize(
    ("datastore", "image_set", "query"),
    [
        ("NOT-AN-ID", None, "latestVersion=1"),  # RV01
        ("a" * 31, None, "latestVersion=1"),  # RV01
        (None, "UPPERCASE" + "a" * 23, "latestVersion=1"),  # RV02
        (None, None, ""),  # RV03
        (None, None, "latestVersion=abc"),  # RV04
        (None, None, "latestVersion=-1"),  # RV04
        (None, None, "latestVersion=%D9%A1"),  # RV04: an Arabic-Indic digit is not \d in the model
        (None, None, "latestVersion=1&force=yes"),  # RV14
        (None, None, "latestVersion=1&force=1"),  # RV14
        (None, None, "latestVersion=1&force=True"),  # RV14
        (None, None, "latestVersion=1&latestVersion=1"),  # PD07
    ],
)
async def test_bad_path_and_query_get_400(
    raw: RawClient,
    emulator: Emulator,
    one: tuple[str, str],
    datastore: str | None,
    image_set: str | None,
    query: str,
) -> None:
    d, i = one
    r = await raw.send(raw.url(datastore or d, image_set or i, "updateImageSetMetadata", query), STUDY_UPDATE)
    assert_error(r, 400, "ValidationException")
    assert await versions(emulator, d, i) == ["1"]


@pytest.mark.parametrize(
    "body",
    [
        {},  # RV05
        {"DICOMUpdates": {"updatableAttributes": b64({"Study": {}})}, "revertToVersionId": "1"},  # RV06
        {"somethingElse": "1"},  # RV07
        {"DICOMUpdates": None},  # RV08
        {"DICOMUpdates": []},  # RV08
        {"DICOMUpdates": 5},  # RV08
        {"DICOMUpdates": {"updatableAttributes": "YmxvYg="}},  # RV09
        {"DICOMUpdates": {"updatableAttributes": "xyz"}},  # RV09
        {"DICOMUpdates": {"updatableAttributes": True}},  # RV09
        {"DICOMUpdates": {"updatableAttributes": 123}},  # RV09
        {"DICOMUpdates": {"updatableAttributes": ""}},  # RV10
        {"DICOMUpdates": {"updatableAttributes": b64(b" " * 30001)}},  # RV11
        {"DICOMUpdates": {"updatableAttributes": b64(b64({"Study": {}}).encode())}},  # RV12 double-encoded
        {
            "DICOMUpdates": {"updatableAttributes": b64({"Study": {"DICOM": {"PatientName": "X"}}})}
        },  # RV12 level
        {"DICOMUpdates": {"updatableAttributes": b64([1, 2])}},  # RV12 shape
        {"revertToVersionId": "one"},  # RV13
        {"revertToVersionId": 1},  # RV13
        {"DICOMUpdates": {}},  # neither blob
        {"DICOMUpdates": {"updatableAttributes": b64({"Study": {}}), "other": "x"}},
        {
            "DICOMUpdates": {"updatableAttributes": b64({"Study": {"DICOM": {"StudyDescription": "X"}}})},
            "x": 1,
        },
    ],
)
async def test_bad_bodies_get_400(
    raw: RawClient, emulator: Emulator, one: tuple[str, str], body: Any
) -> None:
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), body)
    assert_error(r, 400, "ValidationException")
    assert await versions(emulator, d, i) == ["1"]


async def test_double_encoding_is_named(raw: RawClient, one: tuple[str, str]) -> None:
    d, i = one
    body = {"DICOMUpdates": {"updatableAttributes": b64(b64({"Study": {}}).encode())}}
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), body)
    assert "base64-encoded twice" in r.json()["message"]


async def test_revert_with_include_study_is_400(raw: RawClient, one: tuple[str, str]) -> None:  # RV15
    d, i = one
    q = "latestVersion=1&includeStudyImageSets=true"
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", q), {"revertToVersionId": "1"})
    assert_error(r, 400, "ValidationException")


async def test_unknown_image_set_and_wrong_datastore_are_404(
    raw: RawClient, emulator: Emulator, one: tuple[str, str]
) -> None:
    d, i = one
    other = emulator.create_datastore()
    r = await raw.send(raw.url(d, "f" * 32, "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE)
    assert_error(r, 404, "ResourceNotFoundException")  # RV16
    r = await raw.send(raw.url(other, i, "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE)
    assert_error(r, 404, "ResourceNotFoundException")  # RV17


async def test_revert_to_missing_version_is_400(raw: RawClient, one: tuple[str, str]) -> None:  # VS04
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), {"revertToVersionId": "9"})
    assert_error(r, 400, "ValidationException")


# -- OC: optimistic concurrency -----------------------------------------------


#: the emulator's answer to a stale latestVersion, per --stale-version-error mode: the real
#: service's 404 (evidence E1) by default, the API reference's 409 on request
STALE = {"not-found": (404, "ResourceNotFoundException"), "conflict": (409, "ConflictException")}


@pytest.mark.parametrize("mode", list(STALE))
async def test_stale_and_future_versions_are_refused(
    raw: RawClient, emulator: Emulator, one: tuple[str, str], mode: str
) -> None:
    emulator.reconfigure(stale_version_error=mode)
    d, i = one
    url = raw.url(d, i, "updateImageSetMetadata", "latestVersion=1")
    assert (await raw.send(url, STUDY_UPDATE)).status_code == 200
    await asyncio.sleep(0.05)  # past the 20 ms LOCKED window
    r = await raw.send(url, STUDY_UPDATE)
    assert_error(r, *STALE[mode])  # OC01
    assert r.json()["message"] == "Requested version(s) of ImageSet(s) is not the latest."
    future = raw.url(d, i, "updateImageSetMetadata", "latestVersion=7")
    assert_error(await raw.send(future, STUDY_UPDATE), *STALE[mode])  # OC02
    assert await versions(emulator, d, i) == ["1", "2"]  # OC06


async def test_write_while_locked_conflicts(
    raw: RawClient, emulator: Emulator, one: tuple[str, str]
) -> None:  # OC04
    emulator.reconfigure(lock_seconds=2.0)  # the window must outlast a slow (loaded) machine
    d, i = one
    raw.emu.reconfigure(lock_seconds=5.0)  # the window outlasts three requests on a loaded machine
    assert (
        await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE)
    ).is_success
    # latestVersion=2 is current, but the apply of 2 is still running
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=2"), STUDY_UPDATE)
    assert_error(r, 409, "ConflictException")
    state = (await raw.send(raw.url(d, i, "getImageSet"))).json()
    assert (state["imageSetState"], state["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")


@pytest.mark.parametrize("mode", list(STALE))
async def test_parallel_updates_same_version_exactly_one_wins(emulator: Emulator, mode: str) -> None:  # OC03
    emulator.reconfigure(stale_version_error=mode)
    seeded = emulator.seed(1)
    d, i = seeded.datastore_id, seeded.image_set_ids[0]
    clients = [RawClient(emulator) for _ in range(4)]
    try:
        url = clients[0].url(d, i, "updateImageSetMetadata", "latestVersion=1")
        responses = await asyncio.gather(*(clients[n % 4].send(url, STUDY_UPDATE) for n in range(32)))
    finally:
        for c in clients:
            await c.aclose()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1
    # the losers name version 1 while 2 is the latest: refused as stale (checked before the lock)
    assert set(statuses) == {200, STALE[mode][0]}
    assert [v["versionId"] for v in emulator.history(d, i)] == ["1", "2"]


# -- AU: authentication -------------------------------------------------------


async def test_missing_signature_is_403(
    raw: RawClient, emulator: Emulator, one: tuple[str, str]
) -> None:  # AU01
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE, sign=False)
    assert_error(r, 403, "MissingAuthenticationTokenException")
    assert await versions(emulator, d, i) == ["1"]  # AU06


async def test_tampered_signature_is_403(
    raw: RawClient, emulator: Emulator, one: tuple[str, str]
) -> None:  # AU02
    d, i = one
    url = raw.url(d, i, "updateImageSetMetadata", "latestVersion=1")
    body = json.dumps(STUDY_UPDATE).encode()

    def signed() -> dict[str, str]:
        return sign_headers(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json"},
            access_key_id=emulator.access_key_id,
            secret_access_key=emulator.secret_access_key,
            region=emulator.region,
        )

    headers = signed()
    sig = headers["Authorization"][-64:]
    headers["Authorization"] = headers["Authorization"][:-64] + ("0" if sig[0] != "0" else "1") + sig[1:]
    r = await raw.http.post(url, content=body, headers=headers)
    assert_error(r, 403, "InvalidSignatureException")
    # AU05: the body changed after signing
    r = await raw.http.post(url, content=body.replace(b"X", b"Y"), headers=signed())
    assert_error(r, 403, "InvalidSignatureException")
    assert await versions(emulator, d, i) == ["1"]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"service": "s3"}, "InvalidSignatureException"),  # AU03
        ({"region": "eu-west-1"}, "InvalidSignatureException"),  # AU03
        ({"access_key_id": "AKIAUNKNOWNKEY000000"}, "UnrecognizedClientException"),
        ({"secret_access_key": "wrong"}, "InvalidSignatureException"),
        (
            {"at": datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=16)},
            "InvalidSignatureException",
        ),  # AU04
    ],
)
async def test_bad_credentials_scope_or_time_is_403(
    raw: RawClient, emulator: Emulator, one: tuple[str, str], kwargs: dict[str, Any], code: str
) -> None:
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), STUDY_UPDATE, **kwargs)
    assert_error(r, 403, code)
    assert await versions(emulator, d, i) == ["1"]


async def test_sigv4_can_be_switched_off() -> None:
    async with Emulator(verify_sigv4=False, quotas=None) as emu:
        s = emu.seed(1)
        raw = RawClient(emu)
        try:
            r = await raw.send(raw.url(s.datastore_id, s.image_set_ids[0], "getImageSet"), sign=False)
        finally:
            await raw.aclose()
        assert r.status_code == 200


# -- RB: robustness ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{[",
        b'{"revertToVersionId": "1",}',
        b'{"revertToVersionId": "1"} // c',
        b"{'revertToVersionId': '1'}",
        b'{"revertToVersionId": "1"} garbage',
        b'{"revertToVersionId": NaN}',
        b"\xff\xfe",
    ],
)
async def test_invalid_json_is_400(raw: RawClient, one: tuple[str, str], body: bytes) -> None:  # RB01
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), body)
    assert_error(r, 400, "ValidationException")


@pytest.mark.parametrize("body", [b"[]", b"10", b"null", b'"x"'])
async def test_wrong_json_type_is_400(raw: RawClient, one: tuple[str, str], body: bytes) -> None:  # RB02
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), body)
    assert_error(r, 400, "ValidationException")


async def test_empty_body_and_bad_content_type_are_400(raw: RawClient, one: tuple[str, str]) -> None:
    d, i = one
    url = raw.url(d, i, "updateImageSetMetadata", "latestVersion=1")
    assert_error(await raw.send(url, b""), 400, "ValidationException")  # RB03
    r = await raw.send(url, STUDY_UPDATE, content_type="text/plain")  # PD01
    assert_error(r, 400, "ValidationException")
    r = await raw.send(url, STUDY_UPDATE, content_type=None)  # PD01
    assert_error(r, 400, "ValidationException")
    r = await raw.send(url, STUDY_UPDATE, content_type="application/json; charset=utf-8")  # PD02
    assert r.status_code == 200


async def test_huge_body_is_refused_promptly(raw: RawClient, one: tuple[str, str]) -> None:  # RB04
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), b"{" + b" " * 11_000_000)
    assert r.status_code == 413
    assert r.headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(raw: RawClient, one: tuple[str, str], method: str) -> None:  # RB05
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), method=method)
    assert r.status_code == 405
    assert r.json()["message"]


async def test_deep_nesting_and_long_ids_are_400(raw: RawClient, one: tuple[str, str]) -> None:
    d, i = one
    deep = b'{"DICOMUpdates":' + b"[" * 10000 + b"]" * 10000 + b"}"
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "latestVersion=1"), deep)  # RB06
    assert_error(r, 400, "ValidationException")
    for length in (5000, 20000):  # RB07: past aiohttp's default 8190-byte request line too
        url = raw.url("a" * length, i, "updateImageSetMetadata", "latestVersion=1")
        assert_error(await raw.send(url, STUDY_UPDATE), 400, "ValidationException")


async def test_unknown_route_is_json_404(raw: RawClient) -> None:
    r = await raw.send(f"{raw.emu.endpoint_url}/nothing/here", {})
    assert r.status_code == 404
    assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"


async def test_request_ids_are_unique(raw: RawClient, one: tuple[str, str]) -> None:  # PD04, PD05
    d, i = one
    ids = set()
    for _ in range(5):
        r = await raw.send(raw.url(d, i, "getImageSet"))
        ids.add(r.headers["x-amzn-RequestId"])
    assert len(ids) == 5


async def test_query_order_is_irrelevant_and_force_values(raw: RawClient, one: tuple[str, str]) -> None:
    d, i = one
    r = await raw.send(raw.url(d, i, "updateImageSetMetadata", "force=false&latestVersion=1"), STUDY_UPDATE)
    assert r.status_code == 200  # PD06, PD07
    body = r.json()
    assert body["latestVersionId"] == "2"
    assert isinstance(body["createdAt"], (int, float))  # SR04
    assert isinstance(body["updatedAt"], (int, float))


async def test_absolute_form_request_target_verifies(emulator: Emulator, one: tuple[str, str]) -> None:
    """Some clients (aiobotocore's httpx backend) send ``POST http://host/path`` as the request line."""
    d, i = one
    url = f"{emulator.endpoint_url}/datastore/{d}/imageSet/{i}/getImageSet?version=1"
    headers = sign_headers(
        "POST",
        url,
        access_key_id=emulator.access_key_id,
        secret_access_key=emulator.secret_access_key,
        region=emulator.region,
    )
    host = emulator.endpoint_url.removeprefix("http://")
    lines = [f"POST {url} HTTP/1.1", f"Host: {host}", "Content-Length: 0", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
