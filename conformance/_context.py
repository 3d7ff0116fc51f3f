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
from conformance._validate import validate_request

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

#: seconds the liveness read after an unanswered request may take
_LIVENESS_TIMEOUT = 3.0


class Context:
    """One check's view of the run: sending, expectations, failures and notes."""

    def __init__(self, session: Session, check: Check | None) -> None:
        self.session = session
        self.check = check
        self.failures: list[Failure] = []
        self.dropped = 0
        self.notes: list[str] = []
        self.requests = 0
        #: updates of the target image set this context sent, by answer ("a refused write changes nothing")
        self.accepted_writes = 0
        self.refused_writes: list[Exchange] = []
        self.unanswered_writes = 0

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

        Bounded: a 429's wait is capped (``Settings.max_retry_after``) and the
        run's throttle waits share one budget (``Settings.throttle_budget``);
        past it a 429 is returned as it is. A request without an answer is
        followed by one short GetImageSet: without an answer to that too (or
        after ``Settings.max_no_answers`` unanswered requests) the endpoint
        counts as stopped and every later send raises :class:`Abort`.

        Args:
            probe: the request.
            sensitive: the answer may hold PHI (never shown in reports).
            gate: awaited after the pacer lets the request go and just before
                it is sent (it may raise :class:`Skip` when the moment passed).
        """
        session = self.session
        if session.unreachable:
            raise Abort(session.unreachable)
        pacer = session.pacer
        exchange: Exchange | None = None
        for attempt in range(5):
            await pacer.acquire(probe.operation)
            try:
                if gate is not None:
                    await gate()
                exchange = await send_probe(
                    session.http,
                    self.target.endpoint_url,
                    probe,
                    self.target.credentials,
                    request_timeout=self.settings.request_timeout,
                    sensitive=sensitive,
                )
            finally:
                pacer.release(probe.operation)
            self.requests += 1
            session.exchanges.append(exchange)
            self._count_write(exchange)
            if exchange.status is None:
                await self._no_answer(exchange)
            if exchange.status != 429:
                if exchange.status is not None:
                    await pacer.on_success(probe.operation)
                break
            session.throttles += 1
            retry_after = _retry_after(exchange)
            await pacer.on_throttle(probe.operation, retry_after)
            wait = min(
                retry_after if retry_after is not None else 0.25 * 2**attempt, self.settings.max_retry_after
            )
            if attempt == 4 or session.throttle_waited + wait > self.settings.throttle_budget:
                self.note(f"{probe.label}: throttled (429), not retried: the run's throttle budget is spent")
                break
            session.throttle_waited += wait
            self.note(f"{probe.label}: throttled (429), retried")
            await anyio.sleep(wait)
        assert exchange is not None
        return exchange

    async def _no_answer(self, exchange: Exchange) -> None:
        """After a request without an answer: is the endpoint still there? (one short GetImageSet).

        A dead endpoint ends the run after one ``request_timeout`` and one short
        read; one that leaves only some requests unanswered goes on, up to
        ``Settings.max_no_answers`` of them.
        """
        session = self.session
        session.no_answers += 1
        if session.found is None:
            return  # the preflight: no answer there is "unreachable" (the runner says so)
        if session.no_answers >= self.settings.max_no_answers:
            session.unreachable = (
                f"{self.target.endpoint_url} stopped answering: {session.no_answers} requests got no answer "
                f"(the last: {exchange.error}); the remaining checks were not run"
            )
            return
        probe = Probe(operation="GetImageSet", label="liveness: GetImageSet", path=self.path("getImageSet"))
        alive = await send_probe(
            session.http,
            self.target.endpoint_url,
            probe,
            self.target.credentials,
            request_timeout=min(self.settings.request_timeout, _LIVENESS_TIMEOUT),
        )
        session.exchanges.append(alive)
        if alive.status is None:
            session.unreachable = (
                f"{self.target.endpoint_url} stopped answering: {exchange.label!r} got no answer "
                f"({exchange.error}), nor did a GetImageSet right after it ({alive.error}); "
                "the remaining checks were not run"
            )

    def _count_write(self, exchange: Exchange) -> None:
        probe = exchange.probe
        if probe.operation != _model.UPDATE or probe.method != "POST":
            return
        parts = probe.path.strip("/").split("/")
        if len(parts) != 5 or unquote(parts[3]) != self.i:
            return
        if exchange.status is None:
            self.unanswered_writes += 1
        elif 200 <= exchange.status < 300:
            self.accepted_writes += 1
            body = exchange.json_or_none()
            made = body.get("latestVersionId") if isinstance(body, dict) else None
            if isinstance(made, str) and made.isdigit() and made not in self.session.created_versions:
                self.session.created_versions.append(made)
        else:
            self.refused_writes.append(exchange)

    def vet(self, probe: Probe, basis: Basis) -> bool:
        """Whether ``probe`` is what it claims: model-invalid (``model``) or model-valid (``semantics``).

        A request that is not is not sent, with a note, so the endpoint is never
        blamed for the suite's mistake.
        """
        problems = [p.message for p in validate_request(probe.wire())]
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
        """GetImageSet, parsed; Abort when the answer has no usable version and state.

        Only what the suite needs to go on is demanded here; every other rule
        of the answer's shape is judged by the SR checks, which see it too.
        """
        ex = await self.get_image_set(version)
        body = ex.json_or_none()
        if ex.status != 200 or not isinstance(body, dict):
            raise Abort(f"GetImageSet of the target image set answered {_said(ex)}", ex)
        got, state = body.get("versionId"), body.get("imageSetState")
        if not (isinstance(got, str) and got.isdigit() and isinstance(state, str)):
            missing = [n for n in ("versionId", "imageSetState") if n not in body]
            what = (
                f"without {', '.join(missing)}" if missing else "without a usable versionId and imageSetState"
            )
            raise Abort(f"GetImageSet answered 200 {what}: is this a HealthImaging endpoint?", ex)
        workflow = body.get("imageSetWorkflowStatus")
        return Snapshot(got, state, str(workflow), body)

    async def settled(self) -> Snapshot:
        """Wait (bounded) until the image set is ACTIVE and no update is being applied.

        The first wait that runs out ends the write phase: it raises
        :class:`Abort` with the reason (the check waiting fails), and every
        later wait raises :class:`Skip` at once with the same reason, so a
        never-settling image set costs one ``settle_timeout``, not one per check.
        """
        if self.session.stalled:
            raise Skip(f"the write phase ended: {self.session.stalled}")
        deadline = time.monotonic() + self.settings.settle_timeout
        delay = 0.02
        while True:
            snap = await self.snapshot()
            if snap.state == "ACTIVE" and snap.workflow not in SETTLING:
                return snap
            if time.monotonic() >= deadline:
                reason = (
                    f"the image set is still {snap.state}/{snap.workflow} (version {snap.version}) "
                    f"after {self.settings.settle_timeout:g} s: the write phase ends here"
                )
                self.session.stalled = reason
                raise Abort(reason)
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    async def metadata(self, version: str | None = None) -> dict[str, Any]:
        """GetImageSetMetadata (gzip undone); Abort when it is not a JSON document.

        A 409 ConflictException ("not consistent yet", evidence E2) is retried
        for up to ``min(settle_timeout, 10 s)``, as callers of the real service do.
        """
        query = (("version", version),) if version is not None else ()
        probe = Probe(
            operation="GetImageSetMetadata",
            label="GetImageSetMetadata" + (f" version {version}" if version else ""),
            path=self.path("getImageSetMetadata"),
            query=query,
        )
        deadline = time.monotonic() + min(self.settings.settle_timeout, 10.0)
        delay = 0.05
        while True:
            ex = await self.send(probe, sensitive=True)
            if ex.status != 409 or ex.error_code() not in CONFLICT or time.monotonic() >= deadline:
                break
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)
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

    async def ensure_versions(self, count: int) -> Snapshot:
        """The settled image set, with at least ``count`` versions (made by updates when writes allow)."""
        current = await self.settled()
        if int(current.version) >= count or not self.target.allow_writes:
            return current
        await self.first_write()
        current = await self.settled()
        while int(current.version) < count:
            ex = await self.write(
                f"update making version {int(current.version) + 1}", self.marker_update(), current.version
            )
            if ex.status != 200:
                raise Abort(f"a valid update was not accepted: {_said(ex)}", ex)
            current = await self.settled()
        return current

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
