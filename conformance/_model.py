"""The contract the suite checks against, as data from botocore's service model.

Everything here is derived from ``async_hi.contract`` (botocore's
``medical-imaging`` model): the wire layout of an operation (which member is a
URI label, a query parameter or the payload), its patterns, lengths, enums and
required members, and the modeled status of every error. Two small tables are
kept by hand because the model cannot hold them:

- :data:`FRONT_DOOR_STATUS`: error codes that AWS front doors (and our
  emulator) answer with before the service sees the request (authentication,
  routing, body size); they are not shapes of the service;
- :data:`SEED_PAGE_SUBSET`: what the public UpdateImageSetMetadata API page
  lists where it is older than the model; the suite checks against the model
  and reports the difference as a compatibility note.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from botocore.model import OperationModel

from async_hi import contract

__all__ = [
    "FRONT_DOOR_STATUS",
    "SEED_PAGE_SUBSET",
    "UPDATE",
    "WireRequest",
    "compatibility_notes",
    "known_status",
    "match_uri",
    "output_problems",
    "parse_strict_json",
    "request_problems",
]

UPDATE = "UpdateImageSetMetadata"

#: Codes outside the service model that an AWS front door answers with (and the
#: emulator mimics), with their status. Not shapes of the service: the model
#: cannot tell us these, so they are listed here.
FRONT_DOOR_STATUS: Mapping[str, int] = {
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 403,
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "ExpiredTokenException": 403,
    "SerializationException": 400,
    "UnknownOperationException": 404,
    "MethodNotAllowedException": 405,
    "RequestEntityTooLargeException": 413,
    "UnsupportedMediaTypeException": 415,
}

#: The public API page's older view of UpdateImageSetMetadata (the seed page),
#: where it differs from botocore's model. Used only for compatibility notes.
SEED_PAGE_SUBSET: Mapping[str, Any] = {
    "ImageSetWorkflowStatus.enum": (
        "CREATED",
        "COPIED",
        "COPYING",
        "COPYING_WITH_READ_ONLY_ACCESS",
        "COPY_FAILED",
        "UPDATING",
        "UPDATED",
        "UPDATE_FAILED",
        "DELETING",
        "DELETED",
    ),
    "Message.pattern": r"[\w -:]+",
    "DICOMAttribute.max": 10000,
}


def known_status(code: str) -> int | None:
    """The status a conformant endpoint answers ``code`` with: the model's, else the front door's."""
    try:
        return contract.error_status(code)
    except KeyError:
        return FRONT_DOOR_STATUS.get(code)


def compatibility_notes() -> list[str]:
    """How the seed API page differs from the model the suite checks against (computed, not kept)."""
    notes = []
    status = contract.shape("ImageSetWorkflowStatus")
    model_enum: list[str] = list(getattr(status, "enum", []) or [])
    seed_enum = SEED_PAGE_SUBSET["ImageSetWorkflowStatus.enum"]
    extra = [v for v in model_enum if v not in seed_enum]
    if extra:
        notes.append(
            f"imageSetWorkflowStatus: the model lists {len(model_enum)} values, the API page "
            f"{len(seed_enum)}; also accepted: {', '.join(extra)}"
        )
    pattern = contract.shape("Message").metadata.get("pattern")
    if pattern != SEED_PAGE_SUBSET["Message.pattern"]:
        notes.append(
            f"message pattern: the model says {pattern}, the API page {SEED_PAGE_SUBSET['Message.pattern']}"
        )
    blob_max = contract.shape("DICOMAttribute").metadata.get("max")
    if blob_max != SEED_PAGE_SUBSET["DICOMAttribute.max"]:
        notes.append(
            f"attribute blobs: the model allows up to {blob_max} decoded bytes, "
            f"older documentation {SEED_PAGE_SUBSET['DICOMAttribute.max']}"
        )
    return notes


@dataclass(frozen=True, slots=True, kw_only=True)
class WireRequest:
    """An HTTP request as it goes on the wire, for re-validation against the model.

    Args:
        operation: the operation the request is meant for.
        method: HTTP method.
        path: the URL path, percent-encoded as sent.
        query: the query pairs in order (repeats kept).
        body: the exact body bytes.
        headers: the request headers, any letter case (optional; only
            ``Content-Type`` is judged, and only when headers are given).
    """

    operation: str
    method: str
    path: str
    query: Sequence[tuple[str, str]]
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_strict_json(raw: bytes) -> Any:
    """Parse JSON as RFC 8259 says (no NaN/Infinity); raises ValueError otherwise."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def match_uri(op: OperationModel, path: str) -> dict[str, str] | None:
    """The URI labels of ``path`` (percent-decoded) if it matches ``op``'s route, else None."""
    template = op.http["requestUri"].split("?", 1)[0].strip("/").split("/")
    parts = path.strip("/").split("/")
    if len(parts) != len(template):
        return None
    labels: dict[str, str] = {}
    for want, got in zip(template, parts, strict=True):
        if want.startswith("{") and want.endswith("}"):
            labels[want[1:-1].rstrip("+")] = unquote(got)
        elif want != got:
            return None
    return labels


def request_problems(request: WireRequest) -> list[str]:
    """Every way ``request`` breaks its operation's input shape, per the model (empty: valid).

    The messages of :func:`conformance._validate.validate_request` (which also
    names the rule each one breaks): the method, the URI labels, the query
    parameters (type, pattern, repeats, required), and the payload (strict
    JSON, then the shape's rules). Signatures and body sizes are not judged.
    """
    from conformance._validate import validate_request

    return [p.message for p in validate_request(request)]


def output_problems(op_name: str, body: Any) -> list[str]:
    """How a decoded success body breaks ``op_name``'s output shape (types, enums, patterns, required)."""
    from conformance._validate import shape_problems

    return [p.message for p in shape_problems(op_name, body)]
