"""What a check works with: its :class:`Context` on the run's :class:`~conformance._session.Session`.

A check builds :class:`~conformance._http.Probe` s, sends them through its
:class:`Context` (which vets negative requests against the model, paces them,
retries throttles and keeps every exchange), and states its expectations with
:meth:`Context.expect`. The session's names are re-exported here so a check
module needs one import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Literal
from urllib.parse import quote, unquote

import anyio

from async_hi import contract
from conformance import _model
from conformance._http import Exchange, Probe, Signing, send_probe
from conformance._registry import Check
from conformance._results import Failure
from conformance._session import (
    CONFLICT,
    HARMLESS_ATTRIBUTE,
    MALFORMED,
    NOT_FOUND,
    SETTLING,
    VALIDATION,
    Abort,
    FirstWrite,
    Session,
    Skip,
    Snapshot,
    blob,
    digest,
)
from conformance._target import Settings, Target

__all__ = [
    "CONFLICT",
    "HARMLESS_ATTRIBUTE",
    "MALFORMED",
    "NOT_FOUND",
    "VALIDATION",
    "Abort",
    "Context",
    "FirstWrite",
    "Session",
    "Skip",
    "Snapshot",
    "blob",
    "digest",
]

Basis = Literal["model", "semantics"]


class Context:
    """One check's view of the run: sending, expectations, failures and notes."""

    def __init__(self, session: Session, check: Check | None) -> None:
        self.session = session
        self.check = check
        self.failures: list[Failure] = []
        self.dropped = 0
        self.notes: list[str] = []
        self.requests = 0

    # -- where -----------------------------------------------------------------

    @property
    def target(self) -> Target:
        return self.session.target

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def d(self) -> str:
        return self.target.datastore_id

    @property
    def i(self) -> str:
        return self.target.image_set_id

    def path(self, route: str, d: str | None = None, i: str | None = None) -> str:
        ds = quote(self.d if d is None else d, safe="")
        iset = quote(self.i if i is None else i, safe="")
        return f"/datastore/{ds}/imageSet/{iset}/{route}"

    def update_probe(
        self,
        label: str,
        body: bytes | Any,
        *,
        version: str | None,
        query: Sequence[tuple[str, str]] = (),
        d: str | None = None,
        i: str | None = None,
        content_type: str | None = "application/json",
        signing: Signing = Signing.SIGNED,
        raw_query: str | None = None,
        method: str = "POST",
    ) -> Probe:
        """An UpdateImageSetMetadata request (``body`` bytes as given, or JSON-encoded)."""
        raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        pairs = ((("latestVersion", version),) if version is not None else ()) + tuple(query)
        return Probe(
            operation=_model.UPDATE,
            label=label,
            path=self.path("updateImageSetMetadata", d, i),
            query=pairs,
            method=method,
            body=raw,
            content_type=content_type,
            signing=signing,
            raw_query=raw_query,
        )

    def marker_update(self, marker: str | None = None) -> dict[str, Any]:
        """A valid update body setting the harmless attribute to a marker value."""
        value = marker or self.session.next_marker()
        doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {HARMLESS_ATTRIBUTE: value}}}
        return {"DICOMUpdates": {"updatableAttributes": blob(doc)}}

    # -- sending ---------------------------------------------------------------

    async def send(
        self, probe: Probe, *, sensitive: bool = False, gate: Callable[[], Awaitable[None]] | None = None
    ) -> Exchange:
        """Send ``probe`` (paced per operation; 429s are retried a few times) and keep the exchange.

        Args:
            probe: the request.
            sensitive: the answer may hold PHI (never shown in reports).
            gate: awaited after the pacer lets the request go and just before
                it is sent (it may raise :class:`Skip` when the moment passed).
        """
        if self.session.unreachable:
            raise Abort(self.session.unreachable)
        pacer = self.session.pacer
        exchange: Exchange | None = None
        for attempt in range(5):
            await pacer.acquire(probe.operation)
            try:
                if gate is not None:
                    await gate()
                exchange = await send_probe(
                    self.session.http,
                    self.target.endpoint_url,
                    probe,
                    self.target.credentials,
                    request_timeout=self.settings.request_timeout,
                    sensitive=sensitive,
                )
            finally:
                pacer.release(probe.operation)
            self.requests += 1
            self.session.exchanges.append(exchange)
            if exchange.status != 429:
                if exchange.status is not None:
                    await pacer.on_success(probe.operation)
                return exchange
            self.session.throttles += 1
            retry_after = _retry_after(exchange)
            await pacer.on_throttle(probe.operation, retry_after)
            self.note(f"{probe.label}: throttled (429), retried")
            await anyio.sleep(retry_after if retry_after is not None else min(0.25 * 2**attempt, 8.0))
        assert exchange is not None
        return exchange

    def vet(self, probe: Probe, basis: Basis) -> bool:
        """Whether ``probe`` is what it claims: model-invalid (``model``) or model-valid (``semantics``).

        A request that is not is not sent, with a note, so the endpoint is never
        blamed for the suite's mistake.
        """
        if probe.raw_query is not None:
            split = (p.partition("=") for p in probe.raw_query.split("&") if p)
            pairs = [(unquote(k), unquote(v)) for k, _, v in split]
        else:
            pairs = list(probe.query)
        wire = _model.WireRequest(
            operation=probe.operation, method=probe.method, path=probe.path, query=pairs, body=probe.body
        )
        problems = _model.request_problems(wire)
        if basis == "model" and not problems:
            self.note(
                f"{probe.label}: not sent, the model accepts this request (it cannot blame the endpoint)"
            )
            return False
        if basis == "semantics" and problems:
            self.note(
                f"{probe.label}: not sent, the model refuses it for another reason: {'; '.join(problems)}"
            )
            return False
        return True

    async def refused(
        self,
        probe: Probe,
        statuses: Collection[int],
        codes: Collection[str] | None,
        *,
        basis: Basis = "model",
    ) -> Exchange | None:
        """Vet, send and expect a refusal; None when the probe was not sent."""
        if not self.vet(probe, basis):
            return None
        ex = await self.send(probe)
        self.expect(ex, statuses, codes)
        return ex

    # -- judging ---------------------------------------------------------------

    def expected(
        self, statuses: Collection[int], codes: Collection[str] | None
    ) -> tuple[tuple[int, ...], tuple[str, ...] | None]:
        """The statuses (after any user override) and the codes that go with them."""
        override = self.settings.expect.get(self.check.id) if self.check is not None else None
        if override is None:
            return tuple(sorted(statuses)), None if codes is None else tuple(codes)
        if all(s < 400 for s in override):
            return tuple(override), None
        allowed = [c for c in contract.error_codes() if contract.error_status(c) in override]
        allowed += [c for c, s in _model.FRONT_DOOR_STATUS.items() if s in override]
        return tuple(override), tuple(allowed)

    def expect(self, ex: Exchange, statuses: Collection[int], codes: Collection[str] | None) -> bool:
        """Record a failure unless ``ex`` answered one of ``statuses`` (and, for errors, one of ``codes``)."""
        want, want_codes = self.expected(statuses, codes)
        shown = "/".join(str(s) for s in want)
        if ex.status is None:
            self.fail(f"{ex.label}: expected {shown}, got no response ({ex.error})", ex)
            return False
        code = ex.error_code() if ex.status >= 300 else None
        if ex.status not in want:
            self.fail(f"{ex.label}: expected {shown}, got {ex.status}" + (f" {code}" if code else ""), ex)
            return False
        if want_codes is not None and ex.status >= 400 and code not in want_codes:
            self.fail(
                f"{ex.label}: status {ex.status} but error code {code or '(none)'}, "
                f"expected {' or '.join(want_codes)}",
                ex,
            )
            return False
        return True

    def fail(self, message: str, ex: Exchange | None = None) -> None:
        if len(self.failures) >= self.settings.max_failures:
            self.dropped += 1
            return
        if ex is None:
            self.failures.append(Failure(message=message))
        else:
            self.failures.append(
                Failure(message=message, request=ex.summary(), curl=ex.curl(), response=ex.response_excerpt())
            )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def require_writes(self) -> None:
        if not self.target.allow_writes:
            raise Skip("needs accepted writes on the image set: pass --allow-writes")

    # -- the image set -------------------------------------------------------------

    async def get_image_set(self, version: str | None = None) -> Exchange:
        query = (("version", version),) if version is not None else ()
        label = "GetImageSet" + (f" version {version}" if version else "")
        probe = Probe(operation="GetImageSet", label=label, path=self.path("getImageSet"), query=query)
        return await self.send(probe)

    async def snapshot(self, version: str | None = None) -> Snapshot:
        """GetImageSet, parsed; Abort when the answer is not a GetImageSet response."""
        ex = await self.get_image_set(version)
        body = ex.json_or_none()
        if ex.status != 200 or not isinstance(body, dict):
            raise Abort(f"GetImageSet of the target image set answered {_said(ex)}", ex)
        problems = [p for p in _model.output_problems("GetImageSet", body) if "unknown member" not in p]
        if problems:
            missing = [p.rsplit(" ", 1)[-1] for p in problems if "missing required member" in p]
            what = f"without {', '.join(missing)}" if missing else "; ".join(problems[:3])
            raise Abort(f"GetImageSet answered 200 {what}: is this a HealthImaging endpoint?", ex)
        return Snapshot(
            str(body["versionId"]), str(body["imageSetState"]), str(body.get("imageSetWorkflowStatus"))
        )

    async def settled(self) -> Snapshot:
        """Wait (bounded) until the image set is ACTIVE and no update is being applied."""
        deadline = time.monotonic() + self.settings.settle_timeout
        delay = 0.02
        while True:
            snap = await self.snapshot()
            if snap.state == "ACTIVE" and snap.workflow not in SETTLING:
                return snap
            if time.monotonic() >= deadline:
                raise Abort(
                    f"the image set is still {snap.state}/{snap.workflow} "
                    f"after {self.settings.settle_timeout:g} s"
                )
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    async def metadata(self, version: str | None = None) -> dict[str, Any]:
        """GetImageSetMetadata (gzip undone); Abort when it is not a JSON document."""
        query = (("version", version),) if version is not None else ()
        probe = Probe(
            operation="GetImageSetMetadata",
            label="GetImageSetMetadata" + (f" version {version}" if version else ""),
            path=self.path("getImageSetMetadata"),
            query=query,
        )
        ex = await self.send(probe, sensitive=True)
        doc = ex.json_or_none()
        if ex.status != 200 or not isinstance(doc, dict):
            raise Abort(f"GetImageSetMetadata of the target answered {_said(ex)}", ex)
        return doc

    async def write(
        self,
        label: str,
        body: bytes | Any,
        version: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> Exchange:
        """Send an update meant to be accepted (vetted as model-valid first)."""
        probe = self.update_probe(label, body, version=version, query=query, content_type=content_type)
        if not self.vet(probe, "semantics"):
            raise Abort(f"{label}: the suite built a request the model refuses (a bug in the suite)")
        return await self.send(probe)

    async def first_write(self) -> FirstWrite:
        """The run's first accepted update of the harmless attribute (made once, shared)."""
        self.require_writes()
        cached = self.session.first_write
        if isinstance(cached, FirstWrite):
            return cached
        if isinstance(cached, Abort):
            raise Abort(cached.message, cached.exchange)
        try:
            before = await self.settled()
            before_digest = digest(await self.metadata(before.version))
            marker = self.session.next_marker()
            ex = await self.write(
                f"valid update of {HARMLESS_ATTRIBUTE}", self.marker_update(marker), before.version
            )
            if ex.status != 200:
                raise Abort(f"a valid update was not accepted: {_said(ex)}", ex)
        except Abort as exc:
            self.session.first_write = exc
            raise
        first = FirstWrite(before=before, before_digest=before_digest, exchange=ex, marker=marker)
        self.session.first_write = first
        return first


def _said(ex: Exchange) -> str:
    if ex.status is None:
        return f"nothing ({ex.error})"
    code = ex.error_code() if ex.status >= 300 else None
    return f"{ex.status}" + (f" {code}" if code else "")


def _retry_after(ex: Exchange) -> float | None:
    for name in ("retry-after", "x-amz-retry-after"):
        value = ex.header(name)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                continue
            return seconds / 1000.0 if name == "x-amz-retry-after" else seconds
    return None
