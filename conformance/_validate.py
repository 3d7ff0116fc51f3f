"""One set of validators for any HealthImaging exchange: the suite's checks and the proxy judge with these.

Algorithm. :func:`validate_request` walks the operation's input shape in
botocore's model (method, URI labels, query parameters, then the payload's
union member by member) and :func:`validate_response` walks the output shape
(or, for an error, the restJson1 error rules). Every broken rule becomes a
:class:`Problem` naming the checklist id that states the rule, which side
broke it (the ``client`` that sent the request, or the ``endpoint`` that
answered) and what is wrong, in words that never repeat a value that may be
PHI (no attribute values, no error messages, no metadata). Rules that need
more than one exchange (paging across pages, state over time, "a refused
write changes nothing") are the checks' business, not this module's.

What is judged, per operation in scope (``async_hi.contract.OPERATIONS``):

- requests: the input shape's patterns, types, repeats and required members
  (RV01-RV11, RV13, RV14, RV18, PD01, PD03, PD07, RB01-RB03, RB05);
- success answers: the model's status and Content-Type (SR01), required
  members and echoed ids, the ARN and the metadata document's ids included
  (SR02), enums (SR03), epoch-number timestamps (SR04, plausibility SR05),
  string ids of their pattern (SR06), message (SR07), strict and botocore
  parsing (SR08), member names exactly as modelled, the ListImageSetVersions
  ``ImageSetWorkflowStatus`` capital I included (SR09), GetImageSetMetadata's
  gzip body with ``Content-Encoding: gzip`` (SR10), the update answer's
  in-progress state (SR11, evidence E7), and the single-exchange parameter
  effects: ``latestVersionId`` = ``latestVersion`` + 1 (VS01), ``version``
  answered with that version (VS06), a page within ``maxResults`` and newest
  first (VS07, VS05), an UPDATE_FAILED version with its message (VS09) and a
  page whose newer versions have later ``updatedAt`` (VS10);
- error answers: modeled status (ER01), resolvable code (ER02), header and
  body agreeing (ER03), a JSON body with a string message (ER04), botocore
  raising the modeled class (ER05), Content-Type (ER06), JSON 5xx (ER07);
- every answer: a non-empty ``x-amzn-RequestId`` (PD04).

Unknown extra members, header letter case, extra headers, an error type
carrying a ``:http://...`` suffix and short list pages are all allowed.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.errorfactory import ClientExceptionsFactory
from botocore.model import Shape, StructureShape
from botocore.parsers import create_parser

from async_hi import contract
from conformance._model import FRONT_DOOR_STATUS, WireRequest, known_status, match_uri, parse_strict_json

__all__ = [
    "RULES",
    "Problem",
    "Side",
    "WireResponse",
    "decoded_body",
    "operation_for_path",
    "problems_by_rule",
    "resolve_error_code",
    "shape_problems",
    "validate_error",
    "validate_request",
    "validate_response",
]

Side = Literal["client", "endpoint"]

#: Every rule id a :class:`Problem` can carry (each is a check of the checklist).
RULES: tuple[str, ...] = (
    "RV01", "RV02", "RV03", "RV04", "RV05", "RV06", "RV07", "RV08", "RV09", "RV10", "RV11", "RV13",
    "RV14", "RV18", "PD01", "PD03", "PD04", "PD07", "RB01", "RB02", "RB03", "RB05",
    "SR01", "SR02", "SR03", "SR04", "SR05", "SR06", "SR07", "SR08", "SR09", "SR10", "SR11",
    "VS01", "VS05", "VS06", "VS07", "VS09", "VS10",
    "ER01", "ER02", "ER03", "ER04", "ER05", "ER06", "ER07",
)  # fmt: skip

_EPOCH_2023 = 1672531200.0
_CLOCK_SKEW = 300.0
_SETTLING = ("UPDATING", "UPDATING_FOR_STUDY_CONSISTENCY")
_ENUM_LIKE = re.compile(r"[A-Z][A-Za-z_]{0,59}")
_ROUTE_TO_OPERATION = {
    contract.operation(name).http["requestUri"].rstrip("/").rsplit("/", 1)[-1]: name
    for name in contract.OPERATIONS
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One broken rule in one exchange.

    Args:
        rule: the checklist id stating the rule (``SR09``, ``ER01``, ...).
        side: ``client`` (the request is wrong) or ``endpoint`` (the answer is).
        message: what is wrong; names members and rules, never values that may be PHI.
    """

    rule: str
    side: Side
    message: str

    def __str__(self) -> str:
        return f"{self.rule} ({self.side}): {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WireResponse:
    """An HTTP answer as it came off the wire.

    Args:
        status: the HTTP status.
        headers: response headers, any letter case.
        body: the body bytes exactly as sent (a gzip body still compressed).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        want = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == want), None)


def operation_for_path(path: str) -> str | None:
    """The operation a ``/datastore/{d}/imageSet/{i}/{route}`` path names (None: no operation in scope)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 5 or parts[0] != "datastore" or parts[2] != "imageSet":
        return None
    return _ROUTE_TO_OPERATION.get(parts[4])


