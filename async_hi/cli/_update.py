"""``async-hi update MANIFEST``: apply a manifest of metadata updates, resumably.

Exit codes: see ``EXIT_CODES`` in :mod:`async_hi.cli._progress` (printed by
``--help`` and in the README). With ``--json`` exactly one JSON line goes to
stdout on every path (the summary, with ``error`` and ``exit_code``), also
when the arguments are bad, the job cannot start, Redis goes away or Ctrl-C
comes at any phase.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import anyio

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
    from async_hi.cli._progress import exit_codes_help

    p = sub.add_parser(
        "update",
        help="apply a manifest of metadata updates",
        description="Apply a JSON Lines or CSV manifest of metadata updates: rate limited, ordered per "
        "image set, coalesced, resumable with --journal.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


async def _main(args: argparse.Namespace, summary: Any) -> None:
    from async_hi.cli._job import Interrupts
    from async_hi.cli._progress import Progress, Snapshot

    progress = Progress(Snapshot, enabled=not (args.json or args.no_progress))
    interrupts = Interrupts(summary, progress)
    await interrupts.guard(lambda: _job(args, summary, progress, interrupts))


async def _job(args: argparse.Namespace, summary: Any, progress: Any, interrupts: Any) -> None:
    from aiobotocore.session import AioSession

    from async_hi._client import HealthImagingClient
    from async_hi._redis_limiter import RedisUnavailableError
    from async_hi.cli._job import run_job

    limiting = _limiting(args)
    limiter = limiting.get("limiter")
    try:
        if limiter is not None and args.redis_unavailable == "fail":
            try:
                await limiter.redis.ping()
            except Exception as exc:
                raise RedisUnavailableError(
                    f"Redis at --redis is unreachable ({type(exc).__name__}); nothing was sent"
                ) from exc
        async with HealthImagingClient(
            region=args.region,
            endpoint_url=args.endpoint_url,
            session=AioSession(profile=args.profile) if args.profile else None,
            **limiting,
        ) as client:
            await run_job(
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
                summary=summary,
                interrupts=interrupts,
            )
    finally:
        if limiter is not None:
            with anyio.CancelScope(shield=True):
                await limiter.aclose()


def run(args: argparse.Namespace) -> int:
    from async_hi._errors import HealthImagingError, LimiterUnavailableError
    from async_hi.cli._job import dry_run
    from async_hi.cli._progress import JobSummary, Progress, Snapshot

    summary = JobSummary(manifest=args.manifest.name)
    try:
        if not args.manifest.is_file():
            summary.error = f"no manifest file at {args.manifest}"
        elif args.dry_run:
            dry_run(args.manifest, Progress(Snapshot, enabled=not args.json), summary)
        else:
            anyio.run(_main, args, summary)
    except KeyboardInterrupt:  # before the Ctrl-C handling of the job was in place, or after it
        summary.interrupted = True
    except LimiterUnavailableError as exc:
        summary.error = str(exc)
        if summary.requests:
            summary.error += (
                f". Sending stopped: {summary.cancelled} request(s) not sent, none marked failed; "
                + ("run again with the same --journal to resume" if args.journal else "nothing was journaled")
            )
    except (HealthImagingError, ValueError, OSError) as exc:
        summary.error = str(exc)
    except Exception as exc:  # a bug: say so plainly (the message may quote input: left out)
        summary.internal_error = True
        summary.error = (
            f"internal error ({type(exc).__name__}); the journal is consistent: run again to resume, "
            "and please report it (ASYNC_HI_TRACEBACK=1 shows the traceback)"
        )
        if os.environ.get("ASYNC_HI_TRACEBACK") == "1":
            traceback.print_exc()
    return report(summary, as_json=args.json)


def report(summary: Any, *, as_json: bool) -> int:
    """The one message (stderr), the summary (stdout, one JSON line with ``--json``), the exit code."""
    from async_hi.cli._progress import print_summary

    if summary.error is not None:
        print(f"async-hi update: {summary.error}", file=sys.stderr, flush=True)
    try:
        print_summary(summary, as_json=as_json)
    except KeyboardInterrupt:
        summary.interrupted = True
    code: int = summary.exit_code
    return code
