"""The emulator against bad input: admin bodies, lone surrogates, malformed HTTP, log floods, dead stderr."""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from async_hi.emulator import Emulator
from async_hi.emulator._guard import LogGuard, NonBlockingHandler
from tests.conftest import RawClient

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"SECRETVALUE"


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read the answer until the server closes (blocking; run it in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"count": 1e400}', "out of range"),
        (b'{"count": NaN}', "NaN is not JSON"),
        (b'{"count": 1000000000000}', "count must be an integer from 1 to"),
        (b'{"count": "2"}', "count must be an integer"),
        (b'{"count": true}', "count must be an integer"),
        (b'{"series": 2.5}', "series must be an integer"),
        (b'{"seed": "x"}', "seed must be an integer"),
        (b'{"metadata": {"Patient": {"DICOM": {"PatientName": "\\ud800"}}}}', "lone surrogate"),
        (b'{"count": 1, "x": "\xff"}', "not UTF-8"),
    ],
)
async def test_admin_bodies_that_break_a_parser_are_400s_never_500s(
    emulator: Emulator, body: bytes, problem: str
) -> None:
    base = f"{emulator.endpoint_url}/_emulator"
    d = emulator.create_datastore()
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{base}/datastores/{d}/imageSets", content=body)
        assert r.status_code == 400, r.text
        assert problem in r.json()["message"]
        if body.startswith(b"["):
            r = await http.post(f"{base}/datastores", content=body)
            assert r.status_code == 400, r.text
    assert emulator.store.datastores[d].image_sets == {}


@pytest.mark.anyio
async def test_a_lone_surrogate_in_an_attribute_blob_is_refused(emulator: Emulator, raw: RawClient) -> None:
    seeded = emulator.seed(1)
    ds, (iset,) = seeded.datastore_id, seeded.image_set_ids
    blob = b'{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "A\\ud800B"}}}'
    body = {"DICOMUpdates": {"updatableAttributes": base64.b64encode(blob).decode()}}
    r = await raw.send(raw.url(ds, iset, "updateImageSetMetadata", "latestVersion=1"), body)
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "lone UTF-16 surrogate" in r.json()["message"]
    assert len(emulator.store.image_set(ds, iset).versions) == 1
    # a surrogate pair (an astral character) is text, and is accepted
    ok = base64.b64encode(
        b'{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "\\ud83d\\ude00"}}}'
    )
    r = await raw.send(
        raw.url(ds, iset, "updateImageSetMetadata", "latestVersion=1"),
        {"DICOMUpdates": {"updatableAttributes": ok.decode()}},
    )
    assert r.status_code == 200, r.text


MALFORMED = {
    "method 70 KB": b"G" * 70_000 + SECRET + b" / HTTP/1.1\r\n\r\n",
    "request line 70 KB": b"GET /" + b"A" * 70_000 + SECRET + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "control char in path": b"GET /" + SECRET + b"\x01 HTTP/1.1\r\n\r\n",
    "header 60 KB": b"GET / HTTP/1.1\r\nX: " + b"\x01" * 60_000 + SECRET + b"\r\n\r\n",
    "bad header name": b"GET / HTTP/1.1\r\nBad Header " + SECRET + b"\r\n\r\n",
    "bad version": b"GET / HTTP/9" + SECRET + b"\r\n\r\n",
    "bad chunk": b"POST /_emulator/datastores HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ"
    + SECRET
    + b"\r\n",
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_http_gets_an_aws_error_without_the_request_bytes_and_a_short_log(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await anyio.to_thread.run_sync(raw_exchange, emulator.port, MALFORMED[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status_line.split()[1] == "400", answer[:300]
    assert headers["x-amzn-errortype"] == "BadRequestException"
    assert headers["x-amzn-requestid"]
    assert headers["content-type"].startswith("application/json")
    assert "malformed HTTP request" in json.loads(body)["message"]
    assert SECRET not in answer
    assert len(answer) < 1000
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert SECRET.decode() not in logged
    assert len(logged) < 2000


def test_the_log_guard_caps_and_rate_limits_records() -> None:
    now = [0.0]
    guard = LogGuard(max_message=50, max_traceback=80, rate=2.0, burst=5, clock=lambda: now[0])
    logger = logging.getLogger("tests.guarded")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addFilter(guard)
    logger.addHandler(Keep())
    logger.propagate = False
    try:
        for n in range(100):
            logger.warning("bad request %d: %s", n, "X" * 10_000)
        assert len(records) == 5  # the burst, then nothing until the bucket refills
        assert all(len(r.getMessage()) < 120 for r in records)
        now[0] += 1.0  # two more tokens
        try:
            raise ValueError("Y" * 10_000)
        except ValueError:
            logger.exception("boom")
        assert len(records) == 6
        assert "95 earlier log record(s) dropped" in records[-1].getMessage()
        assert records[-1].exc_info is None
        assert records[-1].exc_text is not None
        assert len(records[-1].exc_text) < 200
    finally:
        logger.removeFilter(guard)
        logger.handlers.clear()


def test_the_non_blocking_handler_never_waits_on_a_stuck_stream() -> None:
    release = threading.Event()

    class Stuck:  # a pipe nobody reads: every write blocks
        def write(self, text: str) -> int:
            release.wait()
            return len(text)

        def flush(self) -> None:
            pass

    handler = NonBlockingHandler(Stuck(), capacity=10)  # type: ignore[arg-type]
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "message %s", ("a" * 1000,), None)
    emitter = threading.Thread(target=lambda: [handler.emit(record) for _ in range(5000)])
    emitter.start()
    emitter.join(timeout=30)
    stuck = emitter.is_alive()
    release.set()
    assert not stuck, "emit blocked on the stream"
    assert handler.dropped >= 5000 - 11


def test_a_standalone_emulator_with_a_stderr_nobody_reads_keeps_serving() -> None:
    # the emulator's stderr is a pipe this test never reads: if a log write blocked, it would hang
    child = subprocess.Popen(
        [sys.executable, "-m", "async_hi", "emulator", "--json", "--port", "0", "--no-throttle"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        port = int(info["endpoint_url"].rsplit(":", 1)[1])
        flood = b"GET /" + b"A" * 60_000 + b"\x01 HTTP/1.1\r\n\r\n"  # once logged 120 KB each
        for _ in range(30):
            assert b" 400 " in raw_exchange(port, flood)[:20]
        r = httpx.get(f"{info['endpoint_url']}/_emulator/health", timeout=10)
        assert r.json()["ok"] is True
    finally:
        child.terminate()
        child.wait(timeout=30)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
