"""Helpers shared by CLI command modules."""

from __future__ import annotations


class CliError(Exception):
    """Bad input: printed as one line on stderr, exit code 2."""
