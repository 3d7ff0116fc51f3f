"""The ``async-hi`` command line: ``emulator``, ``conformance``, ``update``, ``demo``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and a
``run(args) -> int``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: subcommand -> module (imported only when that subcommand runs)
_COMMANDS = {
    "emulator": "async_hi.cli._emulator",
    "conformance": "async_hi.cli._conformance",
    "update": "async_hi.cli._update",
    "demo": "async_hi.cli._demo",
}


def _available() -> dict[str, object]:
    mods: dict[str, object] = {}
    for name, module in _COMMANDS.items():
        try:
            mods[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="async-hi",
        description="Asynchronous AWS HealthImaging metadata updates: emulator, bulk updates, conformance.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _available().values():
        mod.add_parser(sub)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (Ctrl-C anywhere: 130, without a traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    json_job = argv[:1] == ["update"] and "--json" in argv
    started = False
    try:
        parser = build_parser()
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            sys.stderr.write(errors.getvalue())
            if exc.code not in (0, None) and json_job:
                _json_usage_error(errors.getvalue())  # the one JSON line --json promises
            raise
        sys.stderr.write(errors.getvalue())
        started = True  # from here on the subcommand prints its own JSON line
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("async-hi: interrupted", file=sys.stderr)
        if json_job and not started:
            from async_hi.cli._progress import JobSummary, print_summary

            print_summary(JobSummary(manifest="", interrupted=True), as_json=True)
        return 130
    return result


def _json_usage_error(message: str) -> None:
    from async_hi.cli._progress import JobSummary, print_summary

    lines = [line for line in message.splitlines() if ": error: " in line]
    why = lines[-1].split(": error: ", 1)[1] if lines else "see the usage message"
    print_summary(JobSummary(manifest="", error=f"bad arguments: {why}"), as_json=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
