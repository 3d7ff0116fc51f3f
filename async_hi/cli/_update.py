"""``async-hi update MANIFEST``: apply a manifest of metadata updates, resumably.

Exit codes: 0 every request applied (now or in an earlier run); 1 some
request failed, was invalid, or was not sent; 2 the job could not start (bad
arguments, unreadable manifest, journal locked/corrupt/mismatched, Redis
unreachable); 130 interrupted by Ctrl-C (calls in flight finished and
journaled: run again with the same ``--journal`` to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_OP = "UpdateImageSetMetadata"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "update",
        help="apply a manifest of metadata updates",
        description="Apply a JSON Lines or CSV manifest of metadata updates: rate limited, ordered per "
        "image set, coalesced, resumable with --journal.",
        epilog="Exit codes: 0 all applied; 1 failures or invalid lines; 2 could not start; 130 interrupted.",
    )
    p.add_argument(
        "manifest", type=Path, help="a .jsonl (one request a line) or .csv manifest; see the README"
    )
    where = p.add_argument_group("where")
    where.add_argument("--endpoint-url", metavar="URL", help="a custom endpoint (an emulator); default: AWS")
    where.add_argument("--region", help="the AWS region (default: the profile's or AWS_REGION)")
    where.add_argument("--profile", help="the AWS profile for credentials and region")
    pace = p.add_argument_group("pacing")
    pace.add_argument(
        "--rate", type=_positive, help="the account's update quota in tps (default: the documented 0.25)"
    )
    pace.add_argument("--burst", type=_count, default=1, help="the update quota's burst (default 1)")
    pace.add_argument("--concurrency", type=_count, default=8, help="image sets updated at once (default 8)")
    pace.add_argument("--no-coalesce", action="store_true", help="one call per request, never merged")
    pace.add_argument(
        "--redis", metavar="URL", help="share the account's quota with other processes via Redis"
    )
    pace.add_argument(
        "--redis-scope",
        metavar="SCOPE",
        help="the shared quota's name: the same for every process of one account and region "
        "(default: ENDPOINT-or-aws:REGION)",
    )
    pace.add_argument(
        "--redis-unavailable",
        choices=("fail", "local"),
        default="fail",
        help="Redis unreachable: fail (default) or limit locally at rate/--redis-share",
    )
    pace.add_argument(
        "--redis-share", type=_count, default=4, help="processes sharing the quota (for 'local')"
    )
    job = p.add_argument_group("job")
    job.add_argument("--journal", type=Path, metavar="PATH", help="resume from and append to this journal")
    job.add_argument("--retry-failed", action="store_true", help="with --journal: send failed requests again")
    job.add_argument(
        "--accept-changed-manifest",
        action="store_true",
        help="with --journal: resume although the manifest changed since the journal began "
        "(refused anyway if a request the journal finished was edited; checked before sending)",
    )
    job.add_argument("--wait", action="store_true", help="wait until each update is applied (UPDATED)")
    job.add_argument("--stop-on-error", action="store_true", help="stop at the first bad line or failure")
    job.add_argument(
        "--dry-run", action="store_true", help="validate the whole manifest offline; send nothing"
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the summary as one JSON object (no progress)")
    out.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(run=run)


def _limiting(args: argparse.Namespace) -> dict[str, Any]:
    from async_hi._limiter import LimiterConfig
    from async_hi.contract import DEFAULT_QUOTAS, Quota

    quotas = dict(DEFAULT_QUOTAS)
    if args.rate is not None:
        quotas[_OP] = Quota(rate=args.rate, burst=args.burst)
    if not args.redis:
        return {"limiter_config": LimiterConfig(quotas=quotas)} if args.rate is not None else {}
    from async_hi._redis_limiter import RedisLimiter, RedisLimiterConfig

    scope = args.redis_scope or f"{args.endpoint_url or 'aws'}:{args.region or 'default'}"
    config = RedisLimiterConfig(
        scope=scope, quotas=quotas, on_unavailable=args.redis_unavailable, fallback_share=args.redis_share
    )
    return {"limiter": RedisLimiter(args.redis, config)}


async def _main(args: argparse.Namespace) -> Any:
    from aiobotocore.session import AioSession

    from async_hi._client import HealthImagingClient
    from async_hi._redis_limiter import RedisUnavailableError
    from async_hi.cli._job import run_job
    from async_hi.cli._progress import Progress, Snapshot

    limiting = _limiting(args)
    limiter = limiting.get("limiter")
    if limiter is not None and args.redis_unavailable == "fail":
        try:
            await limiter.redis.ping()
        except Exception as exc:
            await limiter.aclose()
            raise RedisUnavailableError(f"Redis at --redis is unreachable ({type(exc).__name__})") from exc
    try:
        async with HealthImagingClient(
            region=args.region,
            endpoint_url=args.endpoint_url,
            session=AioSession(profile=args.profile) if args.profile else None,
            **limiting,
        ) as client:
            progress = Progress(Snapshot, enabled=not (args.json or args.no_progress))
            return await run_job(
                args.manifest,
                client,
                concurrency=args.concurrency,
                coalesce=not args.no_coalesce,
                wait=args.wait,
                journal_path=args.journal,
                retry_failed=args.retry_failed,
                accept_changed_manifest=args.accept_changed_manifest,
                stop_on_error=args.stop_on_error,
                progress=progress,
            )
    finally:
        if limiter is not None:
            await limiter.aclose()


def run(args: argparse.Namespace) -> int:
    import anyio

    from async_hi._journal import JournalError
    from async_hi._redis_limiter import RedisUnavailableError
    from async_hi.cli._job import dry_run
    from async_hi.cli._progress import Progress, Snapshot, print_summary

    if not args.manifest.is_file():
        print(f"async-hi update: no manifest file at {args.manifest}", file=sys.stderr)
        return 2
    if args.dry_run:
        summary = dry_run(args.manifest, Progress(Snapshot, enabled=not args.json))
    else:
        try:
            summary = anyio.run(_main, args)
        except (JournalError, RedisUnavailableError, ValueError, OSError) as exc:
            print(f"async-hi update: {exc}", file=sys.stderr)
            return 2
    print_summary(summary, as_json=args.json)
    code: int = summary.exit_code
    return code
