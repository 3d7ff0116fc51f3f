"""RedisLimiter against a real redis-server started here, including four processes sharing 10 tps."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig, RedisUnavailableError
from async_hi.contract import Quota

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free loopback port; CI must have it (fail, never skip, there)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "redis-server is not installed (.ci/run installs it); the shared-limiter tests need it"
            )
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"redis-server did not come up on port {port}: {err}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


def config(rate: float = 20.0, burst: int = 1, **kw: object) -> RedisLimiterConfig:
    return RedisLimiterConfig(
        scope=f"test-{uuid.uuid4().hex[:8]}:us-east-1",
        quotas={"Op": Quota(rate=rate, burst=burst), "Other": Quota(rate=rate, burst=burst)},
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_send_times_are_spaced_by_the_rate_and_the_first_goes_at_once(redis_url: str) -> None:
    async with RedisLimiter(redis_url, config(rate=20.0)) as limiter:
        await limiter.redis.ping()  # connected: time only the limiter
        start = time.monotonic()
        grants = []
        for _ in range(6):
            at = await limiter.acquire("Op")
            now = time.monotonic()
            assert at <= now + 0.002  # returns at the send time, on this process's clock
            assert at == pytest.approx(now, abs=0.02)
            grants.append(now - start)
            limiter.release("Op")
    assert grants[0] < 0.03  # a new key is full: the first request goes at once
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= 0.045
    assert grants[-1] - grants[0] == pytest.approx(5 / (20 * 0.98), abs=0.03)  # 2 % headroom


@pytest.mark.anyio
async def test_start_empty_makes_a_new_key_wait_one_interval(redis_url: str) -> None:
    async with RedisLimiter(redis_url, config(rate=10.0, start_empty=True, headroom=0.0)) as limiter:
        await limiter.redis.ping()
        t0 = time.monotonic()
        await limiter.acquire("Op")
        limiter.release("Op")
        assert 0.09 <= time.monotonic() - t0 < 0.2


@pytest.mark.anyio
async def test_burst_after_idle_and_operations_and_scopes_are_independent(redis_url: str) -> None:
    cfg = config(rate=10.0, burst=3)
    async with RedisLimiter(redis_url, cfg) as a:
        for _ in range(3):  # creates the key, spends the burst
            await a.acquire("Op")
            a.release("Op")
        await anyio.sleep(0.35)  # refills the burst of 3
        t0 = time.monotonic()
        for _ in range(3):
            await a.acquire("Op")
            a.release("Op")
        assert time.monotonic() - t0 < 0.05
        t0 = time.monotonic()
        for _ in range(3):
            await a.acquire("Other")  # its own (full) bucket, untouched by Op
            a.release("Other")
        assert time.monotonic() - t0 < 0.05
        assert a.key("Op") == f"async-hi:{cfg.scope}:Op"
        assert await a.redis.exists(a.key("Op"), a.key("Other")) == 2


@pytest.mark.anyio
async def test_a_lone_429_does_not_cut_the_shared_rate_but_retry_after_pauses_all(redis_url: str) -> None:
    cfg = config(rate=20.0)
    async with RedisLimiter(redis_url, cfg) as a, RedisLimiter(redis_url, cfg) as b:
        await a.acquire("Op")
        a.release("Op")
        await a.on_throttle("Op", None)  # e.g. two processes' sends jittered together
        await b.acquire("Op")
        b.release("Op")
        assert b.current_rate("Op") == pytest.approx(19.6)  # untouched
        await b.on_throttle("Op", 0.3)  # lone, with Retry-After: a pause, not a cut
        t0 = time.monotonic()
        await a.acquire("Op")  # the other "process" honours the pause
        a.release("Op")
        assert time.monotonic() - t0 >= 0.29
        assert a.current_rate("Op") == pytest.approx(19.6)


@pytest.mark.anyio
async def test_sustained_429s_cut_the_shared_rate_and_it_comes_back(redis_url: str) -> None:
    cfg = config(rate=20.0, hold_requests=5, recovery_requests=10.0)
    async with RedisLimiter(redis_url, cfg) as a, RedisLimiter(redis_url, cfg) as b:
        for _ in range(6):  # a proven rate: more than hold_requests clean answers
            await a.acquire("Op")
            a.release("Op")
            await a.on_success("Op")
        await a.on_throttle("Op", None)
        await a.on_throttle("Op", None)  # sustained
        assert a.current_rate("Op") == pytest.approx(19.6 * 0.7)
        await a.on_throttle("Op", None)  # a volley from before the cut: no second cut
        assert 19.6 * 0.7 <= a.current_rate("Op") < 19.6 * 0.85  # (already on its way back)
        await b.acquire("Op")  # the other process sees the shared cut
        b.release("Op")
        assert b.current_rate("Op") < 19.6 * 0.85
        await anyio.sleep(10 / 19.6 + 0.05)  # transient: back within 10 intervals at the old rate
        await b.acquire("Op")
        b.release("Op")
        assert b.current_rate("Op") == pytest.approx(19.6)


@pytest.mark.anyio
async def test_in_flight_cap_is_per_process(redis_url: str) -> None:
    async with RedisLimiter(redis_url, config(rate=1000.0, max_in_flight=2)) as limiter:
        await limiter.acquire("Op")
        await limiter.acquire("Op")
        with anyio.move_on_after(0.1) as scope:
            await limiter.acquire("Op")
        assert scope.cancelled_caught
        limiter.release("Op")
        with anyio.fail_after(1):
            await limiter.acquire("Op")


@pytest.mark.anyio
async def test_unreachable_redis_fails_closed_by_default() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with RedisLimiter(url, config()) as limiter:
        with pytest.raises(RedisUnavailableError, match="cannot be enforced, so no request is sent"):
            await limiter.acquire("Op")
        assert limiter._op("Op").slot.value == 16  # the slot was given back


@pytest.mark.anyio
async def test_lost_adjustments_are_logged_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    from async_hi._errors import LimiterUnavailableError

    url = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, logger="async_hi.redis_limiter")
    async with RedisLimiter(url, config()) as limiter:
        for _ in range(5):  # every call in flight when Redis went away reports its 429 or success
            await limiter.on_throttle("Op", 1.0)
        with pytest.raises(LimiterUnavailableError):  # what update_many stops on
            await limiter.acquire("Op")
    lost = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(lost) == 1


@pytest.mark.anyio
async def test_unreachable_redis_falls_back_to_a_local_slice_that_keeps_its_share(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    url = f"redis://127.0.0.1:{free_port()}/0"
    cfg = config(rate=8.0, on_unavailable="local", fallback_share=4, retry_redis_after=1000, headroom=0.0)
    caplog.set_level(logging.WARNING, logger="async_hi.redis_limiter")
    async with RedisLimiter(url, cfg, now=lambda: now[0], sleep=sleep) as limiter:
        for _ in range(4):
            await limiter.acquire("Op")
            limiter.release("Op")
        assert sleeps == pytest.approx([0.5, 0.5, 0.5])  # 8 tps / 4 = 2 tps, the first at once
        assert limiter.current_rate("Op") == pytest.approx(2.0)
        await limiter.on_throttle("Op", 2.0)  # a lone 429: honours Retry-After, keeps the rate
        t0 = now[0]
        await limiter.acquire("Op")
        limiter.release("Op")
        assert now[0] - t0 >= 2.0 - 1e-9
        assert limiter.current_rate("Op") == pytest.approx(2.0)
        await limiter.on_throttle("Op", None)  # sustained: cut
        assert limiter.current_rate("Op") == pytest.approx(1.4)
        await sleep(200.0)  # and it recovers (held, then probed back to the slice)
        assert limiter.current_rate("Op") == pytest.approx(2.0)
        assert "RedisLimiter" in repr(limiter)
        assert "local fallback" in repr(limiter)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per request


@pytest.mark.anyio
async def test_when_redis_stops_each_process_keeps_to_its_own_slots_of_the_grid(tmp_path: Path) -> None:
    cfg = config(rate=20.0, on_unavailable="local", fallback_share=2, retry_redis_after=1000)
    interval = 1 / (20.0 * 0.98)
    with redis_server(tmp_path) as (url, server):
        async with RedisLimiter(url, cfg) as a, RedisLimiter(url, cfg) as b:
            for _ in range(4):  # replies (the clock offset: the shortest round trip's) and member numbers
                for limiter in (a, b):
                    await limiter.acquire("Op")
                    limiter.release("Op")
            server.terminate()
            server.wait(timeout=10)
            sends: dict[str, list[float]] = {"a": [], "b": []}

            async def run(name: str, limiter: RedisLimiter) -> None:
                for _ in range(6):
                    sends[name].append(await limiter.acquire("Op"))
                    limiter.release("Op")

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "a", a)
                tg.start_soon(run, "b", b)
            assert "local fallback" in repr(a)
    for name in ("a", "b"):  # each process at half the shared rate, on the grid (late wake-ups aside)
        grants = sends[name][1:]
        assert (grants[-1] - grants[0]) / (len(grants) - 1) == pytest.approx(2 * interval, rel=0.03)
    # the two slices interleave: a's slots sit between b's, a shared interval apart (the first
    # local grants are the slots themselves; later ones may be pushed by late wake-ups)
    phase = (sends["a"][0] - sends["b"][0]) % (2 * interval)
    assert phase == pytest.approx(interval, abs=0.002)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="scope must be a non-empty string"):
        RedisLimiterConfig(scope="")
    with pytest.raises(ValueError, match="on_unavailable must be 'fail' or 'local'"):
        RedisLimiterConfig(scope="s", on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback_share must be >= 1"):
        RedisLimiterConfig(scope="s", fallback_share=0)
    with pytest.raises(ValueError, match=r"cut must be within \(0, 1\)"):
        RedisLimiterConfig(scope="s", cut=1.0)
    with pytest.raises(ValueError, match=r"headroom must be within \[0, 0.5\)"):
        RedisLimiterConfig(scope="s", headroom=0.5)
    with pytest.raises(ValueError, match="hold_requests must be >= 1"):
        RedisLimiterConfig(scope="s", hold_requests=0)


@pytest.mark.slow
def test_four_processes_share_ten_tps_for_twenty_seconds(redis_url: str, tmp_path: Path) -> None:
    rate, duration, procs = 10.0, 20.0, 4
    scope = f"shared-{uuid.uuid4().hex[:8]}"
    outs = [tmp_path / f"grants-{n}.json" for n in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.redis_child", redis_url, scope, str(rate), str(out)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for child in children:  # every process imported and connected: a common start line
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    start = time.time() + 0.5
    end = start + duration
    for child in children:
        assert child.stdin is not None
        child.stdin.write(f"{start!r} {end!r}\n")
        child.stdin.close()
    for child in children:
        assert child.wait(timeout=duration + 30) == 0
        assert child.stdout is not None
        child.stdout.close()
    per_process = [json.loads(out.read_text()) for out in outs]
    grants = sorted(t for g in per_process for t in g)
    assert all(len(g) > 20 for g in per_process)  # everyone got a share
    measured = (len(grants) - 1) / (grants[-1] - grants[0])
    in_window = sum(start <= t < end for t in grants)
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    print(f"rate {measured:.4f} tps, {in_window} grants in {duration:g} s, min gap {min(gaps) * 1000:.1f} ms")
    assert measured == pytest.approx(rate, rel=0.03)
    assert in_window == pytest.approx(rate * duration, rel=0.03)
    # burst 1: no two grants closer than 1/rate, less the scheduling jitter of a busy 2-core box
    assert min(gaps) >= 1 / rate - 0.015
