"""The ``async-hi`` command line: ``emulator``, ``conformance``, ``update``, ``demo``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and a
``run(args) -> int``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
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
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
