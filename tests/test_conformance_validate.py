"""The shared validators (``conformance._validate``): each rule on a crafted exchange, and what is allowed."""

from __future__ import annotations

import copy
import gzip
import json
import time
from typing import Any

import pytest

from conformance._model import WireRequest
from conformance._validate import (
    RULES,
    WireResponse,
    operation_for_path,
    validate_error,
    validate_request,
    validate_response,
)

DS, IS = "a" * 32, "b" * 32
BASE = f"/datastore/{DS}/imageSet/{IS}"
NOW = time.time()
JSON = {"Content-Type": "application/json", "x-amzn-RequestId": "r-1"}
UPDATE_OK = {
    "datastoreId": DS,
    "imageSetId": IS,
    "latestVersionId": "4",
    "imageSetState": "LOCKED",
    "imageSetWorkflowStatus": "UPDATING",
    "createdAt": NOW - 60,
    "updatedAt": NOW,
}
GET_OK = {
    "datastoreId": DS,
    "imageSetId": IS,
    "versionId": "2",
    "imageSetState": "ACTIVE",
    "imageSetWorkflowStatus": "UPDATED",
    "createdAt": NOW - 60,
    "updatedAt": NOW,
}
ITEM = {
    "imageSetId": IS,
    "versionId": "3",
    "imageSetState": "ACTIVE",
    "ImageSetWorkflowStatus": "UPDATED",
    "createdAt": NOW - 60,
    "updatedAt": NOW,
}


def req(op: str, query: list[tuple[str, str]] | None = None, body: bytes = b"", **kw: Any) -> WireRequest:
    route = op[0].lower() + op[1:]
    return WireRequest(
        operation=op,
        method=kw.pop("method", "POST"),
        path=kw.pop("path", f"{BASE}/{route}"),
        query=query or [],
        body=body,
        **kw,
    )


def ok(body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> WireResponse:
    data = raw if raw is not None else json.dumps(body).encode()
    return WireResponse(status=200, headers=headers or JSON, body=data)


def rules(problems: list[Any]) -> set[str]:
    return {p.rule for p in problems}


def update_req(version: str = "3") -> WireRequest:
    return req("UpdateImageSetMetadata", [("latestVersion", version)], b'{"revertToVersionId": "1"}')


def metadata_ok(doc: Any = None, encoding: str | None = "gzip", zipped: bool = True) -> WireResponse:
    raw = json.dumps(doc if doc is not None else {"SchemaVersion": "1.1"}).encode()
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": "r"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return WireResponse(status=200, headers=headers, body=gzip.compress(raw) if zipped else raw)


def test_conformant_answers_of_every_operation_have_no_problems() -> None:
    assert validate_response(update_req(), ok(UPDATE_OK)) == []
    assert validate_response(req("GetImageSet", [("version", "2")]), ok(GET_OK)) == []
    older = {**ITEM, "versionId": "2", "updatedAt": NOW - 30}
    listed = {"imageSetPropertiesList": [ITEM, older], "nextToken": "abc"}
    assert validate_response(req("ListImageSetVersions", [("maxResults", "2")]), ok(listed)) == []
    assert validate_response(req("GetImageSetMetadata"), metadata_ok()) == []


def test_allowed_variations_are_not_problems() -> None:
    """Unknown members, header letter case, extra headers, a ':http://...' error type, short pages."""
    extra = {**UPDATE_OK, "somethingNew": {"x": 1}}
    headers = {"CONTENT-TYPE": "application/json; charset=utf-8", "X-AMZN-REQUESTID": "r", "X-Extra": "1"}
    assert validate_response(update_req(), ok(extra, headers)) == []
    short = {"imageSetPropertiesList": [ITEM], "nextToken": "t"}
    assert validate_response(req("ListImageSetVersions", [("maxResults", "50")]), ok(short)) == []
    error = WireResponse(
        status=400,
        headers={
            "x-amzn-errortype": "ValidationException:http://internal.amazon.com/coral/com.amazon.coral/",
            "content-type": "application/json",
            "x-amzn-requestid": "r",
        },
        body=json.dumps({"message": "no", "__type": "com.amazon#ValidationException", "extra": 1}).encode(),
    )
    assert validate_response(update_req(), error) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda b: b.pop("imageSetState"), "SR02"),
        (lambda b: b.update(datastoreId="c" * 32), "SR02"),
        (lambda b: b.update(imageSetState="PENDING"), "SR03"),
        (lambda b: b.update(createdAt="2024-01-01T00:00:00Z"), "SR04"),
        (lambda b: b.update(createdAt=NOW + 3600), "SR05"),
        (lambda b: b.update(latestVersionId=4), "SR06"),
        (lambda b: b.update(latestVersionId="v4"), "SR06"),
        (lambda b: b.update(message="a\nb"), "SR07"),
        (lambda b: b.update(imageSetWorkflowStatus=None, ImageSetWorkflowStatus="UPDATING"), "SR09"),
        (lambda b: b.update(imageSetState="ACTIVE", imageSetWorkflowStatus="UPDATED"), "SR11"),
        (lambda b: b.update(latestVersionId="3"), "VS01"),
    ],
)
def test_each_update_answer_rule(change: Any, rule: str) -> None:
    body = copy.deepcopy(UPDATE_OK)
    change(body)
    body = {k: v for k, v in body.items() if v is not None}
    found = validate_response(update_req(), ok(body))
    assert rule in rules(found), found
    assert all(p.side == "endpoint" for p in found)


