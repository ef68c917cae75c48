"""Helpers shared by CLI command modules."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from capwallet.identifier import MAX_SAFE_INTEGER


class CliError(Exception):
    """Bad input: printed as one line on stderr, exit code 2."""


def read_token_arg(value: str) -> str:
    """TOKEN may be '-' for standard input (so tokens stay out of shell history).

    The token is taken exactly as given, as a verifier takes it (spec/token-format.md): a
    token with spaces around it is malformed, not quietly repaired. From standard input one
    trailing line break (LF or CR LF), which `echo` and editors add, is removed; nothing else.
    """
    text = sys.stdin.read() if value == "-" else value
    if value == "-":
        text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text.strip():
        raise CliError("no token given")
    return text


def now_arg(value: int | None) -> int:
    """The clock a command uses: ``--now`` if given, else the system's. A ``--now`` outside the
    protocol's range (spec/verification.md#inputs) is a usage error here: the library raises
    ValueError for it, which would reach the user as a traceback."""
    if value is None:
        return int(time.time())
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise CliError(f"--now must be a Unix time from 0 to 2^53-1 (got {value})")
    return value


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))
