"""One of several processes updating one account's image sets (the shared-quota scenario).

    python -m benchmarks._shared_child SPEC_JSON

SPEC: endpoint info, ``ids`` (this process's image sets), ``rate`` (the update
quota told to the limiter), ``redis`` (a URL, or null for an in-process
limiter), ``scope``. Prints ``ready`` once connected, reads the
``time.time()`` to begin at from stdin, and at the end prints one JSON
line: failures, UpdateImageSetMetadata 429s seen, and the moment the last
update finished.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from async_hi import HealthImagingClient, RateLimiter, UpdateBuilder
from benchmarks._common import UPD, client_kwargs
from benchmarks._ours import apply_all, quota_config


async def main(spec: dict[str, Any]) -> None:
    d = spec["datastore_id"]
    updates = [UpdateBuilder(d, i).study(StudyDescription=f"P{k}").build() for k, i in enumerate(spec["ids"])]
    kwargs: dict[str, Any] = {}
    limiter: Any = None
    if spec["redis"]:
        from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig

        limiter = RedisLimiter(
            spec["redis"], RedisLimiterConfig(scope=spec["scope"], quotas=quota_config(spec["rate"]).quotas)
        )
        await limiter.redis.ping()  # connected before the start line
        assert isinstance(limiter, RateLimiter)
        kwargs["limiter"] = limiter
    else:
        kwargs["limiter_config"] = quota_config(spec["rate"])
    try:
        async with HealthImagingClient(**kwargs, **client_kwargs(spec)) as hi:
            print("ready", flush=True)
            start = float(await asyncio.to_thread(sys.stdin.readline))  # the parent's start line
            await asyncio.sleep(max(0.0, start - time.time()))
            done = await apply_all(hi, updates, concurrency=8)
            end = time.time()
            stats = hi.stats()
    finally:
        if limiter is not None:
            await limiter.aclose()
    print(
        json.dumps({"failures": sum(not x.ok for x in done), "throttles": stats[UPD].throttles, "end": end})
    )


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
