"""The HealthImaging contract as data, read from botocore's shipped service model.

Everything that needs a shape, a pattern, an enum or an error status (the
client's checks, the emulator's validation, the conformance suite) reads it
from here, and this module reads it from botocore's
``medical-imaging/2023-07-19/service-2.json``: no shape is retyped by hand.

The only hand-kept table is :data:`DEFAULT_QUOTAS`, because quotas are not
part of the service model (they come from the service quota page).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape, StructureShape
from botocore.session import get_session

__all__ = [
    "DEFAULT_QUOTAS",
    "OPERATIONS",
    "SERVICE_NAME",
    "SIGNING_NAME",
    "Quota",
    "compiled_pattern",
    "decode_blob",
    "error_codes",
    "error_status",
    "matches",
    "operation",
    "service_model",
    "shape",
    "validate_value",
]

SERVICE_NAME = "medical-imaging"
SIGNING_NAME = "medical-imaging"

#: The operations this project speaks (the emulator serves them, the client calls them).
OPERATIONS: tuple[str, ...] = (
    "UpdateImageSetMetadata",
    "GetImageSet",
    "GetImageSetMetadata",
    "ListImageSetVersions",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """A documented per-account request quota: a steady ``rate`` (requests a second) and a ``burst``.

    Args:
        rate: requests per second, > 0.
        burst: bucket capacity, >= 1.
    """

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"Quota.rate must be > 0, got {self.rate!r}")
        if self.burst < 1:
            raise ValueError(f"Quota.burst must be >= 1, got {self.burst!r}")


DEFAULT_QUOTAS: Mapping[str, Quota] = {
    "UpdateImageSetMetadata": Quota(rate=0.25, burst=1),
    "CopyImageSet": Quota(rate=0.25, burst=1),
    "DeleteImageSet": Quota(rate=0.25, burst=1),
    "GetImageSet": Quota(rate=25.0, burst=50),
    "GetImageSetMetadata": Quota(rate=50.0, burst=100),
    "ListImageSetVersions": Quota(rate=25.0, burst=50),
}
"""Documented per-account defaults (AWS HealthImaging service quotas; adjustable by AWS support)."""


@functools.cache
def service_model() -> ServiceModel:
    """botocore's medical-imaging service model (loaded once)."""
    return get_session().get_service_model(SERVICE_NAME)


def operation(name: str) -> OperationModel:
    """The operation model named ``name`` (for example ``"UpdateImageSetMetadata"``)."""
    return service_model().operation_model(name)


def shape(name: str) -> Shape:
    """The shape named ``name`` in the service model."""
    return service_model().shape_for(name)


@functools.cache
def _error_statuses() -> dict[str, int]:
    model = service_model()
    statuses: dict[str, int] = {}
    for name in model.error_shapes if hasattr(model, "error_shapes") else ():
        statuses[name.name] = int(name.metadata["error"]["httpStatusCode"])
    for op_name in model.operation_names:
        for err in model.operation_model(op_name).error_shapes:
            statuses[err.name] = int(err.metadata["error"]["httpStatusCode"])
    return statuses


def error_codes() -> tuple[str, ...]:
    """Every error code modeled by the service, sorted."""
    return tuple(sorted(_error_statuses()))


def error_status(code: str) -> int:
    """The HTTP status the model gives the error ``code``.

    Raises:
        KeyError: ``code`` is not a modeled error of the service.
    """
    return _error_statuses()[code]


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # The model's patterns are Java regexes: ASCII classes (\d, \w) and \p{ASCII}.
    return re.compile(pattern.replace(r"\p{ASCII}", r"[\x00-\x7F]"), re.ASCII)


def compiled_pattern(pattern: str) -> re.Pattern[str]:
    """A service-model ``pattern`` as a Python regex with Java's semantics (for generators and checks)."""
    return _compiled(pattern)


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a service-model ``pattern`` in full (Java semantics)."""
    return _compiled(pattern).fullmatch(value) is not None


def decode_blob(value: object) -> bytes:
    """Strictly decode a restJson1 blob (standard base64 text with canonical padding).

    Raises:
        ValueError: not a string, or not valid base64.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be base64 text, got JSON {_json_type(value)}")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("is not valid base64") from exc
    # b64decode tolerates some non-canonical forms; insist on the canonical one.
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError("is not canonical base64 (padding or trailing bits)")
    return raw


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


def validate_value(shp: Shape, value: Any, path: str) -> list[str]:
    """Check a JSON-decoded ``value`` against ``shp``'s constraints from the model.

    Returns a list of problems, each naming ``path`` and the rule broken; empty
    when the value conforms. Blob members must be base64 text; their decoded
    size is checked against ``min``/``max``. Values are never echoed (they may
    be PHI).
    """
    meta = shp.metadata
    kind = shp.type_name
    if kind == "structure":
        return _validate_structure(shp, value, path)  # type: ignore[arg-type]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {_json_type(value)}"]
        problems = []
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"{path}: shorter than {meta['min']} characters")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: longer than {meta['max']} characters")
        if "pattern" in meta and not _compiled(meta["pattern"]).fullmatch(value):
            problems.append(f"{path}: does not match pattern {meta['pattern']}")
        enum: list[str] = getattr(shp, "enum", None) or []
        if enum and value not in enum:
            problems.append(f"{path}: not one of {', '.join(enum)}")
        return problems
    if kind == "blob":
        try:
            raw = decode_blob(value)
        except ValueError as exc:
            return [f"{path}: {exc}"]
        problems = []
        if "min" in meta and len(raw) < meta["min"]:
            problems.append(f"{path}: decodes to {len(raw)} bytes, fewer than {meta['min']}")
        if "max" in meta and len(raw) > meta["max"]:
            problems.append(f"{path}: decodes to {len(raw)} bytes, more than {meta['max']}")
        return problems
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: expected an integer, got {_json_type(value)}"]
        problems = []
        if "min" in meta and value < meta["min"]:
            problems.append(f"{path}: less than {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{path}: more than {meta['max']}")
        return problems
    if kind == "boolean":
        if not isinstance(value, bool):
            return [f"{path}: expected a boolean, got {_json_type(value)}"]
        return []
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{path}: expected epoch seconds as a JSON number, got {_json_type(value)}"]
        return []
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {_json_type(value)}"]
        problems = []
        for i, item in enumerate(value):
            problems.extend(validate_value(shp.member, item, f"{path}[{i}]"))  # type: ignore[attr-defined]
        return problems
    return []


def _validate_structure(shp: StructureShape, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object, got {_json_type(value)}"]
    members = shp.members
    problems = []
    unknown = sorted(k for k in value if k not in members)
    if unknown:
        problems.append(f"{path}: unknown member(s) {', '.join(unknown)}")
    if shp.metadata.get("union"):
        present = [k for k in value if k in members]
        if len(present) != 1 or unknown:
            if not unknown:
                names = " or ".join(members)
                problems.append(f"{path}: a union needs exactly one of {names}, got {len(present)}")
            return problems
        if value[present[0]] is None:
            return [f"{path}.{present[0]}: must not be null"]
    for req in shp.required_members:
        if req not in value or value[req] is None:
            problems.append(f"{path}: missing required member {req}")
    for name, item in value.items():
        if name in members and item is not None:
            problems.extend(validate_value(members[name], item, f"{path}.{name}"))
    return problems
