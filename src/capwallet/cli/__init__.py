"""The ``capwallet`` command line. Each command group lives in its own module and registers
its subcommands here. Exit codes: 0 success (verify: allow), 1 deny (verify judged the token,
a malformed one included, and refused the request), 2 bad arguments (the command could not
run as given: a missing file, an unreadable value)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from capwallet.cli import conformance_commands, token_commands, wallet_commands
from capwallet.cli.common import CliError

GROUPS = [token_commands, wallet_commands, conformance_commands]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one clear line on stderr (and exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # Name the stray flags but not their values: a value may be a pasted key or token.
            words = message[len(prefix):].split()
            shown = [w if w.startswith("-") else "…" for w in words]
            message = prefix + " ".join(shown)
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="capwallet",
        description="Capability tokens that let apps use your AI accounts within your limits.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"capwallet: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()
    try:
        sys.stdout.flush()  # here, where a closed pipe can still be told apart from a bug
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """The reader of our output went away (``capwallet inspect T --json | head``): stop quietly
    as a shell tool does, 128 + SIGPIPE, instead of a traceback; stdout goes to /dev/null so
    the interpreter's own flush at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141
