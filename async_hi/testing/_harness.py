"""``EmulatorHarness``: the emulator as a test double for code that calls HealthImaging.

The emulator runs on its own event loop in a background thread (``EmulatorThread``),
so one instance serves synchronous tests (boto3), asyncio and trio tests alike,
and can live for a whole session. Every method is synchronous and thread-safe:
it runs its work on the emulator's loop and returns copies.

Per test, :meth:`reset` puts it back to just after start in one call to the
emulator's loop (no datastores, an empty call log, the configuration it was
built with); the ``hi_emulator`` fixture does this before each test.

Knobs (:meth:`configure`) change the running emulator until the next reset:
quotas, the LOCKED window, fault rates with their seed, and any other
``EmulatorConfig`` field. :meth:`settle` ends every open apply window at once,
so a test never sleeps for one. :meth:`concurrent_update` makes another writer
update an image set right after the code under test has read it, which is how
a version conflict is produced on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import enum
import os
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import web

from async_hi.contract import OPERATIONS, Quota
from async_hi.document import check_document
from async_hi.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorThread,
    FaultConfig,
    ImportReport,
    SeededImageSets,
)
from async_hi.emulator._app import _ROUTES
from async_hi.emulator._store import ApiError, ImageSet
from async_hi.testing._records import Call, ImageSetVersion, matches

if TYPE_CHECKING:
    from aiobotocore.session import AioSession, ClientCreatorContext
    from types_aiobotocore_medical_imaging.client import HealthImagingClient as AioMedicalImaging

    from async_hi._client import HealthImagingClient

__all__ = ["TEST_DEFAULTS", "EmulatorHarness"]

T = TypeVar("T")

#: How the test emulator differs from ``EmulatorConfig()``'s defaults (our choice): quotas off,
#: so tests run at full speed until one turns a quota on; a 50 ms LOCKED window, short but
#: long enough that two writes in a row still meet it.
TEST_DEFAULTS: Mapping[str, Any] = {"quotas": None, "lock_seconds": 0.05}
"""The ``EmulatorConfig`` fields tests start from: quotas off, a 50 ms LOCKED window."""


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


@dataclass(slots=True)
class _Interleaved:
    """Another writer's update, applied right after a matching call is answered."""

    operation: str
    image_set_id: str
    updatable: Mapping[str, Any] | None
    removable: Mapping[str, Any] | None
    force: bool


