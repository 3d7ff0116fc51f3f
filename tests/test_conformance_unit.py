"""Unit tests of the conformance suite's parts: contract view, registry, probes, pacing, reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from rich.console import Console

import conformance
from conformance import (
    Check,
    CheckLevel,
    Credentials,
    NoPacing,
    Outcome,
    Report,
    Restore,
    Result,
    Settings,
    Target,
    all_checks,
    parse_expectation,
    select_checks,
)
from conformance._context import Context, Session
from conformance._http import Exchange, Probe, Signing, resolve_error_code
from conformance._model import (
    WireRequest,
    compatibility_notes,
    known_status,
    output_problems,
    request_problems,
)
from conformance._report import print_report, to_json, to_junit_xml

DS, IS = "a" * 32, "b" * 32
PATH = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
GOOD = json.dumps({"DICOMUpdates": {"updatableAttributes": "e30="}}).encode()

CHECKLIST = {"RV": 18, "SR": 11, "ER": 7, "OC": 7, "VS": 11, "AU": 6, "PD": 7, "RB": 9}
TOTAL = sum(CHECKLIST.values())
SHOULD = {
    "RV12", "RV15", "SR05", "SR07", "ER06", "OC05", "VS11", "PD02", "PD03", "PD05", "PD07", "RB06", "RB07",
    "RB09",
}  # fmt: skip


def test_public_surface_is_pinned() -> None:
    # "@py_builtins" and friends appear when pytest loads the package as a plugin and rewrites it
    public = {n for n in vars(conformance) if not n.startswith(("_", "@"))} - {"annotations"}
    assert set(conformance.__all__) == public
    assert len(conformance.__all__) == len(set(conformance.__all__))


def test_every_checklist_check_is_registered_with_its_level() -> None:
    checks = all_checks()
    by_group: dict[str, int] = {}
    for c in checks:
        by_group[c.group] = by_group.get(c.group, 0) + 1
        assert c.description
        assert "\n" not in c.description
        assert (c.level is CheckLevel.SHOULD) == (c.id in SHOULD), c.id
    assert by_group == CHECKLIST
    assert [c.group for c in checks] == sorted((c.group for c in checks), key=list(CHECKLIST).index)


def test_selection_by_id_and_group_and_skip() -> None:
    assert {c.id for c in select_checks(["AU"])} == {f"AU0{n}" for n in range(1, 7)}
    assert [c.id for c in select_checks(["rv01, SR02"])] == ["RV01", "SR02"]
    chosen = {c.id for c in select_checks(["OC"], ["OC03", "OC04"])}
    assert chosen == {"OC01", "OC02", "OC05", "OC06", "OC08"}
    assert len(select_checks([], ["RB"])) == TOTAL - 9
    with pytest.raises(ValueError, match="unknown check or group 'XX99'"):
        select_checks(["XX99"])


def test_check_validates_its_id() -> None:
    async def run(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match=r"Check\.id"):
        Check(id="RV1", level=CheckLevel.MUST, description="x", run=run)


def test_expectation_parsing() -> None:
    assert parse_expectation("rv01=404") == ("RV01", (404,))
    assert parse_expectation("RB04=400,413,414") == ("RB04", (400, 413, 414))
    for bad in ("RV01", "RV01=", "RV01=abc", "R1=400", "RV01=999"):
        with pytest.raises(ValueError, match=r"CHECK=STATUS|within 100\.\.599"):
            parse_expectation(bad)


def test_settings_and_target_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match=r"Settings\.time_bound"):
        Settings(time_bound=0)
    with pytest.raises(ValueError, match=r"Settings\.expect"):
        Settings(expect={"RV01": (42,)})
    creds = Credentials(access_key_id="AKIAX", secret_access_key="s", region="us-east-1")
    with pytest.raises(ValueError, match=r"Target\.endpoint_url"):
        Target(endpoint_url="ftp://x", credentials=creds, datastore_id=DS, image_set_id=IS)
    with pytest.raises(ValueError, match=r"Target\.image_set_id"):
        Target(endpoint_url="http://x", credentials=creds, datastore_id=DS, image_set_id="BAD")
    with pytest.raises(ValueError, match=r"Credentials\.region"):
        Credentials(access_key_id="AKIAX", secret_access_key="s", region="")
    assert "sekrit" not in repr(Credentials(access_key_id="AKIAX", secret_access_key="sekrit", region="r"))


def _wire(**kw: Any) -> WireRequest:
    base: dict[str, Any] = {
        "operation": "UpdateImageSetMetadata",
        "method": "POST",
        "path": PATH,
        "query": [("latestVersion", "3")],
        "body": GOOD,
    }
    base.update(kw)
    return WireRequest(**base)


def test_request_problems_follow_the_model() -> None:
    assert request_problems(_wire()) == []
    assert request_problems(_wire(query=[("latestVersion", "3"), ("force", "true")])) == []
    assert any("datastoreId" in p for p in request_problems(_wire(path=PATH.replace(DS, "A" * 32))))
    assert request_problems(_wire(query=[])) == ["latestVersion: required"]
    assert request_problems(_wire(query=[("latestVersion", "3")] * 2)) == ["latestVersion: given 2 times"]
    assert request_problems(_wire(query=[("latestVersion", "3"), ("force", "yes")])) == [
        "force: must be true or false"
    ]
    assert request_problems(_wire(body=b"")) == ["body: required"]
    assert request_problems(_wire(body=b"{[")) == ["body: not valid JSON"]
    assert request_problems(_wire(body=b'{"revertToVersionId": NaN}')) == ["body: not valid JSON"]
    both = json.dumps({"DICOMUpdates": {"updatableAttributes": "e30="}, "revertToVersionId": "1"}).encode()
    assert any("exactly one" in p for p in request_problems(_wire(body=both)))
    assert any("method GET" in p for p in request_problems(_wire(method="GET")))
    assert request_problems(_wire(path="/elsewhere")) == [
        "path does not match /datastore/{datastoreId}/imageSet/{imageSetId}/updateImageSetMetadata"
    ]


def test_output_problems_and_statuses() -> None:
    good = {
        "datastoreId": DS,
        "imageSetId": IS,
        "latestVersionId": "2",
        "imageSetState": "LOCKED",
        "createdAt": 1.5,
    }
    assert output_problems("UpdateImageSetMetadata", good) == []
    bad = {**good, "createdAt": "2024-01-01", "imageSetState": "PENDING"}
    problems = output_problems("UpdateImageSetMetadata", bad)
    assert any("createdAt" in p and "JSON number" in p for p in problems)
    assert any("imageSetState" in p for p in problems)
    assert known_status("ConflictException") == 409
    assert known_status("MissingAuthenticationTokenException") == 403
    assert known_status("NoSuchThing") is None


def test_compatibility_notes_are_computed_from_the_model() -> None:
    notes = "\n".join(compatibility_notes())
    assert "UPDATING_FOR_STUDY_CONSISTENCY" in notes
    assert "30000" in notes


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        ({"x-amzn-ErrorType": "ConflictException:http://internal/"}, {}, "ConflictException"),
        ({"X-Amzn-Errortype": "aws.protocoltests#ValidationException"}, {}, "ValidationException"),
        ({}, {"code": "ThrottlingException"}, "ThrottlingException"),
        ({}, {"__type": "com.amazon#ResourceNotFoundException"}, "ResourceNotFoundException"),
        ({}, {"message": "x"}, None),
        ({}, None, None),
    ],
)
def test_error_code_resolution_follows_botocore(headers: dict[str, str], body: Any, code: str | None) -> None:
    assert resolve_error_code(headers, body) == code


def _exchange(
    probe: Probe, headers: dict[str, str], body: bytes = b"{}", *, sensitive: bool = False
) -> Exchange:
    return Exchange(
        probe=probe,
        url="http://127.0.0.1:1" + probe.path + "?" + probe.query_string(),
        request_headers=headers,
        sent_body=probe.body,
        status=400,
        response_headers={"content-type": "application/json"},
        response_body=body,
        error=None,
        elapsed=0.01,
        sensitive=sensitive,
    )


def test_curl_reproduction_masks_the_signature_and_never_shows_secrets() -> None:
    probe = Probe(
        operation="UpdateImageSetMetadata", label="x", path=PATH, query=(("latestVersion", "1"),), body=GOOD
    )
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY/20240101/us-east-1/medical-imaging/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "f" * 64
    )
    headers = {"Authorization": auth, "X-Amz-Date": "20240101T000000Z", "X-Amz-Security-Token": "TOKEN123"}
    curl = _exchange(probe, headers).curl()
    assert "f" * 64 not in curl
    assert "AKIAEXAMPLEKEY" not in curl
    assert "TOKEN123" not in curl
    assert "Signature=****" in curl
    assert "--aws-sigv4 aws:amz:us-east-1:medical-imaging" in curl
    tampered = Probe(operation="x", label="x", path=PATH, signing=Signing.TAMPERED)
    assert "Signature=****" in _exchange(tampered, headers).curl()
    big = Probe(operation="x", label="x", path=PATH, body=b"{" + b" " * 5000 + b"}")
    assert "@body.bin" in _exchange(big, {}).curl()


def test_metadata_bodies_are_never_shown() -> None:
    probe = Probe(operation="GetImageSetMetadata", label="x", path=PATH)
    ex = _exchange(probe, {}, b'{"Patient": {"DICOM": {"PatientName": "DOE^JANE"}}}', sensitive=True)
    assert "DOE" not in ex.response_excerpt()


@pytest.mark.anyio
async def test_a_negative_request_the_model_accepts_is_not_sent() -> None:
    creds = Credentials(access_key_id="AKIAX", secret_access_key="s", region="us-east-1")
    target = Target(endpoint_url="http://127.0.0.1:9", credentials=creds, datastore_id=DS, image_set_id=IS)
    async with httpx.AsyncClient() as http:
        session = Session(target, Settings(), http, NoPacing())
        ctx = Context(session, select_checks(["RV05"])[0])
        valid = ctx.update_probe("looks bad, is valid", GOOD, version="1")
        assert await ctx.refused(valid, {400}, None) is None
        assert session.exchanges == []
        assert ctx.failures == []
        assert "model accepts this request" in ctx.notes[0]
        invalid = ctx.update_probe("semantic probe that is invalid", b"{}", version="1")
        assert ctx.vet(invalid, "semantics") is False
        assert "refuses it for another reason" in ctx.notes[1]


def _report(outcomes: dict[str, Outcome], restore: Restore | None = None) -> Report:
    checks = {c.id: c for c in all_checks()}
    results = tuple(
        Result(check=checks[cid], outcome=o, message=f"{cid} says {o.value}") for cid, o in outcomes.items()
    )
    return Report(endpoint="http://x", target="t", results=results, seconds=1.0, restore=restore)


def test_exit_status_is_nonzero_iff_a_must_check_fails() -> None:
    assert _report({"RV01": Outcome.PASS, "RV12": Outcome.WARN, "SR01": Outcome.SKIP}).exit_status == 0
    assert _report({"RV01": Outcome.FAIL}).exit_status == 1
    assert _report({"RV01": Outcome.PASS}, Restore(ok=False, message="RESTORE FAILED")).exit_status == 3


def test_json_and_junit_reports() -> None:
    report = _report({"RV01": Outcome.FAIL, "RV12": Outcome.WARN, "SR01": Outcome.SKIP, "ER01": Outcome.PASS})
    data = json.loads(to_json(report))
    assert data["counts"] == {"pass": 1, "fail": 1, "warn": 1, "skip": 1}
    assert data["results"][0]["id"] == "RV01"
    assert data["exit_status"] == 1
    root = ET.fromstring(to_junit_xml(report))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    rv = suites["RV request validation"]
    assert rv.get("failures") == "1"
    assert rv.get("tests") == "2"
    cases = {c.get("name", "")[:4]: c for c in root.iter("testcase")}
    assert cases["RV01"].find("failure") is not None
    assert cases["RV12"].find("failure") is None
    assert "WARN" in (cases["RV12"].findtext("system-out") or "")
    assert cases["SR01"].find("skipped") is not None


def test_terminal_report_is_grouped_and_loud_about_a_failed_restore() -> None:
    report = _report(
        {"RV01": Outcome.FAIL, "AU01": Outcome.PASS}, Restore(ok=False, message="RESTORE FAILED: x")
    )
    console = Console(record=True, width=140)
    print_report(report, console)
    text = console.export_text()
    assert "request validation" in text
    assert "authentication" in text
    assert "RESTORE FAILED" in text
    assert "1 MUST check(s) failed" in text


def test_the_suite_paces_with_the_sdk_limiter() -> None:
    from async_hi._limiter import TokenBucketLimiter
    from conformance._pacing import default_pacer

    pacer = default_pacer()
    assert isinstance(pacer, TokenBucketLimiter)
    assert pacer.current_rate("UpdateImageSetMetadata") <= 0.25
    assert not hasattr(conformance, "IntervalPacer")


def test_the_checklist_copy_matches_the_registered_checks() -> None:
    """conformance/CHECKLIST.md lists the registered checks with their levels (OC07 may be pending)."""
    import re
    from pathlib import Path

    text = (Path(conformance.__file__).parent / "CHECKLIST.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^- ([A-Z]{2}[0-9]{2}) (MUST|SHOULD) ", text, flags=re.M))
    registered = {c.id: c.level.value for c in all_checks()}
    assert {k: v for k, v in listed.items() if k in registered} == registered
    assert set(listed) - set(registered) <= {"OC07"}  # fid's check, listed ahead of its code
