"""Raw HTTP for the suite: probes, SigV4 variants, exchanges and their curl reproductions.

The suite sends requests an SDK would refuse to build (bad ids, broken JSON,
tampered signatures), so it speaks HTTP itself through httpx and signs with
botocore's SigV4 (``async_hi.rawhttp.sign_headers``). Every request and its
answer is kept as an :class:`Exchange`; a failing check prints the exchange as
a curl command with the signature masked.
"""

from __future__ import annotations

import datetime
import enum
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpx

from async_hi.contract import SIGNING_NAME
from async_hi.rawhttp import sign_headers
from conformance._model import WireRequest
from conformance._validate import WireResponse, decoded_body, resolve_error_code

__all__ = ["Credentials", "Exchange", "Probe", "Signing", "resolve_error_code", "send_probe"]

_BODY_SHOWN = 600


class Signing(str, enum.Enum):
    """How a probe is signed."""

    SIGNED = "signed"
    UNSIGNED = "unsigned"
    TAMPERED = "tampered signature"
    WRONG_SERVICE = "wrong signing service"
    WRONG_REGION = "wrong signing region"
    EXPIRED = "X-Amz-Date 20 minutes old"
    BODY_CHANGED = "body changed after signing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What the suite signs with.

    Args:
        access_key_id: AWS access key id.
        secret_access_key: AWS secret access key (never printed).
        session_token: optional STS session token (never printed).
        region: the signing region.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str

    def __post_init__(self) -> None:
        if not self.access_key_id:
            raise ValueError("Credentials.access_key_id must not be empty")
        if not self.secret_access_key:
            raise ValueError("Credentials.secret_access_key must not be empty")
        if not self.region:
            raise ValueError("Credentials.region must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One request the suite wants to send.

    Args:
        operation: the model operation it targets (for pacing and re-validation).
        label: a short human description of the sub-case (no PHI).
        path: the URL path, percent-encoded.
        query: query pairs in order (values are encoded here).
        method: HTTP method.
        body: exact body bytes.
        content_type: the Content-Type header, or None for none.
        signing: how to sign.
        raw_query: send this query string verbatim instead of ``query``.
    """

    operation: str
    label: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    method: str = "POST"
    body: bytes = b""
    content_type: str | None = "application/json"
    signing: Signing = Signing.SIGNED
    raw_query: str | None = None

    def query_string(self) -> str:
        if self.raw_query is not None:
            return self.raw_query
        return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in self.query)

    def query_pairs(self) -> list[tuple[str, str]]:
        """The query as decoded pairs in order (repeats kept), ``raw_query`` included."""
        if self.raw_query is None:
            return list(self.query)
        split = (p.partition("=") for p in self.raw_query.split("&") if p)
        return [(unquote(k), unquote(v)) for k, _, v in split]

    def wire(self, headers: Mapping[str, str] | None = None) -> WireRequest:
        """The request as the validators see it (``headers``: as sent, when known)."""
        return WireRequest(
            operation=self.operation,
            method=self.method,
            path=self.path,
            query=self.query_pairs(),
            body=self.body,
            headers=dict(headers or {}),
        )


@dataclass(slots=True, kw_only=True)
class Exchange:
    """A request the suite sent and what came back (``status`` None: no HTTP answer)."""

    probe: Probe
    url: str
    request_headers: dict[str, str]
    sent_body: bytes
    status: int | None
    response_headers: dict[str, str]
    response_body: bytes
    error: str | None
    elapsed: float
    #: the response body may hold PHI (image set metadata): never shown
    sensitive: bool = False

    @property
    def label(self) -> str:
        return self.probe.label

    def header(self, name: str) -> str | None:
        return self.response_headers.get(name.lower())

    def wire_response(self) -> WireResponse | None:
        """The answer as the validators see it (None: there was no answer)."""
        if self.status is None:
            return None
        return WireResponse(status=self.status, headers=self.response_headers, body=self.response_body)

    def json(self) -> Any:
        """The decoded JSON body; raises ValueError when it is not JSON."""
        return decoded_body(WireResponse(status=self.status or 0, body=self.response_body))

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except (ValueError, OSError):
            return None

    def error_code(self) -> str | None:
        """The error code as botocore resolves it (header, then body ``code``, then ``__type``)."""
        return resolve_error_code(self.response_headers, self.json_or_none())

    def summary(self) -> str:
        """``POST /path -> 400 ValidationException`` (no bodies)."""
        if self.status is None:
            return f"{self.probe.method} {self.probe.path} -> no response ({self.error})"
        code = self.error_code() if self.status >= 300 else None
        return f"{self.probe.method} {self.probe.path} -> {self.status}" + (f" {code}" if code else "")

    def response_excerpt(self) -> str:
        if self.status is None:
            return f"(no response: {self.error})"
        head = f"HTTP {self.status}; " + ", ".join(
            f"{k}: {v}"
            for k, v in self.response_headers.items()
            if k in ("content-type", "x-amzn-errortype", "x-amzn-requestid", "content-encoding")
        )
        if self.sensitive:
            return head + f"\n(body: {len(self.response_body)} bytes of image set metadata, not shown)"
        text = self.response_body[:_BODY_SHOWN].decode("utf-8", "replace")
        more = f" ... ({len(self.response_body)} bytes)" if len(self.response_body) > _BODY_SHOWN else ""
        return f"{head}\n{text}{more}"

    def curl(self) -> str:
        """A curl command reproducing the request, with the signature masked."""
        parts = ["curl", "-sS", "-i", "-X", self.probe.method, shlex.quote(self.url)]
        signed = self.probe.signing is Signing.SIGNED
        comment = ""
        for name, value in self.request_headers.items():
            low = name.lower()
            if low in ("host", "content-length"):
                continue
            if low == "authorization":
                masked = _mask_authorization(value)
                if signed:
                    comment = f"# SigV4: {masked}\n"
                    continue
                value = masked
            elif low == "x-amz-security-token":
                value = "****"
            elif low == "x-amz-date" and signed:
                continue
            parts += ["-H", shlex.quote(f"{name}: {value}")]
        if signed:
            region = _scope_part(self.request_headers, 2) or "REGION"
            parts += [
                "--aws-sigv4",
                shlex.quote(f"aws:amz:{region}:{SIGNING_NAME}"),
                "--user",
                '"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"',
            ]
        body = self.sent_body
        if body:
            if len(body) <= _BODY_SHOWN:
                parts += ["--data-binary", shlex.quote(body.decode("utf-8", "replace"))]
            else:
                start = body[:80].decode("utf-8", "replace")
                parts += ["--data-binary", "@body.bin"]
                comment += f"# body.bin: {len(body)} bytes, starting {start!r}\n"
        return comment + " ".join(parts)


def _mask_authorization(value: str) -> str:
    head, sep, _sig = value.partition("Signature=")
    cred_key = _scope_access_key(value)
    masked = head + (sep + "****" if sep else "")
    if cred_key and len(cred_key) > 4:
        masked = masked.replace(cred_key, cred_key[:4] + "…")
    return masked


def _scope_access_key(auth: str) -> str | None:
    _, sep, rest = auth.partition("Credential=")
    return rest.split("/", 1)[0] if sep else None


def _scope_part(headers: Mapping[str, str], index: int) -> str | None:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    _, sep, rest = auth.partition("Credential=")
    parts = rest.split(",", 1)[0].split("/")
    return parts[index] if sep and len(parts) > index else None


def _sign(probe: Probe, url: str, creds: Credentials, headers: dict[str, str]) -> dict[str, str]:
    kwargs: dict[str, Any] = {
        "access_key_id": creds.access_key_id,
        "secret_access_key": creds.secret_access_key,
        "session_token": creds.session_token,
        "region": creds.region,
    }
    mode = probe.signing
    if mode is Signing.WRONG_SERVICE:
        kwargs["service"] = "s3"
    elif mode is Signing.WRONG_REGION:
        kwargs["region"] = "eu-west-3" if creds.region != "eu-west-3" else "ap-south-1"
    elif mode is Signing.EXPIRED:
        kwargs["at"] = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    signed = sign_headers(probe.method, url, body=probe.body, headers=headers, **kwargs)
    if mode is Signing.TAMPERED:
        auth = signed["Authorization"]
        last = auth[-1]
        signed["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")
    return signed


def _changed(body: bytes) -> bytes:
    if not body:
        return b" "
    # flip one byte inside the body, keeping its length
    i = len(body) // 2
    return body[:i] + (b"X" if body[i : i + 1] != b"X" else b"Y") + body[i + 1 :]


async def send_probe(
    http: httpx.AsyncClient,
    endpoint_url: str,
    probe: Probe,
    creds: Credentials,
    *,
    request_timeout: float,
    sensitive: bool = False,
) -> Exchange:
    """Sign ``probe`` as it asks and send it; transport failures become an exchange without status."""
    timeout = request_timeout
    qs = probe.query_string()
    url = endpoint_url.rstrip("/") + probe.path + (f"?{qs}" if qs else "")
    headers: dict[str, str] = {}
    if probe.content_type is not None and probe.body:
        headers["Content-Type"] = probe.content_type
    if probe.signing is not Signing.UNSIGNED:
        headers = _sign(probe, url, creds, headers)
    body = _changed(probe.body) if probe.signing is Signing.BODY_CHANGED else probe.body
    started = time.monotonic()
    error = f"no response within {timeout:g} s"
    # one bound for the whole exchange (httpx's own bounds are per read): a trickling answer cannot hang a run
    with anyio.move_on_after(timeout):
        try:
            request = http.build_request(
                probe.method, url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
            )
            response = await http.send(request, stream=True)
            try:
                # the bytes as sent: a gzip body stays gzip (httpx would inflate it silently)
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            pass
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            return Exchange(
                probe=probe,
                url=url,
                request_headers=headers,
                sent_body=body,
                status=response.status_code,
                response_headers={k.lower(): v for k, v in response.headers.items()},
                response_body=raw,
                error=None,
                elapsed=time.monotonic() - started,
                sensitive=sensitive,
            )
    return Exchange(
        probe=probe,
        url=url,
        request_headers=headers,
        sent_body=body,
        status=None,
        response_headers={},
        response_body=b"",
        error=error,
        elapsed=time.monotonic() - started,
        sensitive=sensitive,
    )