def resolve_error_code(headers: Mapping[str, str], body: Any) -> str | None:
    """botocore's restJson1 rule: ``x-amzn-ErrorType``, else body ``code``/``Code``, else ``__type``.

    The bare shape name is what remains after cutting ``:...`` and ``...#``.
    Returns None when none of them is there.
    """
    raw: object = None
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("x-amzn-errortype"):
        raw = lower["x-amzn-errortype"]
    elif isinstance(body, dict) and ("code" in body or "Code" in body):
        raw = body.get("code", body.get("Code"))
    elif isinstance(body, dict) and "__type" in body:
        raw = body["__type"]
    return _bare_code(raw)


def _bare_code(raw: object) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    code = raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return code or None


def _is_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def decoded_body(response: WireResponse) -> Any:
    """The answer's JSON body (a gzip body inflated first); raises ValueError when it is not JSON."""
    raw = response.body
    if _is_gzip(raw):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"the gzip body does not inflate: {type(exc).__name__}") from None
    return parse_strict_json(raw)


def _body_or_none(response: WireResponse) -> Any:
    try:
        return decoded_body(response)
    except ValueError:
        return None


# -- requests ---------------------------------------------------------------------------------


def _client(rule: str, message: str) -> Problem:
    return Problem(rule=rule, side="client", message=message)


def _endpoint(rule: str, message: str) -> Problem:
    return Problem(rule=rule, side="endpoint", message=message)


def _param_rule(operation: str, wire: str) -> str:
    if wire == "datastoreId":
        return "RV01"
    if wire == "imageSetId":
        return "RV02"
    if wire == "latestVersion":
        return "RV04"
    if wire in ("force", "includeStudyImageSets"):
        return "RV14"
    return "RV18"


def _scalar(member: Shape, wire: str, raw: str) -> list[str]:
    kind = member.type_name
    if kind == "boolean":
        return [] if raw in ("true", "false") else [f"{wire}: must be true or false"]
    value: Any = raw
    if kind in ("integer", "long"):
        try:
            value = int(raw, 10)
        except ValueError:
            return [f"{wire}: must be an integer"]
    return [p.replace("$", wire, 1) for p in contract.validate_value(member, value, "$")]


