"""Shared fixtures: an isolated AWS environment, the emulator, raw signed HTTP."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from async_hi.emulator import Emulator, EmulatorThread, pydicom_test_data_paths
from async_hi.rawhttp import sign_headers


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's AWS config, credentials or profile, or reaches AWS."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    empty = tmp_path_factory.getbasetemp() / "aws-empty"
    empty.mkdir(exist_ok=True)
    (empty / "config").write_text("")
    (empty / "credentials").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fast emulator: 20 ms LOCKED window, quotas off, SigV4 on."""
    async with Emulator(lock_seconds=0.02, quotas=None) as emu:
        yield emu


@pytest.fixture
def emulator_thread() -> Iterator[EmulatorThread]:
    """The same fast emulator on a background thread, for boto3, the AWS CLI and trio."""
    with EmulatorThread(lock_seconds=0.02, quotas=None) as emu:
        yield emu


@dataclass(frozen=True)
class Populated:
    """An emulator thread and the image sets a test may work on."""

    emu: EmulatorThread
    datastore_id: str
    image_set_ids: tuple[str, ...]
    source: str  # "synthetic" or "imported"


def _populate(emu: EmulatorThread, source: str) -> Populated:
    if source == "imported":
        made: Any = emu.call(lambda: emu.emulator.import_dicom(pydicom_test_data_paths()))
    else:
        made = emu.call(lambda: emu.emulator.seed(3, primary=True))
    return Populated(emu, made.datastore_id, tuple(made.image_set_ids), source)


@pytest.fixture
def imported_emulator_thread(emulator_thread: EmulatorThread) -> Populated:
    """The fast emulator thread holding pydicom's shipped test studies as primary image sets."""
    return _populate(emulator_thread, "imported")


@pytest.fixture(params=["synthetic", "imported"])
def populated_emulator_thread(request: pytest.FixtureRequest, emulator_thread: EmulatorThread) -> Populated:
    """Runs a test twice: on synthetic primary image sets, then on imported real studies."""
    return _populate(emulator_thread, request.param)


class RawClient:
    """Sends SigV4-signed raw requests (any body, any query) to the emulator."""

    def __init__(self, emu: Emulator | EmulatorThread) -> None:
        self.emu = emu.emulator if isinstance(emu, EmulatorThread) else emu
        self.http = httpx.AsyncClient(timeout=30)

    def url(self, datastore_id: str, image_set_id: str, op: str, query: str = "") -> str:
        base = f"{self.emu.endpoint_url}/datastore/{datastore_id}/imageSet/{image_set_id}/{op}"
        return f"{base}?{query}" if query else base

    async def send(
        self,
        url: str,
        body: bytes | str | Mapping[str, Any] | None = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
        content_type: str | None = "application/json",
        **sign_kwargs: Any,
    ) -> httpx.Response:
        if isinstance(body, Mapping):
            raw = json.dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body or b""
        hdrs = dict(headers or {})
        if content_type is not None and raw:
            hdrs.setdefault("Content-Type", content_type)
        if sign:
            kwargs: dict[str, Any] = {
                "access_key_id": self.emu.access_key_id,
                "secret_access_key": self.emu.secret_access_key,
                "region": self.emu.region,
            }
            kwargs.update(sign_kwargs)
            hdrs = sign_headers(method, url, body=raw, headers=hdrs, **kwargs)
        return await self.http.request(method, url, content=raw, headers=hdrs)

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def raw(emulator: Emulator) -> AsyncIterator[RawClient]:
    client = RawClient(emulator)
    yield client
    await client.aclose()
