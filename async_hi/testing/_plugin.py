"""pytest plugin: the ``hi_*`` fixtures for testing code that calls AWS HealthImaging.

Registered as the ``async_hi_testing`` pytest11 entry point, so it is there
wherever async-hi is installed, and inert: it defines fixtures and one
``pytest_fixture_setup`` wrapper that only looks at its own two async fixtures.
Nothing starts, and nothing of the emulator is imported, until a test asks for
a fixture (``-p no:async_hi_testing`` turns it off).

Fixtures:

- ``hi_emulator`` (function): the session's emulator, reset before each test
  (:class:`~async_hi.testing.EmulatorHarness`).
- ``hi_emulator_config`` (session): the ``EmulatorConfig`` the session's
  emulator is built from; override it in a ``conftest.py``.
- ``hi_emulator_session`` (session): the same emulator, not reset, for session
  fixtures that seed once and call ``set_baseline()``.
- ``hi_boto3``: a boto3 client; ``hi_aioboto``: an open aiobotocore client;
  ``hi_client``: an open ``HealthImagingClient``. All aimed at the emulator
  with its credentials and the ``runtime-`` host prefix off.

The two async fixtures run on the test's own event loop under either async
plugin: anyio's runs them when the test is an anyio test (it has
``anyio_backend``); otherwise they are handed to pytest-asyncio, on the loop
scope of the test (its ``asyncio`` marker's ``loop_scope``, else the
``asyncio_default_test_loop_scope`` setting).
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types_aiobotocore_medical_imaging.client import HealthImagingClient as AioMedicalImaging

    from async_hi._client import HealthImagingClient
    from async_hi.emulator import EmulatorConfig
    from async_hi.testing._harness import EmulatorHarness

__all__ = [
    "hi_aioboto",
    "hi_boto3",
    "hi_client",
    "hi_emulator",
    "hi_emulator_config",
    "hi_emulator_session",
    "pytest_fixture_setup",
]

_ASYNC_FIXTURES = ("hi_aioboto", "hi_client")


@pytest.fixture(scope="session")
def hi_emulator_config() -> EmulatorConfig:
    """The configuration of the session's emulator: quotas off, a 50 ms LOCKED window.

    Override this fixture (session scope) in a ``conftest.py`` for other settings.
    """
    from async_hi.emulator import EmulatorConfig
    from async_hi.testing._harness import TEST_DEFAULTS

    return EmulatorConfig(**TEST_DEFAULTS)


@pytest.fixture(scope="session")
def hi_emulator_session(hi_emulator_config: EmulatorConfig) -> Iterator[EmulatorHarness]:
    """The session's emulator, not reset: for session fixtures that seed once, then
    ``set_baseline()`` so that every test's reset starts from a fresh copy of that data."""
    from async_hi.testing._harness import EmulatorHarness

    with EmulatorHarness(hi_emulator_config) as emu:
        yield emu


@pytest.fixture
def hi_emulator(hi_emulator_session: EmulatorHarness) -> EmulatorHarness:
    """A running HealthImaging emulator, as new: one per session, reset before each test
    (to no data, or to a copy of what a session fixture seeded before ``set_baseline()``).

    For one emulator per test (its own port), override it in a ``conftest.py``::

        @pytest.fixture
        def hi_emulator(hi_emulator_config):
            with async_hi.testing.emulator(hi_emulator_config) as emu:
                yield emu
    """
    hi_emulator_session.reset()
    return hi_emulator_session


@pytest.fixture
def hi_boto3(hi_emulator: EmulatorHarness) -> Iterator[Any]:
    """A boto3 ``medical-imaging`` client aimed at ``hi_emulator`` (botocore's default retries)."""
    client = hi_emulator.boto3_client()
    try:
        yield client
    finally:
        client.close()


def _async_fixture(func: Callable[..., Any]) -> Any:
    """``pytest_asyncio.fixture`` when pytest-asyncio is installed (its strict mode asks for that
    mark), else ``pytest.fixture``; ``pytest_fixture_setup`` below adapts it per test."""
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(func)
    return pytest_asyncio.fixture(func)


@_async_fixture
async def hi_aioboto(hi_emulator: EmulatorHarness) -> AsyncIterator[AioMedicalImaging]:
    """An open aiobotocore ``medical-imaging`` client aimed at ``hi_emulator`` (async tests)."""
    async with hi_emulator.aioboto_client() as client:
        yield client


@_async_fixture
async def hi_client(hi_emulator: EmulatorHarness) -> AsyncIterator[HealthImagingClient]:
    """An open ``HealthImagingClient`` aimed at ``hi_emulator`` (see ``EmulatorHarness.client``)."""
    async with hi_emulator.client() as client:
        yield client


# -- running the async fixtures under pytest-asyncio or anyio ------------------------------------

_copies: dict[tuple[str, str | None], Callable[..., Any]] = {}


def _asyncio_test_loop_scope(item: pytest.Item) -> str | None:
    """The loop scope pytest-asyncio runs ``item`` in; None when it does not run it."""
    try:
        import pytest_asyncio
    except ImportError:
        return None
    if not pytest_asyncio.is_async_test(item):
        return None
    marker = item.get_closest_marker("asyncio")
    scope = (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")) if marker else None
    if scope is None:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # a pytest-asyncio without that setting
            scope = None
    return str(scope or "function")


def _copy(func: Callable[..., Any], loop_scope: str | None) -> Callable[..., Any]:
    """A copy of the fixture function: for pytest-asyncio on ``loop_scope``'s loop, or (None) unmarked,
    which pytest-asyncio's strict mode leaves alone and anyio runs."""
    key = (func.__name__, loop_scope)
    if key not in _copies:
        if not isinstance(func, types.FunctionType):
            raise TypeError(f"cannot copy fixture function {func!r}")
        copy = types.FunctionType(
            func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
        )
        copy.__kwdefaults__ = func.__kwdefaults__
        copy.__qualname__ = func.__qualname__
        copy.__module__ = func.__module__
        if loop_scope is not None:
            import pytest_asyncio

            pytest_asyncio.fixture(copy, loop_scope=loop_scope)  # type: ignore[call-overload]  # marks it
        _copies[key] = copy
    return _copies[key]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    func = fixturedef.func
    if fixturedef.argname not in _ASYNC_FIXTURES or getattr(func, "__module__", None) != __name__:
        return (yield)
    if "anyio_backend" in request.fixturenames:
        fixturedef.func = _copy(func, None)  # anyio's own hook runs it on the test's runner
    else:
        node = request.node
        loop_scope = _asyncio_test_loop_scope(node) if isinstance(node, pytest.Item) else None
        if loop_scope is None:
            opener = "client" if fixturedef.argname == "hi_client" else "aioboto_client"
            pytest.fail(
                f"{fixturedef.argname} is an async fixture: request it from an async test run by "
                "pytest-asyncio (@pytest.mark.asyncio) or anyio (@pytest.mark.anyio); synchronous code "
                f"can open one itself with hi_emulator.{opener}()",
                pytrace=False,
            )
        fixturedef.func = _copy(func, loop_scope)
    try:
        return (yield)
    finally:
        fixturedef.func = func