def validate_request(request: WireRequest) -> list[Problem]:
    """Every way ``request`` breaks its operation's input shape (empty: the model accepts it).

    The method, the URI labels, the query parameters (type, pattern, repeats,
    required), the ``Content-Type`` of a body (when ``request.headers`` is
    given) and the payload (strict JSON, then the union and its members).
    Signatures and body sizes as a whole are not judged here.
    """
    op = contract.operation(request.operation)
    problems: list[Problem] = []
    if request.method.upper() != op.http["method"]:
        problems.append(_client("RB05", f"method {request.method} is not {op.http['method']}"))
    labels = match_uri(op, request.path)
    if labels is None:
        return [*problems, _client("RB05", f"path does not match {op.http['requestUri']}")]
    shape = op.input_shape
    if shape is None:  # pragma: no cover - every operation in scope has an input
        return problems
    present: set[str] = set()
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        rule = _param_rule(request.operation, wire)
        if loc == "uri":
            problems += [_client(rule, p) for p in _scalar(member, wire, labels.get(wire, ""))]
            present.add(name)
        elif loc == "querystring":
            values = [v for k, v in request.query if k == wire]
            if not values:
                continue
            present.add(name)
            if member.type_name != "list" and len(values) > 1:
                problems.append(_client("PD07", f"{wire}: given {len(values)} times"))
                continue
            problems += [_client(rule, p) for p in _scalar(member, wire, values[0])]
    payload = shape.serialization.get("payload")
    if payload is not None and request.body:
        present.add(payload)
        problems += _payload_problems(request, shape.members[payload])
    for req in shape.required_members:
        if req in present:
            continue
        member = shape.members[req]
        if req == payload:
            problems.append(_client("RB03", "body: required"))
        else:
            wire = member.serialization.get("name", req)
            problems.append(_client("RV03" if wire == "latestVersion" else "RV18", f"{wire}: required"))
    return problems


def _payload_problems(request: WireRequest, union: Shape) -> list[Problem]:
    problems: list[Problem] = []
    ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), None)
    if request.headers and (ctype is None or ctype.split(";", 1)[0].strip().lower() != "application/json"):
        problems.append(
            _client("PD01", f"a body with Content-Type {ctype or '(none)'}, not application/json")
        )
    try:
        doc = parse_strict_json(request.body)
    except ValueError:
        return [*problems, _client("RB01", "body: not valid JSON")]
    if not isinstance(doc, dict):
        return [*problems, _client("RB02", f"body: expected a JSON object, got {_json_type(doc)}")]
    assert isinstance(union, StructureShape)
    members = union.members
    present = [k for k in doc if k in members]
    unknown = sorted(k for k in doc if k not in members)
    if not doc:
        return [*problems, _client("RV05", "body: an empty object names no member of the union")]
    if len(present) > 1:
        problems.append(
            _client("RV06", f"body: a union needs exactly one of {' or '.join(members)}, got both")
        )
    if unknown:
        names = ", ".join(_short(k) for k in unknown)
        if present:
            problems.append(_client("PD03", f"body: unknown member(s) {names} beside {present[0]}"))
        else:
            problems.append(_client("RV07", f"body: only unknown member(s) {names}"))
    if len(present) != 1:
        return problems
    name = present[0]
    value = doc[name]
    if value is None:
        return [*problems, _client("RV08", f"body.{name}: must not be null")]
    found = contract.validate_value(members[name], value, f"body.{name}")
    if name == "revertToVersionId":
        return problems + [_client("RV13", p) for p in found]
    if not isinstance(value, dict):
        return [*problems, _client("RV08", f"body.{name}: expected an object, got {_json_type(value)}")]
    for p in found:
        if "unknown member" in p:
            problems.append(_client("PD03", p))
        elif "bytes, fewer than" in p:
            problems.append(_client("RV10", p))
        elif "bytes, more than" in p:
            problems.append(_client("RV11", p))
        else:
            problems.append(_client("RV09", p))
    return problems


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# -- responses ----------------------------------------------------------------------------------


def validate_response(request: WireRequest, response: WireResponse) -> list[Problem]:
    """Every way ``response`` breaks the contract as an answer to ``request`` (empty: conformant).

    A 2xx is judged against the operation's output shape and the
    single-exchange parameter effects; anything else as an error. Every answer
    needs an ``x-amzn-RequestId``.
    """
    problems: list[Problem] = []
    if not (response.header("x-amzn-requestid") or "").strip():
        problems.append(_endpoint("PD04", f"the {response.status} answer has no x-amzn-RequestId"))
    if 200 <= response.status < 300:
        return problems + _success_problems(request, response)
    return problems + validate_error(response)


