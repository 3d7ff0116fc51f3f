"""Shared quota: several processes updating one account, their limiter shared through Redis.

A private ``redis-server`` (free loopback port, temp dir) and the emulator
(UpdateImageSetMetadata at R tps, burst 1) run as child processes; P client
processes each update their share of N distinct image sets, all starting at
the same instant. The ratio is the aggregate rate (successful updates per
second, from the start until the last process finishes) over R.

Rows: the RedisLimiter told R less 2 % (the in-process limiter's headroom)
and told R less 10 %; the contrast row has the same P processes, each with
its own in-process limiter told R less 2 %, unaware of the others. At burst 1
the service counts arrivals: the shared GCRA spaces the *grants* 1/rate apart,
but the processes' sends jitter by a few milliseconds, and the in-process
client's send spacing (``_space_sends``) cannot see other processes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import UPD, Mode, Row, count, emulator, pick, progress, run_async, server_stats

NAME = "shared-quota"
TITLE = "Several processes sharing one update quota through Redis"
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server; yields its URL. RuntimeError when it cannot run."""
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
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _run(
    info: dict[str, Any], *, processes: int, rate: float, headroom: float, redis: str | None
) -> dict[str, Any]:
    ids = info["image_set_ids"]
    scope = f"bench-{uuid.uuid4().hex[:8]}:{info['region']}"
    children = []
    for p in range(processes):
        spec = {**info, "ids": ids[p::processes], "rate": rate * headroom, "redis": redis, "scope": scope}
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks._shared_child", json.dumps(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:  # every child imported, connected and opened its client
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a shared-quota child exited with {child.wait()} before it was ready")
    start = time.time() + 0.2
    for child in children:  # all of them get the start line before any is waited for
        assert child.stdin is not None
        child.stdin.write(f"{start!r}\n")
        child.stdin.close()
    results = []
    for child in children:
        out = child.stdout.read() if child.stdout else ""
        child.wait(timeout=600)
        if child.returncode != 0:
            raise RuntimeError(f"a shared-quota child exited with {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = max(r["end"] for r in results) - start
    stats = run_async(server_stats(info["endpoint_url"]))
    ok = count(stats, UPD, 200)
    return {
        "aggregate tps": ok / elapsed,
        "target tps": rate,
        "429s": count(stats, UPD, 429),
        "failures": sum(r["failures"] for r in results),
        "processes": processes,
        "N": len(ids),
        "elapsed s": elapsed,
        "ideal s": (len(ids) - 1) / rate,
    }


def run(mode: Mode) -> list[Row]:
    processes, rate, n = pick(mode, (2, 10.0, 6), (3, 10.0, 20), (4, 5.0, 150))
    try:
        from async_hi import _redis_limiter  # noqa: F401
    except ImportError:
        return [
            Row(scenario=NAME, client="RedisLimiter", note="skipped: async_hi._redis_limiter is not here")
        ]
    rows = []
    try:
        with redis_server() as url:
            runs = [
                (f"RedisLimiter told 0.98 R, {processes} processes", url, 0.98),
                (f"RedisLimiter told 0.9 R, {processes} processes", url, 0.9),
                (f"in-process limiters told 0.98 R, {processes} processes", None, 0.98),
            ]
            if mode != "full":  # one shared and one unshared run
                runs = runs[::2]
            for name, redis, headroom in runs:
                args = ["--lock-seconds", "0.02", "--quota", f"{UPD}={rate:g}/1", "--seed-count", str(n)]
                with emulator(*args, "--series", "1", "--instances", "1") as proc:
                    m = _run(proc.info, processes=processes, rate=rate, headroom=headroom, redis=redis)
                ratio = m["aggregate tps"] / rate
                progress(f"  {NAME}: {name}: {ratio:.3f} of the quota, {m['429s']} 429s")
                row = Row(
                    scenario=NAME, client=name, ratio=ratio, ratio_of="aggregate rate / quota", figures=m
                )
                if redis is not None:
                    row.target = ">= 0.95, 0 429s"
                    row.met = ratio >= 0.95 and m["429s"] == 0 and m["failures"] == 0
                rows.append(row)
    except RuntimeError as exc:
        rows.append(Row(scenario=NAME, client="RedisLimiter", note=f"skipped: {exc}"))
    return rows
