"""One of several processes sharing a RedisLimiter: acquire until a deadline, record when each call may go.

Usage: python -m tests.redis_child REDIS_URL SCOPE RATE START END OUT
Waits until time.time() >= START, then acquires "Op" in a loop until END and
writes the time.time() of each grant (JSON list) to OUT.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig
from async_hi.contract import Quota


async def main(url: str, scope: str, rate: str, start: str, end: str, out: str) -> None:
    config = RedisLimiterConfig(scope=scope, quotas={"Op": Quota(rate=float(rate), burst=1)})
    grants: list[float] = []
    async with RedisLimiter(url, config) as limiter:
        await limiter.redis.ping()  # connect before the start line
        await anyio.sleep(max(0.0, float(start) - time.time()))
        while time.time() < float(end):
            await limiter.acquire("Op")
            grants.append(time.time())
            limiter.release("Op")
    await anyio.Path(out).write_text(json.dumps(grants))


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:7])
