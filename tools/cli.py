"""`itpump` entry point: one sub-command per module under tools/."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

# Each module named here exposes `register(subparsers)`, which adds its sub-parser and sets
# `func(args) -> int` as the default. Order is the order shown in --help.
SUBCOMMAND_MODULES = (
    "itpump.tools.simulate",
    "itpump.tools.profiles",
    "itpump.tools.serve",
    "itpump.tools.pk",
    "itpump.tools.accuracy",
    "itpump.tools.ctl",
    "itpump.tools.decode",
    "itpump.tools.replay",
    "itpump.tools.sweep",
)


class UsageError(Exception):
    """Bad user input detected after parsing; printed without a traceback, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line on stderr, like a `UsageError`.

    argparse's own error() prints the whole usage block first; in CI logs that buries the one
    line that names the flag, and scripts that read the first stderr line get the usage
    instead. `--help` still prints the usage. Sub-parsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see --help)` and exit with status 2 (SystemExit, as
        argparse does)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full `itpump` parser with every sub-command registered (or only the sub-command
    `only`: what one command needs to parse its own arguments)."""
    parser = OneLineParser(
        prog="itpump",
        description=(
            "Emulator of an implanted programmable intrathecal drug pump: simulated therapy, "
            "pharmacokinetics and a serial telemetry harness for clinician-programmer tests."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        if only is None or name.rsplit(".", 1)[1] == only:
            importlib.import_module(name).register(sub)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    # The sub-command a command line names, if it is a known one. The top-level options take
    # no value (-v), so the first other word is the command.
    known = {name.rsplit(".", 1)[1] for name in SUBCOMMAND_MODULES}
    for word in argv:
        if not word.startswith("-"):
            return word if word in known else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run `itpump`; returns the process exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    # Registering every sub-command imports what each needs (the telemetry protocol, the
    # programmer, ...): ~0.2 s that `itpump simulate` need not pay. Help and errors about
    # the command itself still get the full parser.
    parser = build_parser(_command_named(words))
    args = parser.parse_args(words)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
    except UsageError as exc:
        print(f"itpump {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error. Point stdout at devnull
        # so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    # Run as `python -m itpump.tools.cli`, this file is `__main__`, and the sub-commands would raise
    # tools.cli.UsageError, a class this copy does not catch: hand over to the imported module.
    from itpump.tools.cli import main as imported_main

    sys.exit(imported_main())