def test_get_image_set_and_list_rules() -> None:
    asked = req("GetImageSet", [("version", "1")])
    assert rules(validate_response(asked, ok(GET_OK))) == {"VS06"}
    lower = {**ITEM, "imageSetWorkflowStatus": ITEM["ImageSetWorkflowStatus"]}
    del lower["ImageSetWorkflowStatus"]
    listed = req("ListImageSetVersions", [("maxResults", "1")])
    found = validate_response(listed, ok({"imageSetPropertiesList": [lower]}))
    assert rules(found) == {"SR09"}
    assert "ImageSetWorkflowStatus" in found[0].message
    two = {"imageSetPropertiesList": [ITEM, {**ITEM, "versionId": "2", "updatedAt": NOW - 30}]}
    assert rules(validate_response(listed, ok(two))) == {"VS07"}
    oldest_first = {"imageSetPropertiesList": [{**ITEM, "versionId": "1"}, ITEM]}
    assert rules(validate_response(req("ListImageSetVersions"), ok(oldest_first))) == {"VS05"}
    frozen = {"imageSetPropertiesList": [ITEM, {**ITEM, "versionId": "2"}]}
    assert rules(validate_response(req("ListImageSetVersions"), ok(frozen))) == {"VS10"}
    failed = {**GET_OK, "imageSetWorkflowStatus": "UPDATE_FAILED"}
    assert rules(validate_response(req("GetImageSet"), ok(failed))) == {"VS09"}
    assert validate_response(req("GetImageSet"), ok({**failed, "message": "constraint violated"})) == []
    numeric = {"imageSetPropertiesList": [{**ITEM, "versionId": 3}]}
    assert "SR06" in rules(validate_response(req("ListImageSetVersions"), ok(numeric)))


def test_metadata_must_be_gzip_with_its_header() -> None:
    op = req("GetImageSetMetadata")
    assert rules(validate_response(op, metadata_ok(encoding=None))) == {"SR10"}
    assert rules(validate_response(op, metadata_ok(zipped=False, encoding=None))) == {"SR10"}
    assert rules(validate_response(op, metadata_ok(zipped=False))) == {"SR10"}
    assert rules(validate_response(op, metadata_ok(doc=[1]))) == {"SR10"}
    foreign = metadata_ok(doc={"SchemaVersion": "1.1", "DatastoreID": DS, "ImageSetID": "c" * 32})
    assert rules(validate_response(op, foreign)) == {"SR02"}
    created = WireResponse(status=201, headers=JSON, body=json.dumps(UPDATE_OK).encode())
    assert rules(validate_response(update_req(), created)) == {"SR01"}
    text = WireResponse(status=200, headers={"x-amzn-RequestId": "r", "Content-Encoding": "gzip"}, body=b"")
    assert rules(validate_response(op, text)) == {"SR01", "SR10"}


