"""SigV4 verification of incoming requests (an independent implementation of the spec).

The emulator recomputes the signature of every AWS-route request from the
headers the client says it signed and compares it in constant time. It is
written from the SigV4 specification rather than with botocore's signer, so a
botocore-signed request passing here checks both sides.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["SigV4Error", "verify"]

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*"
)
MAX_SKEW_SECONDS = 15 * 60


class SigV4Error(Exception):
    """A request failed signature verification; ``code`` is the front door's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Parsed:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def _parse(authorization: str) -> _Parsed:
    m = _AUTH_RE.fullmatch(authorization.strip())
    if not m:
        raise SigV4Error(
            "IncompleteSignatureException",
            "Authorization header is not a well-formed AWS4-HMAC-SHA256 header",
        )
    parts = m.group("cred").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigV4Error("IncompleteSignatureException", "Credential scope is malformed")
    return _Parsed(parts[0], parts[1], parts[2], parts[3], m.group("signed").split(";"), m.group("sig"))


def _canonical_query(raw_query: str) -> str:
    pairs = []
    if raw_query:
        for item in raw_query.split("&"):
            key, _, value = item.partition("=")
            pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, str],
    region: str,
    service: str,
    now: float | None = None,
) -> str:
    """Verify a request's SigV4 Authorization header.

    Args:
        method: HTTP method.
        raw_path: the path and query exactly as sent.
        headers: the request headers (case-insensitive mapping).
        body: the raw body.
        credentials: access key id -> secret access key.
        region: the region the emulator serves.
        service: the expected signing name.
        now: epoch seconds (defaults to the wall clock).

    Returns:
        The access key id that signed the request.

    Raises:
        SigV4Error: missing, malformed, expired or wrong signature.
    """
    auth = headers.get("Authorization")
    if not auth:
        raise SigV4Error("MissingAuthenticationTokenException", "Missing Authentication Token")
    p = _parse(auth)
    secret = credentials.get(p.access_key)
    if secret is None:
        raise SigV4Error(
            "UnrecognizedClientException", "The security token included in the request is invalid"
        )
    if p.service != service:
        raise SigV4Error(
            "InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'"
        )
    if p.region != region:
        raise SigV4Error(
            "InvalidSignatureException", f"Credential should be scoped to a valid region: '{region}'"
        )
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SigV4Error("IncompleteSignatureException", "X-Amz-Date is missing or malformed") from None
    if amz_date[:8] != p.date:
        raise SigV4Error("InvalidSignatureException", "Credential date does not match X-Amz-Date")
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW_SECONDS:
        raise SigV4Error(
            "InvalidSignatureException",
            "Signature expired: X-Amz-Date is more than 15 minutes from the server time",
        )
    lower = {k.lower(): v for k, v in headers.items()}
    if "host" not in p.signed_headers:
        raise SigV4Error("InvalidSignatureException", "The host header must be signed")
    canonical_headers = []
    for name in p.signed_headers:
        if name not in lower:
            raise SigV4Error("InvalidSignatureException", f"Signed header {name} is missing from the request")
        canonical_headers.append(f"{name}:{' '.join(lower[name].split())}\n")
    path, _, query = raw_path.partition("?")
    payload_hash = hashlib.sha256(body).hexdigest()
    claimed = lower.get("x-amz-content-sha256")
    if claimed is not None and claimed != payload_hash:
        raise SigV4Error("InvalidSignatureException", "x-amz-content-sha256 does not match the body")
    canonical_request = "\n".join(
        [
            method.upper(),
            quote(unquote(path), safe="/~") or "/",
            _canonical_query(query),
            "".join(canonical_headers),
            ";".join(p.signed_headers),
            payload_hash,
        ]
    )
    scope = f"{p.date}/{p.region}/{p.service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), p.date), p.region), p.service), "aws4_request")
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, p.signature):
        raise SigV4Error(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided",
        )
    return p.access_key
