"""``HealthImagingClient``: the aiobotocore client's lifecycle, the four operations, typed results.

All requests go through one :class:`~async_hi._retry.Caller` (limiter, counters,
events). botocore's own retries are off (``max_attempts=1``) so the limiter
sees every attempt; reads are retried by the caller, writes by the conflict
resolver. Errors are translated into the ``async_hi`` tree in :meth:`_call`
only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import json
import math
import random
import sys
import warnings
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from async_hi._clock import Clock, SystemClock
from async_hi._conflict import Budget, Rebase, resolve_update, wait_until_applied
from async_hi._errors import map_error
from async_hi._events import EventHook, OperationStats, RateChanged, Recorder, answer_request_id
from async_hi._limiter import LimiterConfig, RateLimiter, RecentQuantile, SendSpacing, TokenBucketLimiter
from async_hi._results import ImageSetInfo, UpdateResult, VersionInfo
from async_hi._retry import SEND_AT, Caller, RetryPolicy, retries_until
from async_hi._updates import MetadataUpdate
from async_hi.contract import OPERATIONS

if TYPE_CHECKING:
    from types_aiobotocore_medical_imaging.client import HealthImagingClient as _RawClient

__all__ = ["HealthImagingClient"]

T = TypeVar("T")
_UPDATE = "UpdateImageSetMetadata"
#: the longest a burst-1 send is held back to line up with its granted time
_MAX_SEND_DELAY = 0.02
#: the longest the second send of a burst-1 operation waits for the first one's answer
_FIRST_ANSWER_WAIT = 5.0
Transport = Literal["aiohttp", "httpx"]


def _running_trio() -> bool:
    trio = sys.modules.get("trio")  # never imported here: a trio program has imported it
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _choose_transport(requested: Transport | None) -> Transport:
    """httpx under trio, aiohttp otherwise; aiohttp under trio fails here, not on every request."""
    if _running_trio():
        if requested == "aiohttp":
            raise RuntimeError(
                "transport='aiohttp' cannot run under trio (aiohttp needs asyncio); "
                "use transport='httpx', or leave transport unset to have it chosen"
            )
        return "httpx"
    return requested or "aiohttp"


class HealthImagingClient:
    """An asynchronous AWS HealthImaging client for metadata updates (use with ``async with``).

    Args:
        region: the AWS region (else the normal AWS configuration chain).
        endpoint_url: a custom endpoint (an emulator); turns botocore's
            ``runtime-`` host prefix off.
        aws_access_key_id: explicit credentials (with ``aws_secret_access_key`` and,
            for temporary ones, ``aws_session_token``); by default the normal AWS credential chain.
        aws_secret_access_key: see ``aws_access_key_id``.
        aws_session_token: see ``aws_access_key_id``.
        session: an ``AioSession`` to create the client from (profiles, custom config).
        transport: ``"aiohttp"`` or ``"httpx"`` (also runs under trio, mockable with respx);
            None (the default) picks httpx under trio and aiohttp otherwise, when the
            client is opened. aiohttp under trio is refused at once (it needs asyncio).
        limiter: a shared :class:`RateLimiter`; by default a :class:`TokenBucketLimiter`
            for this client, built from ``limiter_config``.
        limiter_config: quotas and adaptive settings of the default limiter.
        retry: retry, conflict and polling bounds.
        clock: time source for every wait.
        on_event: called with every event (see ``async_hi._events``).
        connect_timeout: per request, seconds.
        read_timeout: per request, seconds.
        max_pool_connections: HTTP connections kept by the transport.
        rng: random source for jitter (seed it for reproducible runs).

    Example::

        async with HealthImagingClient(region="us-east-1") as hi:
            update = UpdateBuilder(datastore_id, image_set_id).study(StudyDescription="CHEST").build()
            result = await hi.update_image_set_metadata(update, wait=True)
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: AioSession | None = None,
        transport: Transport | None = None,
        limiter: RateLimiter | None = None,
        limiter_config: LimiterConfig | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        on_event: EventHook | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        if transport not in (None, "aiohttp", "httpx"):
            raise ValueError(f"transport must be 'aiohttp', 'httpx' or None, got {transport!r}")
        if limiter is not None and limiter_config is not None:
            raise ValueError("give either limiter or limiter_config, not both")
        self.region = region
        self.endpoint_url = endpoint_url
        self._requested_transport = transport
        #: the transport in use (chosen when the client opens if none was asked for)
        self.transport: Transport | None = transport
        self._credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._session = session
        self.clock: Clock = clock or SystemClock()
        self._recorder = Recorder(on_event)
        if limiter is None:
            limiter = TokenBucketLimiter(
                limiter_config,
                clock=self.clock,
                scope=f"{endpoint_url or 'aws'}/{region or 'default'}",
                on_rate_change=lambda op, rate: self._recorder.emit(RateChanged(op, rate)),
            )
        self.limiter: RateLimiter = limiter
        self.retry = retry or RetryPolicy()
        self._caller = Caller(
            limiter=self.limiter, clock=self.clock, recorder=self._recorder, policy=self.retry, rng=rng
        )
        self._timeouts = (connect_timeout, read_timeout, max_pool_connections)
        self._raw: _RawClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        #: image sets with a write in progress -> None, or the writes waiting their turn (FIFO);
        #: nothing is allocated for an image set nobody else is writing
        self._writing: dict[tuple[str, str], collections.deque[anyio.Event] | None] = {}
        self._gap = limiter.send_gap if isinstance(limiter, SendSpacing) else None
        self._last_send: dict[str, float] = {}
        self._prep: dict[str, RecentQuantile] = {}
        #: burst-1 operations whose first request is still unanswered
        self._opening: dict[str, anyio.Event] = {}

    # -- lifecycle -----------------------------------------------------------

    def _config(self) -> AioConfig:
        connect, read, pool = self._timeouts
        kwargs: dict[str, Any] = {
            "retries": {
                "mode": "standard",
                "total_max_attempts": 1,
            },  # we retry: the limiter sees every attempt
            "connect_timeout": connect,
            "read_timeout": read,
            "max_pool_connections": pool,
        }
        if self.endpoint_url is not None:
            kwargs["inject_host_prefix"] = False  # else requests go to runtime-<host>
        if self.transport == "httpx":
            from aiobotocore.httpxsession import HttpxSession

            kwargs["http_session_cls"] = HttpxSession
        return AioConfig(**kwargs)

    async def __aenter__(self) -> HealthImagingClient:
        if self._raw is not None:
            raise RuntimeError("the client is already open")
        self.transport = _choose_transport(self._requested_transport)
        session = self._session or get_session()
        stack = contextlib.AsyncExitStack()
        try:
            with warnings.catch_warnings():
                # we choose the httpx package on purpose (respx mocks it; trio runs it)
                warnings.filterwarnings("ignore", message=".*prefers httpx2", category=DeprecationWarning)
                raw = await stack.enter_async_context(
                    session.create_client(
                        "medical-imaging",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=self._config(),
                        aws_access_key_id=self._credentials["aws_access_key_id"],
                        aws_secret_access_key=self._credentials["aws_secret_access_key"],
                        aws_session_token=self._credentials["aws_session_token"],
                    )
                )
        except BaseException:
            await stack.aclose()
            raise
        for op in OPERATIONS:  # buckets start (empty) now, not at the first call
            self.limiter.current_rate(op)
        # the last moment before the wire: see _pace_send
        raw.meta.events.register("before-send.medical-imaging", cast(Any, self._pace_send))
        self._raw = raw
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._raw = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def raw(self) -> _RawClient:
        """The underlying aiobotocore client (retries off; no limiter on calls made through it)."""
        if self._raw is None:
            raise RuntimeError("the client is not open; use 'async with HealthImagingClient(...) as client'")
        return self._raw

    async def _pace_send(self, **kwargs: Any) -> None:
        """Send a burst-1 operation's request at the time the limiter granted, and never two too close.

        At burst 1 the service counts *arrivals*: two requests closer than
        1/quota are a 429 however the grants were spaced. botocore takes a
        variable time (serialising, signing, other tasks running: about 1 ms,
        tens under load) between the grant and the request leaving. This hook
        runs in botocore's before-send event, after signing, and waits until
        ``grant + D``, where D is the 90th percentile of that time over the
        last 64 sends (at most 20 ms), so sends keep the grid's absolute
        spacing; and until ``send_gap`` after this client's previous send of
        the operation, so a late one never crowds the next. The first request
        of a client opens a connection after this hook (tens of ms; a TLS
        handshake on a real endpoint), so it can arrive much later than it
        left here: the second send of the operation also waits for the first
        one's answer (at most 5 s) and is spaced from that moment. Returns
        None, so botocore sends as usual.
        """
        grant = SEND_AT.get()
        if grant is None or self._gap is None:
            return
        op, at = grant
        gap = self._gap(op)
        if gap <= 0:
            return
        clock = self.clock
        now = clock.now()
        prep = self._prep.get(op)
        if prep is None:  # the first send of op: the next one waits for its answer (see above)
            prep = self._prep[op] = RecentQuantile(0.9)
            self._opening[op] = anyio.Event()
        else:
            opening = self._opening.get(op)
            if opening is not None:
                with anyio.move_on_after(_FIRST_ANSWER_WAIT):
                    await opening.wait()
                now = clock.now()
        prep.add(now - at)
        target = max(at + min(prep.value, _MAX_SEND_DELAY), self._last_send.get(op, -math.inf) + gap)
        # reserved before sleeping: a request reaching this hook meanwhile is spaced after this one
        self._last_send[op] = max(target, now)
        if target > now:
            await clock.sleep(target - now)
            self._last_send[op] = max(self._last_send[op], clock.now())

    # -- the one error boundary ----------------------------------------------

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        mapped: BaseException | None = None
        try:
            r = await fn()
        except Exception as exc:
            mapped = map_error(exc, operation)
            if mapped is None or mapped is exc:
                raise
        finally:
            if self._opening:
                opening = self._opening.pop(operation, None)
                if opening is not None:  # it arrived by now: space the next send from here
                    self._last_send[operation] = max(self._last_send[operation], self.clock.now())
                    opening.set()
        if mapped is not None:
            # outside the except block, and from None: botocore's exception (whose text may quote
            # request content) is neither chained nor kept as context; what is useful is on ``mapped``
            raise mapped from None
        if self._recorder.hook is not None:
            self._note_request_id(r)
        return r

    def _note_request_id(self, response: object) -> None:
        """Keep the answer's request id for ``RequestFinished`` (only when a hook listens)."""
        if self._recorder.hook is not None and isinstance(response, Mapping):
            meta = response.get("ResponseMetadata")
            if isinstance(meta, Mapping):
                answer_request_id.set(meta.get("RequestId"))

    # -- reads -----------------------------------------------------------------

    async def get_image_set(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> ImageSetInfo:
        """GetImageSet: the state of the image set (at ``version_id``, or the latest).

        Args:
            datastore_id: the datastore.
            image_set_id: the image set.
            version_id: a version; None for the latest.
        """
        kwargs: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version_id is not None:
            kwargs["versionId"] = version_id

        async def go() -> ImageSetInfo:
            r = await self._call("GetImageSet", lambda: self.raw.get_image_set(**kwargs))
            return ImageSetInfo.from_response(cast(Mapping[str, Any], r))

        return await self._caller.with_retries("GetImageSet", image_set_id, go)

    async def get_image_set_metadata(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> dict[str, Any]:
        """GetImageSetMetadata: the metadata document, gunzipped and parsed.

        Retried like every read, including the service's 409 "not consistent yet"
        answered right after an import or update (evidence E2).

        Args:
            datastore_id: the datastore.
            image_set_id: the image set.
            version_id: a version; None for the latest applied one.
        """
        kwargs: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version_id is not None:
            kwargs["versionId"] = version_id

        async def fetch() -> bytes:
            r = await self.raw.get_image_set_metadata(**kwargs)
            self._note_request_id(r)
            async with r["imageSetMetadataBlob"] as body:
                data: bytes = await body.read()
            return data

        async def go() -> dict[str, Any]:
            data = await self._call("GetImageSetMetadata", fetch)
            if data[:2] == b"\x1f\x8b":  # botocore leaves the gzip body as it came
                data = gzip.decompress(data)
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("GetImageSetMetadata: the document is not a JSON object")
            return doc

        return await self._caller.with_retries("GetImageSetMetadata", image_set_id, go)

    async def list_image_set_versions(self, datastore_id: str, image_set_id: str) -> list[VersionInfo]:
        """ListImageSetVersions, every page: all versions, newest first.

        Args:
            datastore_id: the datastore.
            image_set_id: the image set.
        """
        out: list[VersionInfo] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "datastoreId": datastore_id,
                "imageSetId": image_set_id,
                "maxResults": 50,
            }
            if token is not None:
                kwargs["nextToken"] = token

            async def go(kw: dict[str, Any] = kwargs) -> Mapping[str, Any]:
                r = await self._call("ListImageSetVersions", lambda: self.raw.list_image_set_versions(**kw))
                return cast(Mapping[str, Any], r)

            page = await self._caller.with_retries("ListImageSetVersions", image_set_id, go)
            out.extend(VersionInfo.from_response(item) for item in page.get("imageSetPropertiesList", []))
            token = page.get("nextToken")
            if not token:
                return out

    # -- writes ----------------------------------------------------------------

    async def send_update(self, update: MetadataUpdate, latest_version_id: str) -> Mapping[str, Any]:
        """One raw UpdateImageSetMetadata attempt (no limiter, no retries); used by the resolver."""
        kwargs: dict[str, Any] = {
            "datastoreId": update.datastore_id,
            "imageSetId": update.image_set_id,
            "latestVersionId": latest_version_id,
            "updateImageSetMetadataUpdates": update.payload(),
        }
        if update.force:
            kwargs["force"] = True
        if update.include_study_image_sets:
            kwargs["includeStudyImageSets"] = True
        r = await self._call("UpdateImageSetMetadata", lambda: self.raw.update_image_set_metadata(**kwargs))
        return cast(Mapping[str, Any], r)

    async def update_image_set_metadata(
        self,
        update: MetadataUpdate,
        *,
        wait: bool = False,
        rebase: Rebase | None = None,
        version_hint: str | None = None,
    ) -> UpdateResult:
        """UpdateImageSetMetadata, rate limited, retried and conflict-resolved.

        Writes to one image set through this client are serialised. See
        ``async_hi._conflict`` for what happens on 409, 429, 5xx and lost answers.

        Args:
            update: a validated :class:`MetadataUpdate` (see :class:`UpdateBuilder`).
            wait: poll (through the GetImageSet limiter) until the new version is
                UPDATED or UPDATE_FAILED, and return that final state and message.
            rebase: ``rebase(fresh_metadata, update)`` when the version moved:
                return the update to send now, or None to drop it. Without it the
                update is resent unchanged at the new version.
            version_hint: a version believed current (``update_many`` passes the version
                its own last write created): written at without a GetImageSet first.
                Only a hint: a stale refusal costs one read and takes the normal path.

        Raises:
            ValidationError: refused by the service as invalid (other ``ServiceError``
                subclasses for its other refusals).
            ImageSetDeletedError: the image set is DELETED.
            RetriesExhaustedError: the attempt budget ran out.
            DeadlineExceededError: the time budget ran out.
            OutcomeUnknownError: a budget ran out while a write's fate was still unknown.
        """
        if not isinstance(update, MetadataUpdate):
            raise TypeError(f"update must be a MetadataUpdate, got {type(update).__name__}")
        key = (update.datastore_id, update.image_set_id)
        if key in self._writing:  # another write to this image set is in progress: queue behind it
            waiters = self._writing[key]
            if waiters is None:
                waiters = self._writing[key] = collections.deque()
            me = anyio.Event()
            waiters.append(me)
            try:
                await me.wait()  # _next_writer handed the image set to us
            except BaseException:
                if me.is_set():
                    self._next_writer(key)
                else:
                    waiters.remove(me)
                raise
        else:
            self._writing[key] = None
        try:
            return await resolve_update(
                update, ops=self, caller=self._caller, rebase=rebase, wait=wait, version_hint=version_hint
            )
        finally:
            self._next_writer(key)

    def _next_writer(self, key: tuple[str, str]) -> None:
        waiters = self._writing.get(key)
        if waiters:
            waiters.popleft().set()  # the image set passes straight to the next write
        else:
            del self._writing[key]

    async def wait_until_applied(
        self, datastore_id: str, image_set_id: str, version_id: str, *, deadline: float | None = None
    ) -> ImageSetInfo:
        """Poll GetImageSet until ``version_id`` is no longer being applied.

        Args:
            datastore_id: the datastore.
            image_set_id: the image set.
            version_id: the version an update created.
            deadline: seconds to wait at most (default: the retry policy's deadline).

        Raises:
            DeadlineExceededError: still applying when the time ran out.
        """
        policy = self.retry if deadline is None else dataclasses.replace(self.retry, deadline=deadline)
        caller = Caller(
            limiter=self.limiter,
            clock=self.clock,
            recorder=self._recorder,
            policy=policy,
            rng=self._caller.rng,
        )
        budget = Budget(datastore_id, image_set_id, policy, self.clock)
        with retries_until(budget.start + policy.deadline):
            return await wait_until_applied(
                self,
                caller,
                datastore_id,
                image_set_id,
                version_id=version_id,
                reason="applying",
                budget=budget,
            )

    # -- observability ---------------------------------------------------------

    def stats(self) -> dict[str, OperationStats]:
        """Counters per operation (calls, 429s, 409s, retries, waits, current rate)."""
        return self._recorder.snapshot({op: self.limiter.current_rate(op) for op in OPERATIONS})

    def __repr__(self) -> str:
        where = self.endpoint_url or f"region {self.region or '(default)'}"
        state = "open" if self._raw is not None else "closed"
        return f"HealthImagingClient({where}, transport={self.transport!r}, {state})"
