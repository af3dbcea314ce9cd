"""The ``mediastream`` command line: the only module that reads argv.

Each subcommand lives with its feature and registers itself here through an
``add_parser(subparsers)`` function that sets ``func`` on its parser:
``serve`` (mediastream.server.cli) and ``call`` (mediastream.caller.cli).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_SUBCOMMANDS = (
    "mediastream.server.cli",
    "mediastream.caller.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediastream",
        # Exact flags only: an abbreviation (--drain for --drain-timeout) in a manifest or a
        # script would keep working until a new flag made it ambiguous.
        allow_abbrev=False,
        description="Media-stream server for telephony voice bots (Twilio, Telnyx, Plivo).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result = func(args)
    return int(result or 0)