def _output(op_name: str) -> StructureShape:
    shape = contract.operation(op_name).output_shape
    assert isinstance(shape, StructureShape)
    return shape


def _success_problems(request: WireRequest, response: WireResponse) -> list[Problem]:
    op_name = request.operation
    problems: list[Problem] = []
    ctype = (response.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        problems.append(
            _endpoint(
                "SR01", f"{op_name} answered 200 with Content-Type {ctype or '(none)'}, not application/json"
            )
        )
    want_status = int(contract.operation(op_name).http.get("responseCode", 200))
    if response.status != want_status:
        problems.append(
            _endpoint(
                "SR01", f"{op_name} answered {response.status}; the model's success status is {want_status}"
            )
        )
    if op_name == "GetImageSetMetadata":
        return problems + _metadata_problems(response, *_ids(request))
    declared = (response.header("content-encoding") or "").strip().lower() == "gzip"
    if _is_gzip(response.body) and not declared:
        # a declared Content-Encoding is HTTP compression (allowed); an undeclared gzip body is not JSON
        problems.append(_endpoint("SR08", f"{op_name} answered a gzip body without Content-Encoding: gzip"))
    try:
        body = decoded_body(response)
    except ValueError:
        return [*problems, _endpoint("SR08", f"the {op_name} answer is not JSON")]
    if not isinstance(body, dict):
        return [
            *problems,
            _endpoint("SR08", f"the {op_name} answer is JSON {_json_type(body)}, not an object"),
        ]
    shape = _output(op_name)
    problems += _shape_problems(shape, body, "response")
    problems += _botocore_problems(op_name, shape, response)
    problems += _plausibility_problems(body)
    d, i = _ids(request)
    if op_name in ("UpdateImageSetMetadata", "GetImageSet"):
        for name, want in (("datastoreId", d), ("imageSetId", i)):
            if want is not None and isinstance(body.get(name), str) and body[name] != want:
                problems.append(_endpoint("SR02", f"{name} does not echo the request's {name}"))
        arn = body.get("imageSetArn")
        if isinstance(arn, str) and d and i and not arn.endswith(f":datastore/{d}/imageset/{i}"):
            problems.append(
                _endpoint("SR02", "imageSetArn does not name the request's datastore and image set")
            )
    if op_name == "UpdateImageSetMetadata":
        problems += _update_effects(request, body)
    problems += _settled_state_problems(body)
    if op_name == "GetImageSet":
        asked = _query(request, "version")
        got = body.get("versionId")
        if asked is not None and isinstance(got, str) and _same_version(got, asked) is False:
            problems.append(_endpoint("VS06", f"GetImageSet version={asked} answered versionId {got}"))
    elif op_name == "ListImageSetVersions":
        problems += _page_problems(request, body, i)
    return problems


def _ids(request: WireRequest) -> tuple[str | None, str | None]:
    labels = match_uri(contract.operation(request.operation), request.path)
    if labels is None:
        return None, None
    return labels.get("datastoreId"), labels.get("imageSetId")


def _query(request: WireRequest, name: str) -> str | None:
    return next((v for k, v in request.query if k == name), None)


def _same_version(a: str, b: str) -> bool | None:
    if not (a.isdigit() and b.isdigit()):
        return None
    return int(a) == int(b)


def _update_effects(request: WireRequest, body: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    asked = _query(request, "latestVersion")
    got = body.get("latestVersionId")
    moved = asked is not None and asked.isdigit() and isinstance(got, str) and got.isdigit()
    if moved and int(str(got)) != int(str(asked)) + 1:
        problems.append(
            _endpoint(
                "VS01",
                f"an update of version {asked} returned latestVersionId {got}, not {int(str(asked)) + 1}",
            )
        )
    state, workflow = body.get("imageSetState"), body.get("imageSetWorkflowStatus")
    if state != "LOCKED" or workflow not in _SETTLING:
        problems.append(
            _endpoint(
                "SR11",
                f"an accepted update reported {_shown(state)}/{_shown(workflow)}, "
                "not the in-progress LOCKED/UPDATING (E7)",
            )
        )
    return problems


def _settled_state_problems(body: dict[str, Any]) -> list[Problem]:
    """VS09: a version that ended UPDATE_FAILED says why (GetImageSet, list items)."""
    records: list[tuple[str, Any]] = [("response", body)]
    items = body.get("imageSetPropertiesList")
    if isinstance(items, list):
        records += [(f"imageSetPropertiesList[{k}]", it) for k, it in enumerate(items)]
    problems = []
    for where, rec in records:
        if not isinstance(rec, dict):
            continue
        status = rec.get("imageSetWorkflowStatus", rec.get("ImageSetWorkflowStatus"))
        message = rec.get("message")
        if status == "UPDATE_FAILED" and not (isinstance(message, str) and message.strip()):
            problems.append(_endpoint("VS09", f"{where}: UPDATE_FAILED without a message"))
    return problems


def _page_problems(request: WireRequest, body: dict[str, Any], image_set: str | None) -> list[Problem]:
    problems: list[Problem] = []
    items = body.get("imageSetPropertiesList")
    if not isinstance(items, list):
        return problems
    limit = _query(request, "maxResults")
    if limit is not None and limit.isdigit() and len(items) > int(limit):
        problems.append(_endpoint("VS07", f"a page of {len(items)} versions for maxResults={limit}"))
    versions = [
        int(item["versionId"])
        for item in items
        if isinstance(item, dict) and isinstance(item.get("versionId"), str) and item["versionId"].isdigit()
    ]
    if any(a <= b for a, b in itertools.pairwise(versions)):
        problems.append(_endpoint("VS05", "a ListImageSetVersions page is not newest first"))
    else:
        stamps = [item.get("updatedAt") if isinstance(item, dict) else None for item in items]
        for k, (newer, older) in enumerate(itertools.pairwise(stamps)):
            numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (newer, older))
            if numbers and not newer > older:  # type: ignore[operator]
                problems.append(
                    _endpoint(
                        "VS10",
                        f"imageSetPropertiesList[{k}] (newer) has an updatedAt not later than "
                        f"imageSetPropertiesList[{k + 1}]",
                    )
                )
                break
    for k, item in enumerate(items):
        echoed = item.get("imageSetId") if isinstance(item, dict) else None
        if image_set and isinstance(echoed, str) and echoed != image_set:
            message = f"imageSetPropertiesList[{k}].imageSetId is not the image set asked for"
            problems.append(_endpoint("SR02", message))
            break
    return problems


def _shown(value: object) -> str:
    """An enum-like value as it was, anything else only by its kind (values may be PHI)."""
    if isinstance(value, str):
        return value if _ENUM_LIKE.fullmatch(value) else "a value outside the enum"
    return f"JSON {_json_type(value)}"


def shape_problems(op_name: str, body: Any) -> list[Problem]:
    """How a decoded success body breaks ``op_name``'s output shape (no header or parameter rules)."""
    return _shape_problems(_output(op_name), body, "response")


def _shape_problems(shape: Shape, value: Any, path: str) -> list[Problem]:
    """Walk an output shape: each broken rule with the checklist id stating it."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            return [_endpoint("SR08", f"{path}: expected an object, got {_json_type(value)}")]
        problems: list[Problem] = []
        members = shape.members
        folded = {n.lower(): n for n in members}
        for key in value:
            if key in members:
                continue
            twin = folded.get(key.lower())
            if twin is not None and twin not in value:
                problems.append(
                    _endpoint(
                        "SR09",
                        f"{path}: member {_short(key)} is spelled {twin} in the model (botocore drops it)",
                    )
                )
        for req in shape.required_members:
            if value.get(req) is None and not any(k.lower() == req.lower() and k != req for k in value):
                problems.append(_endpoint("SR02", f"{path}: missing required member {req}"))
        for name, item in value.items():
            if name in members and item is not None:
                problems += _shape_problems(members[name], item, f"{path}.{name}")
        return problems
    if kind == "list":
        if not isinstance(value, list):
            return [_endpoint("SR08", f"{path}: expected an array, got {_json_type(value)}")]
        out: list[Problem] = []
        for k, item in enumerate(value):
            out += _shape_problems(shape.member, item, f"{path}[{k}]")  # type: ignore[attr-defined]
        return out
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            message = f"{path}: {_json_type(value)}, not a JSON number of epoch seconds"
            # a strict (typed) parser refuses it too: SR08 names that
            return [_endpoint("SR04", message), _endpoint("SR08", f"strict parse: {message}")]
        return []
    if kind == "string":
        if not isinstance(value, str):
            message = f"{path}: expected a string, got {_json_type(value)}"
            if not shape.metadata.get("pattern"):
                return [_endpoint("SR08", message)]
            return [_endpoint("SR06", message), _endpoint("SR08", f"strict parse: {message}")]
        enum: list[str] = list(getattr(shape, "enum", None) or [])
        if enum:
            if value not in enum:
                return [_endpoint("SR03", f"{path}: {_shown(value)} is not one of {', '.join(enum)}")]
            return []
        rule = "SR07" if shape.name == "Message" else "SR06"
        return [_endpoint(rule, p) for p in contract.validate_value(shape, value, path)]
    return [_endpoint("SR08", p) for p in contract.validate_value(shape, value, path)]


def _plausibility_problems(body: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    now = time.time() + _CLOCK_SKEW
    records = [("response", body)]
    items = body.get("imageSetPropertiesList")
    if isinstance(items, list):
        records += [
            (f"imageSetPropertiesList[{k}]", it) for k, it in enumerate(items) if isinstance(it, dict)
        ]
    for where, rec in records:
        stamps = {
            n: rec[n]
            for n in ("createdAt", "updatedAt")
            if isinstance(rec.get(n), (int, float)) and not isinstance(rec.get(n), bool)
        }
        for name, value in stamps.items():
            if not _EPOCH_2023 <= value <= now:
                problems.append(_endpoint("SR05", f"{where}.{name} is not a plausible time (2023 .. now)"))
        if len(stamps) == 2 and stamps["createdAt"] > stamps["updatedAt"]:
            problems.append(_endpoint("SR05", f"{where}: createdAt is later than updatedAt"))
    return problems


def _botocore_problems(op_name: str, shape: StructureShape, response: WireResponse) -> list[Problem]:
    headers = {k.lower(): v for k, v in response.headers.items()}
    try:
        parsed = create_parser("rest-json").parse(
            {"status_code": response.status, "headers": headers, "body": response.body}, shape
        )
    except Exception as exc:  # botocore raises many kinds on bad input; all mean "cannot parse"
        return [_endpoint("SR08", f"botocore cannot parse the {op_name} answer: {type(exc).__name__}")]
    if "Error" in parsed:
        return [_endpoint("SR08", f"botocore parsed the {op_name} answer as an error")]
    missing = [m for m in shape.required_members if m not in parsed]
    if missing:
        return [
            _endpoint("SR08", f"botocore's parse of {op_name} lacks required member(s) {', '.join(missing)}")
        ]
    return []


def _metadata_problems(response: WireResponse, d: str | None, i: str | None) -> list[Problem]:
    encoding = (response.header("content-encoding") or "").strip().lower()
    problems: list[Problem] = []
    if encoding != "gzip":
        problems.append(
            _endpoint(
                "SR10", f"GetImageSetMetadata answered with Content-Encoding {encoding or '(none)'}, not gzip"
            )
        )
    if not _is_gzip(response.body):
        return [*problems, _endpoint("SR10", "the GetImageSetMetadata body is not gzip")]
    try:
        doc = decoded_body(response)
    except ValueError as exc:
        return [
            *problems,
            _endpoint("SR10", f"the GetImageSetMetadata body: {exc}".replace(": the gzip", ": gzip")),
        ]
    if not isinstance(doc, dict):
        problems.append(_endpoint("SR10", f"the metadata document is JSON {_json_type(doc)}, not an object"))
        return problems
    for key, want in (("DatastoreID", d), ("ImageSetID", i)):
        if want is not None and isinstance(doc.get(key), str) and doc[key] != want:
            problems.append(_endpoint("SR02", f"the metadata document's {key} is not the request's"))
    return problems


# -- errors -------------------------------------------------------------------------------------


@functools.cache
def _exceptions() -> Any:
    return ClientExceptionsFactory().create_client_exceptions(contract.service_model())


def _body_code(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in ("code", "Code", "__type"):
        code = _bare_code(body.get(key))
        if code:
            return code
    return None


def validate_error(response: WireResponse) -> list[Problem]:
    """Every way an error answer breaks restJson1's error rules (ER01-ER07)."""
    problems: list[Problem] = []
    status = response.status
    body = _body_or_none(response)
    code = resolve_error_code(response.headers, body)
    if code is None:
        problems.append(
            _endpoint("ER02", f"{status} without an error code (no x-amzn-ErrorType, code or __type)")
        )
    else:
        want = known_status(code)
        if want is not None and status != want:
            problems.append(_endpoint("ER01", f"{code} answered with {status}; its status is {want}"))
    header = _bare_code(response.header("x-amzn-errortype"))
    in_body = _body_code(body)
    if header and in_body and header != in_body:
        problems.append(_endpoint("ER03", f"x-amzn-ErrorType says {header}, the body says {in_body}"))
    if not isinstance(body, dict):
        problems.append(_endpoint("ER04", f"the {status} body is not a JSON object"))
        if status >= 500:
            problems.append(_endpoint("ER07", f"the {status} body is not a JSON object"))
    elif not isinstance(body.get("message", body.get("Message")), str):
        problems.append(_endpoint("ER04", f"the {status} body has no string 'message'"))
    problems += _botocore_error_problems(response)
    ctype = (response.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        problems.append(_endpoint("ER06", f"the {status} answer has Content-Type {ctype or '(none)'}"))
    return problems


def _botocore_error_problems(response: WireResponse) -> list[Problem]:
    headers = {k.lower(): v for k, v in response.headers.items()}
    no_shape: Any = None  # botocore parses an error without an output shape
    try:
        parsed = create_parser("rest-json").parse(
            {"status_code": response.status, "headers": headers, "body": response.body}, no_shape
        )
        code = str(parsed.get("Error", {}).get("Code", ""))
    except Exception as exc:  # botocore's parsers raise many kinds on bad bodies
        return [
            _endpoint("ER05", f"botocore cannot parse the {response.status} answer: {type(exc).__name__}")
        ]
    if code in contract.error_codes():
        cls = _exceptions().from_code(code)
        if cls.__name__ != code:
            return [_endpoint("ER05", f"botocore maps {code} to {cls.__name__}")]
        return []
    if code in FRONT_DOOR_STATUS:
        return []  # botocore raises ClientError with that code, as it does for AWS's front door
    return [
        _endpoint(
            "ER05",
            f"botocore sees error code {_shown(code) if code else '(empty)'}, not a modeled error: "
            "callers get a bare ClientError they cannot catch by class",
        )
    ]


def problems_by_rule(problems: Sequence[Problem]) -> dict[str, list[Problem]]:
    """Group problems by rule id (keeps order)."""
    out: dict[str, list[Problem]] = {}
    for p in problems:
        out.setdefault(p.rule, []).append(p)
    return out
