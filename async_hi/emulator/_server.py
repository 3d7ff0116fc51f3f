"""``Emulator``: the server's lifecycle and its Python seeding API."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from async_hi.emulator._admin import add_admin_routes, history, seed_image_sets
from async_hi.emulator._app import RequestRecord, State, build_app, fallback_route
from async_hi.emulator._config import EmulatorConfig
from async_hi.emulator._dicom_import import ImportReport, add_to_store, read_dicom
from async_hi.emulator._guard import GuardedAppRunner, install_log_guard
from async_hi.emulator._store import ImageSet, Store

if TYPE_CHECKING:
    from async_hi._client import HealthImagingClient

__all__ = ["Emulator", "EmulatorThread", "SeededImageSets"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeededImageSets:
    """What ``Emulator.seed`` made: one datastore and its new image set ids."""

    datastore_id: str
    image_set_ids: tuple[str, ...]


class Emulator:
    """The HealthImaging emulator as an async context manager.

    Args:
        config: an ``EmulatorConfig``; or pass its fields as keywords.

    Example::

        async with Emulator(lock_seconds=0.05, quotas=None) as emu:
            seeded = emu.seed(count=3)
            print(emu.endpoint_url, seeded.image_set_ids)
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = EmulatorConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.state = State(config)
        self.app = build_app(self.state)
        add_admin_routes(self.app)
        self.app.router.add_route("*", "/{tail:.*}", fallback_route)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force (after any :meth:`reconfigure`)."""
        return self.state.config

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; raises if the port cannot be bound."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        # request lines up to 64 KiB reach our validation; anything aiohttp cannot parse is still an
        # AWS-shaped JSON 400 (GuardedAppRunner), and what it logs is capped and rate-limited
        install_log_guard()
        runner = GuardedAppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            max_line_size=65536,
            max_field_size=65536,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        server = site._server
        sockets = getattr(server, "sockets", None)
        if not sockets:
            await runner.cleanup()
            raise RuntimeError("the emulator did not come up: no listening socket")
        self._port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving and release the port (what leaving ``async with`` does)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- where it is ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (chosen when started); ``RuntimeError`` before that."""
        if self._port is None:
            raise RuntimeError("the emulator is not running; use 'async with Emulator() as emu'")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: give it to a client as ``endpoint_url``."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def region(self) -> str:
        """The region clients must sign for."""
        return self.config.region

    @property
    def access_key_id(self) -> str:
        """The access key id the emulator accepts (the first configured one)."""
        return self.config.access_key_id

    @property
    def secret_access_key(self) -> str:
        """The secret key that goes with :attr:`access_key_id`."""
        return self.config.secret_access_key

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("medical-imaging", ...)`` and friends."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }

    def client(self, **kwargs: Any) -> HealthImagingClient:
        """A ``HealthImagingClient`` for this emulator (use it with ``async with``).

        Args:
            kwargs: further ``HealthImagingClient`` arguments (limiter_config, transport, ...).
        """
        return _client_for(self.endpoint_url, self.config, **kwargs)

    # -- seeding and inspection ----------------------------------------------

    @property
    def store(self) -> Store:
        """The in-memory store of datastores, image sets and versions (for tests that look inside)."""
        return self.state.store

    @property
    def requests(self) -> list[RequestRecord]:
        """AWS requests seen so far (operation, status, time; never bodies)."""
        return list(self.state.requests)

    def create_datastore(self, name: str = "datastore") -> str:
        """Create an empty ACTIVE datastore and return its id."""
        return self.store.create_datastore(name).datastore_id

    def seed(
        self,
        count: int = 1,
        *,
        datastore_id: str | None = None,
        series: int = 2,
        instances: int = 3,
        frames: int = 1,
        primary: bool = False,
        seed: int | None = 0,
        same_study: bool = False,
    ) -> SeededImageSets:
        """Create ``count`` image sets of realistic synthetic metadata.

        Args:
            count: how many image sets.
            datastore_id: where; a new datastore when None.
            series: series per image set.
            instances: instances per series.
            frames: image frames per instance.
            primary: mark them primary image sets.
            seed: random seed (same seed, same metadata); None for fresh randomness.
            same_study: give all of them one StudyInstanceUID.
        """
        d = datastore_id or self.create_datastore()
        sets = seed_image_sets(
            self.state,
            d,
            count=count,
            series=series,
            instances=instances,
            frames=frames,
            primary=primary,
            seed=seed,
            same_study=same_study,
        )
        return SeededImageSets(d, tuple(s.image_set_id for s in sets))

    def import_dicom(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        datastore_id: str | None = None,
        primary: bool = True,
    ) -> ImportReport:
        """Import DICOM P10 files (headers only) as HealthImaging's import would.

        Args:
            paths: files, folders (searched recursively) and glob patterns.
            datastore_id: where; a new datastore when None.
            primary: False makes every image set non-primary (see ``_dicom_import``).

        Returns:
            What was imported into which image sets, and every skipped path with its reason.
        """
        d = datastore_id or self.create_datastore("imported")
        return add_to_store(self.store, d, read_dicom(paths), primary=primary)

    def image_set(self, datastore_id: str, image_set_id: str) -> ImageSet:
        """The store's image set (state, versions), settled if its LOCKED window has passed.

        Raises:
            ApiError: ResourceNotFoundException when there is none.
        """
        return self.store.image_set(datastore_id, image_set_id)

    def history(self, datastore_id: str, image_set_id: str) -> list[dict[str, Any]]:
        """Every version of an image set, oldest first, with its metadata."""
        return history(self.state, datastore_id, image_set_id)

    def reconfigure(self, **changes: Any) -> None:
        """Change the running emulator's config (quotas, faults, lock_seconds...)."""
        self.state.reconfigure(dataclasses.replace(self.config, **changes))

    def settle(self, image_set_ids: Iterable[str] | None = None) -> int:
        """End every open apply window now (or those of ``image_set_ids``); returns how many ended."""
        return self.store.settle_all(None if image_set_ids is None else frozenset(image_set_ids))

    def set_baseline(self) -> None:
        """Make the data held now (datastores, image sets, versions) what :meth:`reset` returns to."""
        self.state.set_baseline()

    def reset(self) -> None:
        """Back to the start, on the same port: no datastores (or the baseline's), an empty request
        log, the configuration it was built with (fresh quota buckets and fault stream). For tests."""
        self.state.reset()


