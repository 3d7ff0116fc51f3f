"""One of several processes sharing a RedisLimiter: acquire until a deadline, record when each call may go.

Usage: python -m tests.redis_child REDIS_URL SCOPE RATE OUT
Connects, prints "ready", reads "START END" (epoch seconds) from stdin, waits
until START, acquires "Op" in a loop until END and writes each granted send
time, as time.time(), (JSON list) to OUT.
"""

from __future__ import annotations

import json
import sys
import time

import anyio
import anyio.to_thread

from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig
from async_hi.contract import Quota


async def main(url: str, scope: str, rate: str, out: str) -> None:
    # no headroom and no jitter margin: the test checks the shared grid itself
    config = RedisLimiterConfig(
        scope=scope, quotas={"Op": Quota(rate=float(rate), burst=1)}, headroom=0.0, jitter_factor=0.0
    )
    grants: list[float] = []
    async with RedisLimiter(url, config) as limiter:
        await limiter.redis.ping()  # connected before the start line
        print("ready", flush=True)
        start, end = (float(x) for x in (await anyio.to_thread.run_sync(sys.stdin.readline)).split())
        await anyio.sleep(max(0.0, start - time.time()))
        while time.time() < end:
            at = await limiter.acquire("Op")  # the send time it granted (this machine's monotonic clock)
            grants.append(time.time() - time.monotonic() + at)
            limiter.release("Op")
    await anyio.Path(out).write_text(json.dumps(grants))


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
