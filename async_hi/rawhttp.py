"""Sign raw HTTP requests with botocore's SigV4, for requests an SDK would refuse to send.

The conformance suite and the tests use it to send malformed bodies, bad
query strings and tampered signatures to an endpoint, signed exactly as an
AWS SDK signs.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from async_hi.contract import SIGNING_NAME

__all__ = ["sign_headers"]


def sign_headers(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    region: str,
    service: str = SIGNING_NAME,
    at: datetime.datetime | None = None,
) -> dict[str, str]:
    """The headers to send with a SigV4-signed request (Authorization, X-Amz-Date, Host...).

    Args:
        method: HTTP method.
        url: the full URL, query string included, exactly as it will be sent.
        body: the exact body bytes.
        headers: extra headers to sign (for example Content-Type).
        access_key_id: credentials.
        secret_access_key: credentials.
        session_token: optional STS token.
        region: the signing region.
        service: the signing name (``medical-imaging``).
        at: sign as of this UTC time (to make expired signatures); now by default.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    creds = Credentials(access_key_id, secret_access_key, session_token)
    if at is None:
        SigV4Auth(creds, service, region).add_auth(request)
    else:
        _SigV4At(creds, service, region, at).add_auth(request)
    return {k: v for k, v in request.headers.items()}


class _SigV4At(SigV4Auth):
    """SigV4 as of a given time (botocore's signer reads the wall clock)."""

    def __init__(self, creds: Credentials, service: str, region: str, at: datetime.datetime) -> None:
        super().__init__(creds, service, region)
        self._at = at.astimezone(datetime.timezone.utc) if at.tzinfo else at

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._at.strftime("%Y%m%dT%H%M%SZ")
        self._modify_request_before_signing(request)  # type: ignore[attr-defined]
        canonical = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical)
        signature = self.signature(string_to_sign, request)
        self._inject_signature_to_request(request, signature)  # type: ignore[attr-defined]
