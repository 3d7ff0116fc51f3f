"""An in-memory HealthImaging for unit tests: the emulator's Store on a FakeClock, with scripted faults."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import anyio.lowlevel

from async_hi import (
    ConnectError,
    FakeClock,
    ImageSetInfo,
    InternalServerError,
    LimiterConfig,
    MetadataUpdate,
    Quota,
    ResponseLostError,
    RetryPolicy,
    ThrottlingError,
    TokenBucketLimiter,
)
from async_hi._errors import ServiceError, error_class
from async_hi._events import Event, Recorder
from async_hi._retry import Caller
from async_hi.contract import DEFAULT_QUOTAS
from async_hi.emulator._seed import synthetic_metadata
from async_hi.emulator._store import ApiError, ImageSet, Store

#: what a scripted send does: "ok"; "throttle", "connect", "500", "drop", "404" (nothing applied, then
#: the error; "404" is a ResourceNotFoundException with no "not the latest" message); "lost",
#: "500-applied" (applied, then the answer is lost / a 500)
Action = str


def _service_error(
    code: str, op: str, retry_after: float | None = None, message: str | None = None
) -> ServiceError:
    cls = error_class(code)
    status = {"ThrottlingException": 429, "InternalServerException": 500}.get(code, 400)
    if code == "ConflictException":
        status = 409
    elif code == "ResourceNotFoundException":
        status = 404
    return cls(code=code, status=status, operation=op, retry_after=retry_after, service_message=message)


class FakeService:
    """Implements the resolver's UpdateOps against the emulator's Store, on virtual time."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        lock_seconds: float = 2.0,
        count: int = 1,
        caller: Caller | None = None,
        **store_options: Any,
    ) -> None:
        self.clock = clock
        self.store = Store(lock_seconds=lock_seconds, clock=clock.now, **store_options)
        #: reads go through ``caller.with_retries`` as the client's do (None: no retries)
        self.caller = caller
        self.metadata_reads = 0
        self.datastore_id = self.store.create_datastore().datastore_id
        rng = random.Random(7)
        self.ids = [
            self.store.add_image_set(
                self.datastore_id, synthetic_metadata(rng, series=2, instances=2)
            ).image_set_id
            for _ in range(count)
        ]
        self.script: list[Action] = []
        self.sent: list[str] = []  # the latestVersion of every send
        self.reads = 0
        #: runs just before a send is handled (a concurrent writer, a lock...)
        self.before_send: Callable[[int], None] | None = None

    @property
    def image_set_id(self) -> str:
        return self.ids[0]

    def image_set(self, i: str | None = None) -> ImageSet:
        return self.store.image_set(self.datastore_id, i or self.image_set_id)

    def write(self, doc: Mapping[str, Any], i: str | None = None) -> None:
        """Another writer's update (accepted now; LOCKED for lock_seconds)."""
        s = self.image_set(i)
        self.store.update(
            self.datastore_id, s.image_set_id, latest_version=s.latest.version_id, updatable=doc
        )

    async def get_image_set(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> ImageSetInfo:
        await anyio.lowlevel.checkpoint()
        self.reads += 1
        try:
            s = self.image_set(image_set_id)
            v = s.version(int(version_id) if version_id else None)
        except ApiError as exc:
            raise _service_error(exc.code, "GetImageSet", message=exc.message) from None
        state = s.state if v is s.latest else ("DELETED" if s.deleted else "ACTIVE")
        return ImageSetInfo(
            datastore_id=datastore_id,
            image_set_id=image_set_id,
            version_id=str(v.version_id),
            state=state,
            workflow_status=v.workflow_status,
            message=v.message,
        )

    async def get_image_set_metadata(
        self, datastore_id: str, image_set_id: str, *, version_id: str | None = None
    ) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            await anyio.lowlevel.checkpoint()
            self.metadata_reads += 1
            try:
                doc = self.store.metadata(
                    self.datastore_id, image_set_id, int(version_id) if version_id else None
                )
            except ApiError as exc:  # e.g. E2's 409 "not consistent yet"
                raise _service_error(exc.code, "GetImageSetMetadata", message=exc.message) from None
            return dict(doc)

        if self.caller is None:
            return await read()
        return await self.caller.with_retries("GetImageSetMetadata", image_set_id, read)

    async def send_update(self, update: MetadataUpdate, latest_version_id: str) -> Mapping[str, Any]:
        await anyio.lowlevel.checkpoint()
        self.sent.append(latest_version_id)
        if self.before_send is not None:
            self.before_send(len(self.sent))
        action = self.script.pop(0) if self.script else "ok"
        op = "UpdateImageSetMetadata"
        if action == "throttle":
            raise _service_error("ThrottlingException", op)
        if action == "connect":
            raise ConnectError(op, "could not connect (test)")
        if action == "500":
            raise _service_error("InternalServerException", op)
        if action == "drop":
            raise ResponseLostError(op, "no answer (test)")
        if action == "404":
            raise _service_error("ResourceNotFoundException", op, message="something was not found")
        try:
            s = self.store.update(
                update.datastore_id,
                update.image_set_id,
                latest_version=int(latest_version_id),
                updatable=update.updatable,
                removable=update.removable,
                revert_to=int(update.revert_to_version_id) if update.revert_to_version_id else None,
                force=update.force,
            )
        except ApiError as exc:
            raise _service_error(exc.code, op, message=exc.message) from None
        if action == "lost":
            raise ResponseLostError(op, "no answer (test)")
        if action == "500-applied":
            raise _service_error("InternalServerException", op)
        assert action == "ok", action
        return {
            "datastoreId": s.datastore_id,
            "imageSetId": s.image_set_id,
            "latestVersionId": str(s.latest.version_id),
            "imageSetState": s.state,
            "imageSetWorkflowStatus": s.latest.workflow_status,
        }

    def versions(self, i: str | None = None) -> list[tuple[int, str, str]]:
        s = self.image_set(i)
        return [(v.version_id, v.workflow_status, v.origin) for v in s.versions]


def fast_caller(
    clock: FakeClock, *, policy: RetryPolicy | None = None, events: list[Event] | None = None
) -> Caller:
    """A caller whose limiter allows 100 tps per operation (the tests are about logic, not pacing)."""
    quotas = {op: Quota(rate=100.0, burst=1) for op in DEFAULT_QUOTAS}
    hook = events.append if events is not None else None
    return Caller(
        limiter=TokenBucketLimiter(LimiterConfig(quotas=quotas, headroom=0.0), clock=clock),
        clock=clock,
        recorder=Recorder(hook),
        policy=policy or RetryPolicy(),
        rng=random.Random(0),
    )


_ = (ThrottlingError, InternalServerError)
