"""``async-hi conformance``: check an endpoint against the UpdateImageSetMetadata contract."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def _expectation(text: str) -> tuple[str, tuple[int, ...]]:
    from conformance import parse_expectation

    try:
        return parse_expectation(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "conformance",
        help="check an endpoint against the UpdateImageSetMetadata contract",
        description=(
            "Run the conformance checks (RV SR ER OC VS AU PD RB) against an endpoint, or against our "
            "emulator started in-process. Exit status: 0 every MUST passed, 1 a MUST failed, "
            "2 bad usage, 3 the image set could not be restored, 4 the endpoint could not be reached "
            "(or stopped answering)."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--endpoint", metavar="URL", help="the HealthImaging runtime endpoint to check")
    where.add_argument("--emulator", action="store_true", help="start our emulator in-process and check it")
    p.add_argument("--region", help="signing region (default: AWS_REGION / the profile's region)")
    p.add_argument("--profile", help="AWS profile for credentials and region")
    p.add_argument("--access-key-id", help="default: AWS_ACCESS_KEY_ID or the profile")
    p.add_argument("--secret-access-key", help="default: AWS_SECRET_ACCESS_KEY or the profile")
    p.add_argument("--session-token", help="default: AWS_SESSION_TOKEN or the profile")
    p.add_argument("--datastore-id", help="datastore of the image set to test on (with --endpoint)")
    p.add_argument("--image-set-id", help="image set to test on (with --endpoint)")
    p.add_argument(
        "--allow-writes",
        action="store_true",
        help="allow accepted updates (of one study-level attribute); the image set is reverted afterwards",
    )
    sel = p.add_argument_group("selection")
    sel.add_argument(
        "--select", action="append", default=[], metavar="IDS", help="ids or groups, e.g. RV,OC01"
    )
    sel.add_argument("--skip", action="append", default=[], metavar="IDS", help="ids or groups to leave out")
    sel.add_argument(
        "--expect",
        action="append",
        default=[],
        type=_expectation,
        metavar="ID=STATUS",
        help="expect other statuses for a check, e.g. RV01=404 or RB04=400,413,414",
    )
    sel.add_argument("--list", action="store_true", help="list the checks and exit")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the JSON report here ('-': stdout, no table)")
    out.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    tune = p.add_argument_group("tuning")
    tune.add_argument(
        "--time-bound", type=_positive, default=5.0, help="RB09: seconds per answer (default 5)"
    )
    tune.add_argument(
        "--request-timeout", type=_positive, default=10.0, help="seconds to wait for one answer (default 10)"
    )
    tune.add_argument(
        "--settle-timeout",
        type=_positive,
        default=30.0,
        help="seconds an accepted update may stay LOCKED/UPDATING; the first wait that runs out ends "
        "the write phase (default 30)",
    )
    tune.add_argument("--examples", type=int, default=40, help="RB08 generated requests (default 40)")
    tune.add_argument("--seed", type=int, default=0, help="RB08 random seed (default 0)")
    tune.add_argument(
        "--no-pacing", action="store_true", help="do not pace requests to the documented quotas"
    )
    p.set_defaults(run=run)


def _list_checks() -> int:
    from conformance import all_checks

    for c in all_checks():
        flag = "  (writes)" if c.writes else ""
        print(f"{c.id}  {c.level.value:<6}  {c.description}{flag}")
    return 0


def _target(args: argparse.Namespace) -> Any:
    import botocore.session

    from conformance import Credentials, Target

    missing = [n for n in ("datastore_id", "image_set_id") if not getattr(args, n)]
    if missing:
        raise ValueError("--endpoint needs --datastore-id and --image-set-id (the image set to test on)")
    session = botocore.session.Session(profile=args.profile)
    creds = session.get_credentials()
    frozen = creds.get_frozen_credentials() if creds is not None else None
    key = args.access_key_id or (frozen.access_key if frozen else None)
    secret = args.secret_access_key or (frozen.secret_key if frozen else None)
    token = args.session_token or (frozen.token if frozen else None)
    region = args.region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
    if not key or not secret:
        raise ValueError(
            "no credentials: pass --access-key-id/--secret-access-key or configure AWS credentials"
        )
    if not region:
        raise ValueError("no region: pass --region or set AWS_REGION")
    return Target(
        endpoint_url=args.endpoint,
        credentials=Credentials(
            access_key_id=key, secret_access_key=secret, session_token=token, region=region
        ),
        datastore_id=args.datastore_id,
        image_set_id=args.image_set_id,
        allow_writes=args.allow_writes,
    )


async def _main(args: argparse.Namespace) -> Any:
    from rich.console import Console

    from conformance import NoPacing, Settings, emulator_target, run_conformance

    settings = Settings(
        request_timeout=args.request_timeout,
        time_bound=args.time_bound,
        settle_timeout=args.settle_timeout,
        examples=args.examples,
        seed=args.seed,
        expect=dict(args.expect),
    )
    err = Console(stderr=True)

    def progress(result: Any) -> None:
        if not args.quiet:
            err.print(f"{result.check.id} {result.outcome.value}", highlight=False)

    kwargs: dict[str, Any] = {
        "settings": settings,
        "select": args.select,
        "skip": args.skip,
        "on_result": progress,
        "pacer": NoPacing() if args.no_pacing else None,
    }
    if args.emulator:
        async with emulator_target() as target:
            return await run_conformance(target, **kwargs)
    return await run_conformance(_target(args), **kwargs)


def _output(args: argparse.Namespace, report: Any) -> int:
    from rich.console import Console

    from conformance._report import print_report, to_json, to_junit_xml

    if args.json == "-":
        to_json(report, sys.stdout)
    else:
        width = None if sys.stdout.isatty() else shutil.get_terminal_size((140, 24)).columns
        print_report(report, Console(width=width))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fp:
                to_json(report, fp)
    if args.junit:
        with open(args.junit, "w", encoding="utf-8") as fp:
            fp.write(to_junit_xml(report))
    status: int = report.exit_status
    return status


def run(args: argparse.Namespace) -> int:
    import anyio

    if args.list:
        return _list_checks()
    if not args.emulator and not args.endpoint:
        print(
            "async-hi conformance: give --endpoint URL (with --datastore-id, --image-set-id) or --emulator",
            file=sys.stderr,
        )
        return 2
    try:
        from conformance import select_checks

        select_checks(args.select, args.skip)
        report = anyio.run(_main, args)
    except ValueError as exc:
        print(f"async-hi conformance: {exc}", file=sys.stderr)
        return 2
    return _output(args, report)
