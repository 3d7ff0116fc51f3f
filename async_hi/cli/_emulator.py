"""``async-hi emulator``: run the HealthImaging emulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from async_hi.contract import DEFAULT_QUOTAS, OPERATIONS, Quota

__all__ = ["add_parser", "command_env", "parse_quota", "run"]


def parse_quota(text: str) -> tuple[str, Quota]:
    """``Operation=RATE/BURST`` (for example ``UpdateImageSetMetadata=4/1``)."""
    op, sep, spec = text.partition("=")
    rate_s, slash, burst_s = spec.partition("/")
    if not sep or not slash:
        raise argparse.ArgumentTypeError(f"expected OPERATION=RATE/BURST, got {text!r}")
    if op not in OPERATIONS:
        raise argparse.ArgumentTypeError(f"unknown operation {op!r}; one of {', '.join(OPERATIONS)}")
    try:
        return op, Quota(rate=float(rate_s), burst=int(burst_s))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad quota {text!r}: {exc}") from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is a probability within 0..1, got {text}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "emulator",
        help="run the HealthImaging emulator",
        description="Serve the HealthImaging endpoints on loopback, seeded with synthetic image sets.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument(
        "--lock-seconds",
        type=float,
        default=2.0,
        help="how long an accepted update keeps the image set LOCKED (default 2)",
    )
    p.add_argument("--no-sigv4", action="store_true", help="accept unsigned requests")
    p.add_argument("--no-throttle", action="store_true", help="turn the per-operation quotas off")
    p.add_argument(
        "--quota",
        type=parse_quota,
        action="append",
        default=[],
        metavar="OP=RATE/BURST",
        help="override one operation's quota (repeatable)",
    )
    p.add_argument(
        "--seed-count",
        type=int,
        default=None,
        help="synthetic image sets to create (default 3, or 0 with --import)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic metadata")
    p.add_argument("--series", type=int, default=2)
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--primary", action="store_true", help="seed primary image sets")
    p.add_argument(
        "--import",
        dest="import_paths",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="import DICOM P10 files, folders or globs (headers only) as primary image sets (repeatable)",
    )
    g = p.add_argument_group("fault injection (probabilities per request)")
    g.add_argument("--fault-seed", type=int, default=0)
    g.add_argument("--fault-500", type=_rate, default=0.0, dest="error_rate")
    g.add_argument("--fault-429", type=_rate, default=0.0, dest="throttle_rate")
    g.add_argument("--fault-drop", type=_rate, default=0.0, dest="drop_rate")
    g.add_argument(
        "--fault-lost",
        type=_rate,
        default=0.0,
        dest="lost_response_rate",
        help="apply the update, then drop the connection",
    )
    g.add_argument("--fault-slow", type=_rate, default=0.0, dest="slow_rate")
    g.add_argument("--slow-seconds", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="print the endpoint and ids as one JSON line")
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="run COMMAND with the emulator in its environment (HI_ENDPOINT_URL, HI_DATASTORE_ID, "
        "HI_IMAGE_SET_IDS, AWS_ENDPOINT_URL_MEDICAL_IMAGING, AWS_DISABLE_HOST_PREFIX_INJECTION, the "
        "region and credentials), then stop and exit with its status: a test run of another language",
    )
    p.set_defaults(run=run)


def command_env(info: dict[str, Any]) -> dict[str, str]:
    """The environment a command run by ``async-hi emulator -- COMMAND`` gets on top of ours."""
    ids = info["image_set_ids"] or []
    return {
        "HI_ENDPOINT_URL": info["endpoint_url"],
        "HI_DATASTORE_ID": info["datastore_id"] or "",
        "HI_IMAGE_SET_IDS": ",".join(ids),
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": info["endpoint_url"],
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_REGION": info["region"],
        "AWS_DEFAULT_REGION": info["region"],
        "AWS_ACCESS_KEY_ID": info["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": info["aws_secret_access_key"],
    }


async def _run_command(command: list[str], info: dict[str, Any], stop: asyncio.Event) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env.update(command_env(info))
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as exc:
        print(f"async-hi emulator: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    finished = asyncio.ensure_future(proc.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():  # Ctrl-C or SIGTERM: pass it on, then wait for the command
        proc.terminate()
        await finished
    stopped.cancel()
    return proc.returncode if proc.returncode is not None else 1


async def _serve(args: argparse.Namespace) -> int:
    from async_hi.emulator import Emulator, EmulatorConfig, FaultConfig

    quotas: dict[str, Quota] | None = None if args.no_throttle else dict(DEFAULT_QUOTAS)
    if args.quota:
        quotas = quotas or {}
        quotas.update(dict(args.quota))
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        region=args.region,
        lock_seconds=args.lock_seconds,
        verify_sigv4=not args.no_sigv4,
        quotas=quotas,
        faults=FaultConfig(
            seed=args.fault_seed,
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            drop_rate=args.drop_rate,
            lost_response_rate=args.lost_response_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    seed_count = args.seed_count if args.seed_count is not None else (0 if args.import_paths else 3)
    async with Emulator(config) as emu:
        seeded = (
            emu.seed(
                seed_count,
                seed=args.seed,
                series=args.series,
                instances=args.instances,
                primary=args.primary,
            )
            if seed_count > 0
            else None
        )
        report = (
            emu.import_dicom(args.import_paths, datastore_id=seeded.datastore_id if seeded else None)
            if args.import_paths
            else None
        )
        emu.set_baseline()  # POST /_emulator/reset comes back to these image sets
        datastore_id = seeded.datastore_id if seeded else (report.datastore_id if report else None)
        ids = list(seeded.image_set_ids if seeded else ()) + list(report.image_set_ids if report else ())
        info: dict[str, Any] = {
            "endpoint_url": emu.endpoint_url,
            "region": emu.region,
            "aws_access_key_id": emu.access_key_id,
            "aws_secret_access_key": emu.secret_access_key,
            "datastore_id": datastore_id,
            "image_set_ids": ids,
        }
        if report is not None:
            info["import"] = report.to_json()
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if command:
            if args.json:
                print(json.dumps(info), flush=True)
            print(f"async-hi emulator on {emu.endpoint_url}; running {command[0]}", file=sys.stderr)
            return await _run_command(command, info, stop)
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"HealthImaging emulator on {emu.endpoint_url} (region {emu.region})")
            print(f"  AWS_ACCESS_KEY_ID={emu.access_key_id}")
            print(f"  AWS_SECRET_ACCESS_KEY={emu.secret_access_key}")
            print(
                f"  SigV4 {'off' if args.no_sigv4 else 'verified'}; "
                f"quotas {'off' if quotas is None else 'on'}; LOCKED window {args.lock_seconds}s"
            )
            if report is not None:
                print("  DICOM import: " + "\n    ".join(report.lines()))
            if datastore_id:
                print(f"  datastore {datastore_id}")
                for isid in ids:
                    print(f"    image set {isid}")
            print(f"  admin API: {emu.endpoint_url}/_emulator/health")
            print(
                f"  try: aws medical-imaging get-image-set --endpoint-url {emu.endpoint_url} "
                f"--region {emu.region} --datastore-id {datastore_id} "
                f"--image-set-id {(ids or ['ID'])[0]}"
            )
            print("Ctrl-C stops it.", flush=True)
        await stop.wait()
    return 0


def _log_without_blocking() -> None:
    """Log to stderr through a bounded queue: a stderr nobody reads must never stall the server."""
    import logging

    from async_hi.emulator._guard import NonBlockingHandler

    root = logging.getLogger()
    if not root.handlers:
        handler = NonBlockingHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    _log_without_blocking()
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"async-hi emulator: cannot bind {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