class EmulatorThread:
    """The emulator on its own asyncio loop in a background thread, as a plain ``with``.

    For synchronous callers (boto3, the AWS CLI in a subprocess) and for
    programs on another event loop (trio). Exposes the running ``Emulator`` as
    ``.emulator``; calls into its store must go through :meth:`call`, which
    runs a function on the emulator's loop and returns its result.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.emulator = Emulator(config, **overrides)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                await self.emulator.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                await self.emulator.stop()

        asyncio.run(serve())

    def __enter__(self) -> EmulatorThread:
        self._thread = threading.Thread(target=self._main, name="async-hi-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the emulator did not come up within 30 s")
        if self._error is not None:
            raise RuntimeError("the emulator did not come up") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the emulator's loop (thread-safe access to its state)."""
        if self._loop is None:
            raise RuntimeError("the emulator thread is not running")

        async def go() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout=30)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: give it to a client as ``endpoint_url``."""
        return self.emulator.endpoint_url

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("medical-imaging", ...)`` and friends."""
        return self.emulator.client_kwargs()

    def client(self, **kwargs: Any) -> HealthImagingClient:
        """A ``HealthImagingClient`` for this emulator, usable from any event loop (trio too)."""
        return self.emulator.client(**kwargs)


def _client_for(endpoint_url: str, config: EmulatorConfig, **kwargs: Any) -> HealthImagingClient:
    from async_hi._client import HealthImagingClient

    return HealthImagingClient(
        endpoint_url=endpoint_url,
        region=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        **kwargs,
    )
