"""The fake provider's fault modes: the ways it misbehaves on demand, parsed from their names.

The modes and what each does are listed under "Fault modes" in fake_provider.server; a mode is
named by a model id `fault-<mode>` or queued with POST /_fake/faults. Applying one to a call is
fake_provider.calls' business; this module only says which names are modes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LONG_TOKENS = 100_000
MAX_FAULT_MS = 600_000

_FAULTS_WITH_ARG = frozenset({"delay", "stream_cut", "slow_stream", "long"})
_FAULTS_PLAIN = frozenset({"http500", "http429", "reset", "malformed", "no_usage",
                          "no_output_count"})


@dataclass(frozen=True)
class Fault:
    """One parsed fault mode; `arg` is the ms / chunk count / token count, 0 when unused."""

    kind: str
    arg: int = 0

    @property
    def mode(self) -> str:
        return f"{self.kind}:{self.arg}" if self.kind in _FAULTS_WITH_ARG else self.kind


def parse_fault(mode: str) -> Fault:
    """Parse `kind` or `kind:<int>`; ValueError with a readable message when it is not one."""
    kind, sep, arg = mode.partition(":")
    if kind in _FAULTS_PLAIN and not sep:
        return Fault(kind)
    if kind in _FAULTS_WITH_ARG and sep and arg.isdigit() and arg.isascii():
        value = int(arg)
        limit = MAX_LONG_TOKENS if kind == "long" else MAX_FAULT_MS
        if kind == "long" and value < 1:
            raise ValueError("long:<n> needs n >= 1")
        if value > limit:
            raise ValueError(f"{kind} argument must be at most {limit}")
        return Fault(kind, value)
    known = sorted(_FAULTS_PLAIN) + sorted(f"{k}:<int>" for k in _FAULTS_WITH_ARG)
    raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(known)}")


@dataclass
class QueuedFault:
    fault: Fault
    remaining: int