class EmulatorHarness:
    """A HealthImaging emulator for tests, with seeding, knobs and assertions.

    Use it as a context manager (``with async_hi.testing.emulator() as emu:``) or
    through the pytest fixture ``hi_emulator``.

    Args:
        config: the emulator's configuration; by default ``EmulatorConfig`` with
            :data:`TEST_DEFAULTS` (quotas off, 50 ms LOCKED window).
        overrides: ``EmulatorConfig`` fields, applied on top.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = EmulatorConfig(**{**TEST_DEFAULTS, **overrides})
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self._thread = EmulatorThread(config)
        self._loop_ident: int | None = None
        self._pending: list[_Interleaved] = []
        self._errors: list[str] = []
        self._datastore_id: str | None = None
        self._seeds = 0
        self._boto3_session: Any = None
        self._aio_session: AioSession | None = None
        self._thread.emulator.app.on_response_prepare.append(self._after_answer)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start serving (on a free port unless the config names one)."""
        self._thread.__enter__()
        self._loop_ident = self._thread.call(threading.get_ident)

    def stop(self) -> None:
        """Stop the emulator and its thread (what leaving ``with`` does)."""
        self._thread.__exit__(None, None, None)
        self._loop_ident = None

    def __enter__(self) -> EmulatorHarness:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the emulator's loop and return its result (direct access to its state)."""
        if self._loop_ident is None:
            raise RuntimeError("the emulator is not running; use 'with async_hi.testing.emulator() as emu'")
        if threading.get_ident() == self._loop_ident:
            return fn()
        return self._thread.call(fn)

    def set_baseline(self) -> None:
        """Make the data held now what :meth:`reset` returns to: seed or import once per session,
        then each test starts from a fresh copy of it."""
        self.call(self._thread.emulator.set_baseline)

    def reset(self) -> None:
        """Back to the start, on the same port: no datastores or image sets (or a copy of the
        :meth:`set_baseline` ones), an empty call log, no pending :meth:`concurrent_update`,
        the configuration it was built with."""

        def go() -> None:
            self._thread.emulator.reset()
            self._pending.clear()

        self.call(go)
        self._errors.clear()
        self._datastore_id = None
        self._seeds = 0

    # -- where it is and how to reach it ----------------------------------------

    @property
    def emulator(self) -> Emulator:
        """The running ``Emulator`` itself; touch its state only inside :meth:`call`."""
        return self._thread.emulator

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force now (after any :meth:`configure`)."""
        return self._thread.emulator.config

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: give it to a client as ``endpoint_url``."""
        return self._thread.endpoint_url

    @property
    def region(self) -> str:
        """The region clients must sign for."""
        return self.config.region

    @property
    def access_key_id(self) -> str:
        """The access key id the emulator accepts."""
        return self.config.access_key_id

    @property
    def secret_access_key(self) -> str:
        """The secret key that goes with :attr:`access_key_id`."""
        return self.config.secret_access_key

    def client_kwargs(self) -> dict[str, str]:
        """``endpoint_url``, ``region_name`` and credentials, for ``boto3.client("medical-imaging", ...)``."""
        return self._thread.client_kwargs()

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS SDK or CLI in a subprocess at this emulator.

        ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` (the service-specific endpoint setting),
        ``AWS_DISABLE_HOST_PREFIX_INJECTION=true`` (no ``runtime-`` prefix), the region and
        the emulator's credentials.
        """
        return {
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": self.endpoint_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def boto3_client(self, **config: Any) -> Any:
        """A boto3 ``medical-imaging`` client for this emulator (host prefix off).

        Args:
            config: further ``botocore.config.Config`` settings (``retries=...``...).
        """
        import boto3  # type: ignore[import-untyped]  # a test dependency without stubs
        from botocore.config import Config

        if self._boto3_session is None:  # one session: its loaded service model is reused
            self._boto3_session = boto3.session.Session()
        return self._boto3_session.client(
            "medical-imaging", config=Config(inject_host_prefix=False, **config), **self.client_kwargs()
        )

    def aioboto_client(self, **config: Any) -> contextlib.AbstractAsyncContextManager[AioMedicalImaging]:
        """An aiobotocore ``medical-imaging`` client context for this emulator (``async with``).

        Under trio (no asyncio loop running) it uses aiobotocore's httpx session
        (without aiobotocore's warning that it prefers httpx2).

        Args:
            config: further ``aiobotocore.config.AioConfig`` settings.
        """
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        if not _on_asyncio() and "http_session_cls" not in config:
            from aiobotocore.httpxsession import HttpxSession

            config["http_session_cls"] = HttpxSession
        if self._aio_session is None:
            self._aio_session = get_session()
        creator: ClientCreatorContext[AioMedicalImaging] = self._aio_session.create_client(  # type: ignore[call-overload]
            "medical-imaging", config=AioConfig(inject_host_prefix=False, **config), **self.client_kwargs()
        )
        return _quietly_entered(creator)

    def client(self, **kwargs: Any) -> HealthImagingClient:
        """Our ``HealthImagingClient`` for this emulator (``async with``), set up for tests.

        Its limiter allows 1000 requests/s per operation, so the emulator's quotas
        and faults decide what is throttled; its retries back off from 10 ms and
        poll a LOCKED image set from 10 ms. Any argument overrides these
        (``limiter_config=LimiterConfig()`` for the real default quotas). Under
        trio it uses the httpx transport.
        """
        from async_hi import LimiterConfig, RetryPolicy

        kwargs.setdefault(
            "limiter_config",
            LimiterConfig(quotas={op: Quota(rate=1000.0, burst=100) for op in OPERATIONS}, headroom=0.0),
        )
        kwargs.setdefault(
            "retry",
            RetryPolicy(base_delay=0.01, max_delay=0.25, poll_base=0.01, poll_max=0.1, deadline=60.0),
        )
        if not _on_asyncio():
            kwargs.setdefault("transport", "httpx")
        return self._thread.client(**kwargs)

    # -- seeding ---------------------------------------------------------------

    @property
    def datastore_id(self) -> str:
        """This test's datastore, made on first use; seeding goes here unless told otherwise."""
        if self._datastore_id is None:
            self._datastore_id = self.create_datastore("test")
        return self._datastore_id

    def create_datastore(self, name: str = "datastore") -> str:
        """Create an empty ACTIVE datastore and return its id."""
        return self.call(lambda: self._thread.emulator.create_datastore(name))

    def seed(
        self,
        count: int = 1,
        *,
        series: int = 2,
        instances: int = 3,
        frames: int = 1,
        primary: bool = False,
        same_study: bool = False,
        seed: int | None = None,
        datastore_id: str | None = None,
    ) -> SeededImageSets:
        """Create ``count`` image sets of realistic synthetic metadata; returns their ids.

        Args:
            count: how many image sets.
            series: series per image set.
            instances: instances per series.
            frames: frames per instance.
            primary: make them primary image sets (patient- and series-level updates refused).
            same_study: give them one StudyInstanceUID (the image sets of one study).
            seed: random seed of the metadata; by default 0, 1, 2... per call within a test,
                so a test's data is the same on every run and no two calls collide.
            datastore_id: where; this test's :attr:`datastore_id` by default.
        """
        d = datastore_id or self.datastore_id
        if seed is None:
            seed, self._seeds = self._seeds, self._seeds + 1
        chosen = seed
        return self.call(
            lambda: self._thread.emulator.seed(
                count,
                datastore_id=d,
                series=series,
                instances=instances,
                frames=frames,
                primary=primary,
                seed=chosen,
                same_study=same_study,
            )
        )

    def add_image_set(
        self, metadata: Mapping[str, Any], *, primary: bool = False, datastore_id: str | None = None
    ) -> str:
        """Create one image set whose version 1 is ``metadata`` (its ids filled in); returns its id."""
        d = datastore_id or self.datastore_id
        doc = copy.deepcopy(dict(metadata))
        made = self.call(lambda: self._thread.emulator.store.add_image_set(d, doc, primary=primary))
        return made.image_set_id

    def import_dicom(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        primary: bool = True,
        datastore_id: str | None = None,
    ) -> ImportReport:
        """Import DICOM P10 files (headers only) as HealthImaging would; ``.image_set_ids`` are the ids.

        Args:
            paths: files, folders (searched recursively) and glob patterns.
            primary: False makes every image set non-primary.
            datastore_id: where; this test's :attr:`datastore_id` by default.
        """
        d = datastore_id or self.datastore_id
        chosen = list(paths)
        return self.call(lambda: self._thread.emulator.import_dicom(chosen, datastore_id=d, primary=primary))

    def delete(self, image_set_id: str, *, datastore_id: str | None = None) -> None:
        """Make an image set DELETED: reads show it so, every write gets 409 ConflictException."""

        def go() -> None:
            image_set = self._find(image_set_id, datastore_id)
            if image_set.locked_until is not None:
                raise RuntimeError("the image set is LOCKED by an update in progress; settle() it first")
            image_set.deleted = True

        self.call(go)

    def fail_next_apply(
        self, image_set_id: str, message: str = "Injected apply failure", *, datastore_id: str | None = None
    ) -> None:
        """The next update accepted for this image set ends UPDATE_FAILED with ``message``."""

        def go() -> None:
            self._find(image_set_id, datastore_id).fail_next_apply = message

        self.call(go)

    # -- other writers ---------------------------------------------------------

    def update(
        self,
        image_set_id: str,
        *,
        updatable: Mapping[str, Any] | None = None,
        removable: Mapping[str, Any] | None = None,
        force: bool = False,
        datastore_id: str | None = None,
    ) -> str:
        """Another writer updates the image set now (at its current version); returns the new version id.

        The update is checked and applied as a request would be: the image set is
        LOCKED for the configured window (or until :meth:`settle`).

        Raises:
            ValueError: the service would refuse it (the reason, without values).
        """

        def go() -> str:
            image_set = self._find(image_set_id, datastore_id)
            return self._write(image_set, updatable, removable, force)

        return self.call(go)

    def concurrent_update(
        self,
        image_set_id: str,
        *,
        updatable: Mapping[str, Any] | None = None,
        removable: Mapping[str, Any] | None = None,
        after: str = "GetImageSet",
        force: bool = False,
    ) -> None:
        """Another writer updates the image set right after the next successful ``after`` call on it.

        The update lands after the emulator has answered that call and before the
        client receives the answer, so a client that read the version and then
        writes finds it stale (a deterministic version conflict). Once only.
        The documents are checked now; should the update still be refused when
        it lands (the image set DELETED meanwhile), the next harness call raises.

        Args:
            image_set_id: the image set.
            updatable: the other writer's ``updatableAttributes`` document.
            removable: the other writer's ``removableAttributes`` document.
            after: the operation whose answer it follows (any of the four).
            force: the other writer sends ``force=true``.
        """
        if after not in OPERATIONS:
            raise ValueError(f"after must be one of {', '.join(OPERATIONS)}, got {after!r}")
        if updatable is None and removable is None:
            raise ValueError("concurrent_update needs updatable or removable")
        item = _Interleaved(after, image_set_id, updatable, removable, force)

        def go() -> None:
            image_set = self._find(image_set_id, None)
            problems: list[str] = []
            for kind, doc in (("updatable", updatable), ("removable", removable)):
                if doc is not None:
                    problems += check_document(
                        doc,
                        kind=kind,  # type: ignore[arg-type]
                        force=force,
                        primary=image_set.is_primary,
                        metadata=image_set.applied_metadata(),
                    )
            if problems:
                raise ValueError("the service would refuse this update: " + "; ".join(problems))
            self._pending.append(item)

        self.call(go)

    async def _after_answer(self, request: web.Request, response: web.StreamResponse) -> None:
        if not self._pending or not 200 <= response.status < 300:
            return
        operation = _ROUTES.get(request.match_info.get("op", ""))
        isid = request.match_info.get("imageSetId")
        for item in self._pending:
            if item.operation == operation and item.image_set_id == isid:
                self._pending.remove(item)
                try:
                    image_set = self._find(isid, request.match_info.get("datastoreId"))
                    self._write(image_set, item.updatable, item.removable, item.force)
                except (ValueError, LookupError) as exc:
                    self._errors.append(f"concurrent_update of {isid} after {operation} failed: {exc}")
                return

    def _write(
        self,
        image_set: ImageSet,
        updatable: Mapping[str, Any] | None,
        removable: Mapping[str, Any] | None,
        force: bool,
    ) -> str:
        store = self._thread.emulator.store
        try:
            done = store.update(
                image_set.datastore_id,
                image_set.image_set_id,
                latest_version=image_set.latest.version_id,
                updatable=copy.deepcopy(updatable),
                removable=copy.deepcopy(removable),
                force=force,
            )
        except ApiError as exc:
            raise ValueError(f"{exc.code}: {exc.message}") from None
        return str(done.latest.version_id)

    # -- knobs -----------------------------------------------------------------

    def configure(
        self,
        *,
        quotas: Mapping[str, Quota] | _Unset | None = _UNSET,
        lock_seconds: float | _Unset = _UNSET,
        faults: FaultConfig | _Unset | None = _UNSET,
        stale_version_error: Literal["not-found", "conflict"] | _Unset = _UNSET,
        not_consistent_reads: bool | _Unset = _UNSET,
        record_values: bool | _Unset = _UNSET,
        **config: Any,
    ) -> None:
        """Change the running emulator until the next :meth:`reset` (the next test).

        Args:
            quotas: operation -> ``Quota`` answered with 429 beyond it (operations not
                listed are not throttled); None turns throttling off.
            lock_seconds: how long an accepted update keeps the image set LOCKED;
                ``math.inf`` keeps it LOCKED until :meth:`settle`.
            faults: seeded fault injection (``FaultConfig(seed=..., throttle_rate=...)``);
                None turns it off. The stream starts again from its seed.
            stale_version_error: how a write naming a version that is not the latest is
                refused: ``"not-found"`` (404 ResourceNotFoundException, what the real
                service answers) or ``"conflict"`` (409 ConflictException, what the API
                reference documents); a client must handle both.
            not_consistent_reads: GetImageSetMetadata of a version still being applied
                answers 409 "not consistent yet" (on by default) or the previous content.
            record_values: keep each update's decoded documents in the call log.
            config: any other ``EmulatorConfig`` field (``verify_sigv4``...).

        Raises:
            ValueError, TypeError: a value ``EmulatorConfig`` refuses, or an unknown field.
        """
        changes = dict(config)
        if not isinstance(quotas, _Unset):
            changes["quotas"] = None if quotas is None else dict(quotas)
        if not isinstance(lock_seconds, _Unset):
            changes["lock_seconds"] = lock_seconds
        if not isinstance(faults, _Unset):
            changes["faults"] = faults if faults is not None else FaultConfig()
        if not isinstance(stale_version_error, _Unset):
            changes["stale_version_error"] = stale_version_error
        if not isinstance(not_consistent_reads, _Unset):
            changes["not_consistent_reads"] = not_consistent_reads
        emulator = self._thread.emulator
        if changes:
            dataclasses.replace(emulator.config, **changes)  # validate here, in the caller's thread
            self.call(lambda: emulator.reconfigure(**changes))
        if not isinstance(record_values, _Unset):
            flag = bool(record_values)

            def go() -> None:
                emulator.state.record_values = flag

            self.call(go)

    def settle(self, *image_set_ids: str) -> int:
        """End every open apply window now (or only those of ``image_set_ids``), as if its time had
        come: each pending update becomes UPDATED (or UPDATE_FAILED). Returns how many ended."""
        ids = image_set_ids or None
        return self.call(lambda: self._thread.emulator.settle(ids))

    # -- assertions ------------------------------------------------------------

    def calls(
        self,
        operation: str | None = None,
        *,
        status: int | Collection[int] | None = None,
        error: str | None = None,
        image_set_id: str | None = None,
    ) -> int:
        """How many AWS calls match: ``calls("UpdateImageSetMetadata", status=200) == 3``.

        Args:
            operation: the operation name; any when None.
            status: an HTTP status or several (``(404, 409)``); 0 for a dropped connection.
            error: the error type (``"ConflictException"``).
            image_set_id: calls on this image set only.
        """
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
        records = self.call(lambda: list(self._thread.emulator.state.requests))
        return sum(matches(r, operation, status, error, image_set_id) for r in records)

    def call_log(
        self,
        operation: str | None = None,
        *,
        status: int | Collection[int] | None = None,
        error: str | None = None,
        image_set_id: str | None = None,
    ) -> list[Call]:
        """The matching calls, oldest first (same filters as :meth:`calls`)."""
        records = self.call(lambda: list(self._thread.emulator.state.requests))
        return [Call.from_record(r) for r in records if matches(r, operation, status, error, image_set_id)]

    def history(self, image_set_id: str, *, datastore_id: str | None = None) -> list[ImageSetVersion]:
        """Every version of the image set, oldest first, with its metadata (expired apply windows
        are finished first, as any read would)."""

        def go() -> list[ImageSetVersion]:
            s = self._find(image_set_id, datastore_id)
            return [
                ImageSetVersion.from_version(
                    v, state=s.state if v is s.latest else ("DELETED" if s.deleted else "ACTIVE")
                )
                for v in s.versions
            ]

        return self.call(go)

    def metadata(
        self, image_set_id: str, *, version: str | int | None = None, datastore_id: str | None = None
    ) -> dict[str, Any]:
        """The metadata document GetImageSetMetadata would return (a copy): the last applied one,
        or that of ``version``."""

        def go() -> dict[str, Any]:
            s = self._find(image_set_id, datastore_id)
            doc = s.applied_metadata() if version is None else s.version(int(version)).metadata
            return copy.deepcopy(doc)

        return self.call(go)

    def state(self, image_set_id: str, *, datastore_id: str | None = None) -> str:
        """``ACTIVE``, ``LOCKED`` or ``DELETED``."""
        return self.call(lambda: self._find(image_set_id, datastore_id).state)

    def _find(self, image_set_id: str, datastore_id: str | None) -> ImageSet:
        """The image set (settled), looked up in every datastore unless one is named. Emulator loop only."""
        self._raise_errors()
        store = self._thread.emulator.store
        if datastore_id is not None:
            try:
                return store.image_set(datastore_id, image_set_id)
            except ApiError:
                raise LookupError(f"no image set {image_set_id} in datastore {datastore_id}") from None
        for d, ds in store.datastores.items():
            if image_set_id in ds.image_sets:
                return store.image_set(d, image_set_id)
        raise LookupError(f"no image set {image_set_id} in the emulator")

    def _raise_errors(self) -> None:
        if self._errors:
            problem = self._errors.pop(0)
            raise RuntimeError(problem)

    def __repr__(self) -> str:
        where = self.endpoint_url if self._loop_ident is not None else "not running"
        return f"<EmulatorHarness {where}>"


@contextlib.asynccontextmanager
async def _quietly_entered(
    creator: ClientCreatorContext[AioMedicalImaging],
) -> AsyncIterator[AioMedicalImaging]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*prefers httpx2", category=DeprecationWarning)
        client = await creator.__aenter__()
    try:
        yield client
    except BaseException as exc:
        await creator.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        await creator.__aexit__(None, None, None)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def emulator(config: EmulatorConfig | None = None, **overrides: Any) -> EmulatorHarness:
    """A test emulator for unittest and scripts: ``with async_hi.testing.emulator() as emu:``.

    Args:
        config: the emulator's configuration; by default quotas off and a 50 ms LOCKED window.
        overrides: ``EmulatorConfig`` fields (``lock_seconds=0.01``, ``quotas=DEFAULT_QUOTAS``...).
    """
    return EmulatorHarness(config, **overrides)
