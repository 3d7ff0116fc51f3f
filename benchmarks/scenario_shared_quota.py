"""Shared quota: several processes updating one account, their limiter shared through Redis.

A private ``redis-server`` (free loopback port, temp dir) and the emulator
(UpdateImageSetMetadata at R tps, burst 1) run as child processes; P client
processes (``benchmarks/_child.py``) each update their share of N distinct
image sets, all starting at the same instant, each told the exact quota R
(as a user would). The ratio is the aggregate rate (updates the emulator
accepted per second, from the start until the last process finishes) over R.

Rows: ``RedisLimiter`` (async-hi, and async-hi before); the contrast, P
processes each with its own in-process limiter told R, unaware of the others;
and the same P processes with ``on_unavailable="local"`` (``fallback_share =
P``) while the redis-server is stopped a third of the way in: the ratio is
then the accepted rate while Redis was down, over R.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from benchmarks._common import (
    UPD,
    Code,
    Mode,
    Row,
    child_command,
    emulator,
    pick,
    progress,
    run_async,
    sends,
    server_requests,
)
from benchmarks.scenario_quota import told

NAME = "shared-quota"
TITLE = "Several processes sharing one update quota through Redis"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server; yields its URL and process. RuntimeError when it cannot run."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*args, "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not come up on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _run(
    info: dict[str, Any],
    *,
    processes: int,
    rate: float,
    code: Code,
    redis: str | None,
    stop: tuple[float, subprocess.Popen[bytes]] | None = None,
) -> dict[str, Any]:
    """P children on one emulator; ``stop``: (fraction of the ideal time, the redis-server to stop then)."""
    ids = info["image_set_ids"]
    scope = f"bench-{uuid.uuid4().hex[:8]}:{info['region']}"
    children = []
    for p in range(processes):
        spec: dict[str, Any] = {
            "kind": "ours",
            "info": info,
            "ids": ids[p::processes],
            "concurrency": 8,
            "quotas": told(rate),
            "sync": True,
            "sample": 0.25,
        }
        if redis is not None:
            spec.update(redis=redis, scope=scope, on_unavailable="local", fallback_share=processes)
        cmd, env, cwd = child_command(spec, code)
        children.append(
            subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    for child in children:  # every child imported, connected and opened its client
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a shared-quota child exited with {child.wait()} before it was ready")
    start_wall = time.time() + 0.3
    start = time.monotonic() + (start_wall - time.time())
    for child in children:  # all of them get the start line before any is waited for
        assert child.stdin is not None
        child.stdin.write(f"{start_wall!r}\n")
        child.stdin.close()
    stopped_at = None
    if stop is not None:
        fraction, server = stop
        time.sleep(max(0.0, start + fraction * (len(ids) - 1) / rate - time.monotonic()))
        server.terminate()
        server.wait(timeout=10)
        stopped_at = time.monotonic()
    results = []
    for child in children:
        out = child.stdout.read() if child.stdout else ""
        child.wait(timeout=900)
        if child.returncode != 0:
            raise RuntimeError(f"a shared-quota child exited with {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    end = max(r["end"] for r in results)
    log = run_async(server_requests(info["endpoint_url"]))
    upd = [x for x in log if x[1] == UPD]
    calls = len(upd)
    throttles = sum(x[2] == 429 for x in upd)
    m: dict[str, Any] = {
        "aggregate tps": sum(x[2] == 200 for x in upd) / (end - start),
        "429s": throttles,
        "429s per 1000 calls": 1000 * throttles / calls if calls else float("nan"),
        "failures": sum(r["failures"] for r in results),
        "processes": processes,
        "N": len(ids),
        "elapsed s": end - start,
        "ideal s": (len(ids) - 1) / rate,
    }
    if stopped_at is not None:
        down = [x for x in upd if x[0] >= stopped_at]
        m["tps while Redis down"] = sum(x[2] == 200 for x in down) / max(1e-9, end - stopped_at)
        m["429s while Redis down"] = sum(x[2] == 429 for x in down)
        m["Redis stopped at s"] = stopped_at - start
    series = {
        "sends": sends(log, start, UPD),
        "rate": [[round(r["t0"] - start + t, 4), v] for r in results for t, v in r["rate"]],
    }
    return {"figures": m, "series": series}


def run(mode: Mode) -> list[Row]:
    processes, rate, n, n_down = pick(mode, (2, 10.0, 6, 8), (3, 10.0, 24, 45), (4, 5.0, 150, 200))
    try:
        from async_hi import _redis_limiter  # noqa: F401
    except ImportError:
        return [Row(scenario=NAME, client="RedisLimiter", note="skipped: the redis extra is not installed")]
    runs: list[tuple[str, Code, bool, bool]] = [
        (f"RedisLimiter, {processes} processes", "after", True, False),
        (f"RedisLimiter before, {processes} processes", "before", True, False),
        (f"in-process limiters, {processes} processes", "after", False, False),
        (f"RedisLimiter, Redis stopped at 1/3, local fallback, {processes} processes", "after", True, True),
        (
            f"RedisLimiter before, Redis stopped at 1/3, local fallback, {processes} processes",
            "before",
            True,
            True,
        ),
    ]
    if mode != "full":
        runs = [r for r in runs if r[1] == "after" and r[2]]  # the shared ones: Redis up, then stopped
    rows = []
    for name, code, shared, down in runs:
        count = n_down if down else n
        args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={rate:g}/1", "--seed-count", str(count)]
        try:
            with (
                redis_server() as (url, server),
                emulator(*args, "--series", "1", "--instances", "1") as proc,
            ):
                got = _run(
                    proc.info,
                    processes=processes,
                    rate=rate,
                    code=code,
                    redis=url if shared else None,
                    stop=(1 / 3, server) if down else None,
                )
        except RuntimeError as exc:
            rows.append(Row(scenario=NAME, client=name, note=f"skipped: {exc}"[:300]))
            continue
        m = got["figures"]
        if down:
            ratio, of = m["tps while Redis down"] / rate, "rate while Redis down / quota"
        else:
            ratio, of = m["aggregate tps"] / rate, "aggregate rate / quota"
        row = Row(scenario=NAME, client=name, ratio=ratio, ratio_of=of, figures=m, series=got["series"])
        if code == "after" and shared and not down:
            row.target = ">= 0.97, <= 1 429 per 1000 calls"
            row.met = ratio >= 0.97 and m["429s per 1000 calls"] <= 1 and m["failures"] == 0
        elif code == "after" and down:
            row.target = ">= 0.9 (holds its share)"
            row.met = ratio >= 0.9 and m["failures"] == 0
        progress(f"  {NAME}: {name}: {ratio:.3f} ({of}), {m['429s']} 429s")
        rows.append(row)
    return rows
