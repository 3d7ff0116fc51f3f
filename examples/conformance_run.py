"""Run the conformance suite from Python and act on the report.

Against the embedded emulator by default (every check passes); point it at a
mock server or proxy of yours with --endpoint (read-only unless --allow-writes).

    python examples/conformance_run.py
    python examples/conformance_run.py --endpoint http://127.0.0.1:4566 --datastore-id D --image-set-id I
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from conformance import Credentials, Outcome, Report, Target, emulator_target, run_conformance


async def run(args: argparse.Namespace) -> Report:
    if args.endpoint is None:
        async with emulator_target() as target:
            return await run_conformance(target, select=args.select)
    target = Target(
        endpoint_url=args.endpoint,
        credentials=Credentials(
            access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=args.region,
        ),
        datastore_id=args.datastore_id,
        image_set_id=args.image_set_id,
        allow_writes=args.allow_writes,
    )
    return await run_conformance(target, select=args.select)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--datastore-id")
    parser.add_argument("--image-set-id")
    parser.add_argument("--allow-writes", action="store_true")
    parser.add_argument("--select", nargs="*", default=[], help="check ids or groups (default: all)")
    args = parser.parse_args()
    report = anyio.run(run, args)
    for result in report.results:
        if result.outcome is not Outcome.PASS:
            print(f"{result.check.id} {result.check.level.value} {result.outcome.value}: {result.message}")
    counts = report.counts()
    print(f"{len(report.results)} checks in {report.seconds:.1f} s: {counts}")
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