@pytest.mark.parametrize(
    ("status", "headers", "body", "rule"),
    [
        (422, {"x-amzn-ErrorType": "ValidationException"}, {"message": "x"}, "ER01"),
        (400, {}, {"message": "x"}, "ER02"),
        (400, {"x-amzn-ErrorType": "ValidationException"}, {"message": "x", "__type": "Conflict"}, "ER03"),
        (400, {"x-amzn-ErrorType": "ValidationException"}, {"msg": "x"}, "ER04"),
        (400, {"x-amzn-ErrorType": "ValidationError"}, {"message": "x"}, "ER05"),
        (500, {"x-amzn-ErrorType": "InternalServerException"}, b"<html>", "ER07"),
    ],
)
def test_each_error_rule(status: int, headers: dict[str, str], body: Any, rule: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = WireResponse(status=status, headers={"content-type": "application/json", **headers}, body=raw)
    assert rule in rules(validate_error(answer))


def test_error_content_type_and_request_id() -> None:
    answer = WireResponse(
        status=409, headers={"x-amzn-ErrorType": "ConflictException"}, body=b'{"message": "m"}'
    )
    assert rules(validate_response(update_req(), answer)) == {"ER06", "PD04"}


@pytest.mark.parametrize(
    ("query", "body", "rule"),
    [
        ([], b'{"revertToVersionId": "1"}', "RV03"),
        ([("latestVersion", "abc")], b'{"revertToVersionId": "1"}', "RV04"),
        ([("latestVersion", "1")], b"{}", "RV05"),
        ([("latestVersion", "1")], b'{"revertToVersionId": "1", "DICOMUpdates": {}}', "RV06"),
        ([("latestVersion", "1")], b'{"revertTo": "1"}', "RV07"),
        ([("latestVersion", "1")], b'{"DICOMUpdates": null}', "RV08"),
        ([("latestVersion", "1")], b'{"DICOMUpdates": [1]}', "RV08"),
        ([("latestVersion", "1")], b'{"DICOMUpdates": {"updatableAttributes": "xyz"}}', "RV09"),
        ([("latestVersion", "1")], b'{"DICOMUpdates": {"updatableAttributes": ""}}', "RV10"),
        ([("latestVersion", "1")], b'{"revertToVersionId": 1}', "RV13"),
        ([("latestVersion", "1"), ("force", "yes")], b'{"revertToVersionId": "1"}', "RV14"),
        ([("latestVersion", "1")], b'{"revertToVersionId": "1", "x": 1}', "PD03"),
        ([("latestVersion", "1")] * 2, b'{"revertToVersionId": "1"}', "PD07"),
        ([("latestVersion", "1")], b"{[", "RB01"),
        ([("latestVersion", "1")], b"[]", "RB02"),
        ([("latestVersion", "1")], b"", "RB03"),
    ],
)
def test_each_update_request_rule(query: list[tuple[str, str]], body: bytes, rule: str) -> None:
    found = validate_request(req("UpdateImageSetMetadata", query, body))
    assert rule in rules(found), found
    assert all(p.side == "client" for p in found)


def test_request_rules_on_ids_content_type_and_other_operations() -> None:
    bad_ds = req("GetImageSet", path=f"/datastore/{'A' * 32}/imageSet/{IS}/getImageSet")
    assert rules(validate_request(bad_ds)) == {"RV01"}
    assert rules(validate_request(req("GetImageSet", path=f"{BASE[:-1]}X/getImageSet"))) == {"RV02"}
    assert rules(validate_request(req("GetImageSet", [("version", "x")]))) == {"RV18"}
    assert rules(validate_request(req("ListImageSetVersions", [("maxResults", "51")]))) == {"RV18"}
    assert rules(validate_request(req("GetImageSet", method="GET"))) == {"RB05"}
    plain = req(
        "UpdateImageSetMetadata",
        [("latestVersion", "1")],
        b'{"revertToVersionId": "1"}',
        headers={"content-type": "text/plain"},
    )
    assert rules(validate_request(plain)) == {"PD01"}
    assert validate_request(req("ListImageSetVersions", [("maxResults", "50"), ("nextToken", "t")])) == []


def test_messages_never_carry_values() -> None:
    secret = "DOE^JANE"
    body = {**UPDATE_OK, "message": secret + "\n", "imageSetState": secret}
    found = validate_response(update_req(), ok(body))
    assert found
    assert {"SR03", "SR07", "SR11"} <= rules(found)
    assert all(secret not in p.message for p in found)
    doc = json.dumps({"DICOMUpdates": {"updatableAttributes": secret}}).encode()
    assert all(secret not in p.message for p in validate_request(req("UpdateImageSetMetadata", [], doc)))


def test_rule_ids_are_checks_and_paths_name_operations() -> None:
    from conformance import all_checks

    assert set(RULES) <= {c.id for c in all_checks()}
    assert operation_for_path(f"{BASE}/listImageSetVersions") == "ListImageSetVersions"
    assert operation_for_path(f"{BASE}/copyImageSet") is None
    assert operation_for_path("/elsewhere") is None
