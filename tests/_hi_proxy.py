"""A rewriting proxy in front of a real emulator: deliberately broken endpoints for the mutation test.

``BrokenEndpoint`` runs an Emulator and an aiohttp proxy on 127.0.0.1. Each
request passes ``mutant.before`` (which may answer itself, or rewrite the
request), goes to the emulator (re-signed with the emulator's credentials if
it was rewritten, after checking the original signature, so a rewrite never
launders an unsigned request unless the mutant says so), and the answer
passes ``mutant.after``. The emulator's product code is never edited: store
behaviour is broken by patching the running instance from the test.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from async_hi.emulator import Emulator
from async_hi.emulator._sigv4 import SigV4Error, verify
from async_hi.rawhttp import sign_headers
from conformance import Credentials, Target


@dataclass
class Req:
    """A request as the proxy saw it; hooks may rewrite any field (then it is re-signed)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: CIMultiDict[str]
    body: bytes
    changed: bool = False
    #: re-sign even if the original signature was bad (mutants that accept bad signatures)
    launder: bool = False
    #: free-form flags a ``before`` hook leaves for its ``after`` hook
    marks: set[str] = field(default_factory=set)

    @property
    def parts(self) -> list[str]:
        return self.path.strip("/").split("/")

    @property
    def op(self) -> str:
        parts = self.parts
        return parts[4] if len(parts) == 5 else ""

    @property
    def ids(self) -> tuple[str, str]:
        parts = self.parts
        return (parts[1], parts[3]) if len(parts) == 5 else ("", "")

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    def set_param(self, name: str, value: str) -> None:
        self.query = [(k, v) for k, v in self.query if k != name] + [(name, value)]
        self.changed = True

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


@dataclass
class Resp:
    """An answer on its way back; hooks may rewrite it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    def set_json(self, doc: Any) -> None:
        self.body = json.dumps(doc).encode()

    @property
    def code(self) -> str | None:
        return self.headers.get("x-amzn-errortype")


Before = Callable[[Req, Emulator], "web.Response | None"]
After = Callable[[Req, Resp, Emulator], None]


@dataclass(frozen=True)
class Mutant:
    """One deliberate violation, and the checks that must catch it (fail for MUST, warn for SHOULD)."""

    name: str
    catches: tuple[str, ...]
    before: Before | None = None
    after: After | None = None
    setup: Callable[[Emulator, Any], None] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    select: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    #: seconds every answer is held back (an honest but slower endpoint)
    delay: float = 0.0


def error(status: int, code: str, message: str = "broken endpoint") -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def current(emu: Emulator, req: Req) -> int | None:
    d, i = req.ids
    ds = emu.store.datastores.get(d)
    iset = ds.image_sets.get(i) if ds else None
    return iset.latest.version_id if iset else None


def fake_ok(req: Req, emu: Emulator) -> web.Response:
    """An endpoint claiming to have accepted an update it should have refused."""
    d, i = req.ids
    cur = current(emu, req) or 1
    now = time.time()
    body = {
        "datastoreId": d,
        "imageSetId": i,
        "latestVersionId": str(cur + 1),
        "imageSetState": "LOCKED",
        "imageSetWorkflowStatus": "UPDATING",
        "createdAt": now,
        "updatedAt": now,
    }
    return web.json_response(body, headers={"x-amzn-RequestId": str(uuid.uuid4())})


class BrokenEndpoint:
    """``async with BrokenEndpoint(mutant) as ep``: ``ep.target`` points at the proxy."""

    def __init__(self, mutant: Mutant | None, monkeypatch: Any = None) -> None:
        self.mutant = mutant
        self.monkeypatch = monkeypatch
        config = {"lock_seconds": 0.05, "quotas": None, **(mutant.config if mutant else {})}
        self.emu = Emulator(**config)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""
        self.target: Target | None = None

    async def __aenter__(self) -> BrokenEndpoint:
        await self.emu.start()
        seeded = self.emu.seed(1)
        if self.mutant and self.mutant.setup:
            self.mutant.setup(self.emu, self.monkeypatch)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.target = Target(
            endpoint_url=self.url,
            credentials=Credentials(
                access_key_id=self.emu.access_key_id,
                secret_access_key=self.emu.secret_access_key,
                region=self.emu.region,
            ),
            datastore_id=seeded.datastore_id,
            image_set_id=seeded.image_set_ids[0],
            allow_writes=True,
            emulator=True,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.emu.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        req = Req(
            method=request.method,
            path=request.rel_url.raw_path,
            query=list(request.rel_url.query.items()),
            headers=CIMultiDict(request.headers),
            body=body,
        )
        mutant = self.mutant
        if mutant and mutant.delay:
            await asyncio.sleep(mutant.delay)
        if mutant and mutant.before:
            direct = mutant.before(req, self.emu)
            if direct is not None:
                return direct
        headers = CIMultiDict(req.headers)
        if req.changed:
            headers = self._resign(request, req, body)
        for name in ("Content-Length", "Transfer-Encoding"):
            headers.popall(name, None)
        url = self._inner_url(req) if req.changed else self._inner_url(req, request.rel_url.raw_query_string)
        assert self._session is not None
        async with self._session.request(
            req.method, yarl.URL(url, encoded=True), data=io.BytesIO(req.body), headers=headers
        ) as upstream:
            raw = await upstream.read()
            resp = Resp(
                status=upstream.status,
                headers={k.lower(): v for k, v in upstream.headers.items()},
                body=raw,
            )
        if mutant and mutant.after:
            mutant.after(req, resp, self.emu)
        out = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "date", "server")
        }
        return web.Response(status=resp.status, body=resp.body, headers=out)

    def _inner_url(self, req: Req, raw_query: str | None = None) -> str:
        qs = raw_query
        if qs is None:
            qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in req.query)
        return self.emu.endpoint_url + req.path + (f"?{qs}" if qs else "")

    def _resign(self, request: web.Request, req: Req, original_body: bytes) -> CIMultiDict[str]:
        if not req.launder:
            try:
                verify(
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers,
                    body=original_body,
                    credentials=self.emu.config.credentials,
                    region=self.emu.region,
                    service="medical-imaging",
                )
            except SigV4Error:
                return CIMultiDict(request.headers)  # let the emulator refuse the original
        url = self._inner_url(req)
        base = {"Content-Type": req.headers["Content-Type"]} if "Content-Type" in req.headers else {}
        signed = sign_headers(
            req.method,
            url,
            body=req.body,
            headers=base,
            access_key_id=self.emu.access_key_id,
            secret_access_key=self.emu.secret_access_key,
            region=self.emu.region,
        )
        return CIMultiDict(signed)
