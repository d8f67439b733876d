"""`xmodel`: one command line over the whole pipeline.

Each subcommand lives in its own module with `register(subparsers)` (adds its parser and sets `func`).
Bad input ends in one line on stderr and exit code 2; set XMODEL_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import XmodelError

# Subcommand modules, in the order of the pipeline; later stages add theirs here.
COMMANDS = ["info", "init", "generate", "schedule", "agent"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the problem and where to read more."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(
        prog="xmodel",
        description="Pretrain, tune, evaluate and export small language models the Xmodel-LM / Xmodel-2 way.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'xmodel COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"xmodel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    accepts_overrides = getattr(args, "accepts_overrides", False)
    if extra and not accepts_overrides:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if accepts_overrides:
        args.overrides = extra
    try:
        return args.func(args) or 0
    except XmodelError as e:
        print(f"xmodel {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xmodel {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if os.environ.get("XMODEL_DEBUG"):
            raise
        print(f"xmodel {args.command}: error: {e}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
