"""Generated malformed requests: never a 5xx, never a hang, never a state change."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from async_hi import contract
from async_hi.document import check_document
from async_hi.emulator import EmulatorThread
from async_hi.rawhttp import sign_headers

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
)
keywords = st.sampled_from(
    [
        "PatientName",
        "StudyDescription",
        "Modality",
        "SOPInstanceUID",
        "PixelData",
        "00091001",
        "NotAKeyword",
        "",
    ]
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "SchemaVersion": st.sampled_from(["1.1", 1.1, "2", None]),
        "Patient": st.dictionaries(st.sampled_from(["DICOM", "X"]), st.dictionaries(keywords, json_scalars)),
        "Study": st.dictionaries(
            st.sampled_from(["DICOM", "Series", "Y"]),
            st.dictionaries(keywords | st.text(max_size=8), json_values, max_size=3),
        ),
    },
)


def blob_of(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


blobs = (
    documents.map(blob_of)
    | json_values.map(blob_of)
    | st.text(max_size=30)
    | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
    | json_scalars
)
union_bodies = st.dictionaries(
    st.sampled_from(["DICOMUpdates", "revertToVersionId", "other"]),
    st.dictionaries(st.sampled_from(["updatableAttributes", "removableAttributes", "zzz"]), blobs, max_size=3)
    | st.text(max_size=6)
    | json_scalars,
    max_size=3,
)
bodies = (
    union_bodies.map(lambda b: json.dumps(b).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=60)
)
query_values = st.sampled_from(
    ["1", "0", "-1", "abc", "", "true", "false", "1.0", "99999999999999999999", "%00"]
)
queries = st.lists(
    st.tuples(
        st.sampled_from(["latestVersion", "force", "includeStudyImageSets", "version", "x"]), query_values
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
operations = st.sampled_from(
    ["updateImageSetMetadata", "updateImageSetMetadata", "getImageSet", "listImageSetVersions", "nope"]
)
ids = st.sampled_from(["REAL", "REAL", "0" * 32, "A" * 32, "short", quote("ü" * 3), "a" * 33])


def is_valid_update(query: str, body: bytes) -> bool:
    """True if the request could be a valid update (those are not "malformed": skip them)."""
    try:
        union = json.loads(body)
    except ValueError:
        return False
    if contract.validate_value(contract.shape("MetadataUpdates"), union, "body"):
        return False
    if "revertToVersionId" in union:
        return True
    for key in ("updatableAttributes", "removableAttributes"):
        if key in union.get("DICOMUpdates", {}):
            doc = json.loads(base64.b64decode(union["DICOMUpdates"][key]) or b"null")
            kind = "updatable" if key.startswith("u") else "removable"
            if check_document(doc, kind=kind, force="force=true" in query):
                return False
    return "latestVersion=1" in query


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[EmulatorThread, str, str, httpx.Client]]:
    with EmulatorThread(lock_seconds=0.0, quotas=None) as emu, httpx.Client(timeout=10) as http:
        seeded = emu.call(lambda: emu.emulator.seed(1))
        yield emu, seeded.datastore_id, seeded.image_set_ids[0], http


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=operations,
    d=ids,
    i=ids,
    query=queries,
    body=bodies,
    ctype=st.sampled_from(["application/json", "x/y"]),
)
def test_malformed_requests_never_5xx_never_change_state(
    target: tuple[EmulatorThread, str, str, httpx.Client],
    op: str,
    d: str,
    i: str,
    query: str,
    body: bytes,
    ctype: str,
) -> None:
    emu, datastore_id, image_set_id, http = target
    d = datastore_id if d == "REAL" else d
    i = image_set_id if i == "REAL" else i
    if op == "updateImageSetMetadata" and d == datastore_id and i == image_set_id:
        assume(not (ctype == "application/json" and is_valid_update(query, body)))
    url = f"{emu.endpoint_url}/datastore/{d}/imageSet/{i}/{op}" + (f"?{query}" if query else "")
    headers = sign_headers(
        "POST",
        url,
        body=body,
        headers={"Content-Type": ctype},
        access_key_id=emu.emulator.access_key_id,
        secret_access_key=emu.emulator.secret_access_key,
        region=emu.emulator.region,
    )
    r = http.post(url, content=body, headers=headers)
    assert r.status_code < 500, r.text
    assert r.headers.get("x-amzn-RequestId")
    if r.status_code >= 400:
        assert isinstance(r.json()["message"], str)
    history = emu.call(lambda: emu.emulator.history(datastore_id, image_set_id))
    assert [v["versionId"] for v in history] == ["1"]
