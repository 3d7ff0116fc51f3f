"""One contestant in a process of its own: ``python -m benchmarks._child SPEC_JSON``.

Runs with whichever ``async_hi`` is first on ``sys.path`` (the code under
test, or the "before" tree: see ``_common.child_command``), so it uses only
what both have: the public client, ``LimiterConfig``, ``update_many``,
``RedisLimiter``. Prints one JSON line:

- ``t0``: when the client was open (``time.monotonic()``, the emulator's clock
  too), ``end``: when the last request was answered;
- ``failures``: requests that did not end applied;
- ``rate``: ``[seconds from t0, tps]`` samples of the limiter's update rate
  (every ``sample`` seconds; async-hi only);
- ``jitter_ms``: the limiter's measured timer lateness (p90), where it has one.

SPEC keys: ``kind`` (``"ours"``, ``"aiobotocore"``), ``info`` (the emulator's
info line), ``ids`` (image sets to update; default all), ``per_set`` (updates
per image set, consecutive), ``concurrency``, ``coalesce``, ``quotas``
(``{operation: [rate, burst]}`` the client is told), ``max_in_flight``,
``mode``/``max_attempts`` (aiobotocore's retries), ``redis`` (a URL: share the
limiter through Redis, with ``scope``, ``on_unavailable``, ``fallback_share``),
``sync`` (print ``ready`` once open, then read the ``time.time()`` to start at
from stdin), ``sample``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from async_hi import HealthImagingClient, LimiterConfig, MetadataUpdate, Quota, UpdateBuilder, update_many

UPD = "UpdateImageSetMetadata"


def _updates(spec: dict[str, Any]) -> list[MetadataUpdate]:
    info = spec["info"]
    d = info["datastore_id"]
    ids = spec.get("ids") or info["image_set_ids"]
    per_set = int(spec.get("per_set", 1))
    # round after round: the requests for one image set are consecutive in time, not in the input
    return [
        UpdateBuilder(d, i).study(StudyDescription=f"C{r}-{k}").build()
        for r in range(per_set)
        for k, i in enumerate(ids)
    ]


def _client_kwargs(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("endpoint_url", "region", "aws_access_key_id", "aws_secret_access_key")}


async def _start_line(spec: dict[str, Any]) -> None:
    if spec.get("sync"):
        print("ready", flush=True)
        start = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start - time.time()))


async def _ours(spec: dict[str, Any]) -> dict[str, Any]:
    updates = _updates(spec)
    quotas = {op: Quota(rate=float(r), burst=int(b)) for op, (r, b) in spec["quotas"].items()}
    in_flight = int(spec.get("max_in_flight", 16))
    kwargs: dict[str, Any] = {}
    limiter: Any = None
    if spec.get("redis"):
        from async_hi import RedisLimiter, RedisLimiterConfig

        limiter = RedisLimiter(
            spec["redis"],
            RedisLimiterConfig(
                scope=spec["scope"],
                quotas=quotas,
                max_in_flight=in_flight,
                on_unavailable=spec.get("on_unavailable", "fail"),
                fallback_share=int(spec.get("fallback_share", 4)),
                retry_redis_after=float(spec.get("retry_redis_after", 5.0)),
            ),
        )
        await limiter.redis.ping()  # connected before the start line
        kwargs["limiter"] = limiter
    else:
        kwargs["limiter_config"] = LimiterConfig(quotas=quotas, max_in_flight=in_flight)
    rates: list[list[float]] = []
    failures = 0
    try:
        async with HealthImagingClient(
            **kwargs, max_pool_connections=max(10, int(spec.get("pool", 32))), **_client_kwargs(spec["info"])
        ) as hi:
            await _start_line(spec)
            t0 = time.monotonic()

            async def sample() -> None:
                while True:
                    rates.append([round(time.monotonic() - t0, 4), hi.limiter.current_rate(UPD)])
                    await asyncio.sleep(float(spec.get("sample", 0.1)))

            sampler = asyncio.create_task(sample())
            async with update_many(
                updates,
                apply=hi.update_image_set_metadata,
                concurrency=int(spec.get("concurrency", 16)),
                coalesce=bool(spec.get("coalesce", True)),
            ) as run:
                async for o in run:
                    failures += o.status != "applied"
            end = time.monotonic()
            sampler.cancel()
            rates.append([round(end - t0, 4), hi.limiter.current_rate(UPD)])
            jitter = getattr(hi.limiter, "jitter", None)
            jitter_ms = jitter(UPD) * 1000 if callable(jitter) else None
    finally:
        if limiter is not None:
            await limiter.aclose()
    return {"t0": t0, "end": end, "failures": failures, "rate": rates, "jitter_ms": jitter_ms}


async def _aiobotocore(spec: dict[str, Any]) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    info = spec["info"]
    updates = _updates(spec)
    concurrency = int(spec.get("concurrency", 8))
    config = AioConfig(
        inject_host_prefix=False,  # else requests go to runtime-<host>
        retries={
            "mode": spec.get("mode", "adaptive"),
            "total_max_attempts": int(spec.get("max_attempts", 20)),
        },
        max_pool_connections=max(10, concurrency),
    )
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    async with get_session().create_client(
        "medical-imaging",
        region_name=info["region"],
        endpoint_url=info["endpoint_url"],
        aws_access_key_id=info["aws_access_key_id"],
        aws_secret_access_key=info["aws_secret_access_key"],
        config=config,
    ) as raw:
        await _start_line(spec)
        t0 = time.monotonic()

        async def one(u: MetadataUpdate) -> None:
            nonlocal failures
            async with gate:
                try:  # read the version, write against it
                    got = await raw.get_image_set(datastoreId=u.datastore_id, imageSetId=u.image_set_id)
                    await raw.update_image_set_metadata(
                        datastoreId=u.datastore_id,
                        imageSetId=u.image_set_id,
                        latestVersionId=got["versionId"],
                        updateImageSetMetadataUpdates=u.payload(),
                    )
                except Exception:
                    failures += 1

        await asyncio.gather(*(one(u) for u in updates))
        end = time.monotonic()
    return {"t0": t0, "end": end, "failures": failures, "rate": [], "jitter_ms": None}


def main() -> None:
    spec = json.loads(sys.argv[1])
    run = {"ours": _ours, "aiobotocore": _aiobotocore}[spec["kind"]]
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
