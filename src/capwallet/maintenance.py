"""A periodic maintenance loop that a failed turn does not end.

The relay's lease sweep (reference_relay.app) and the wallet's counter sweep
(capwallet.wallet.expired) each run a turn every so often, for as long as their process runs.
Both caught StoreUnavailable only: any other error (an sqlite3 error of the wallet's grants
table, a stored record that a store could not read, ...) ended the task for good, with nothing
logged, and then the leases of crashed calls were never closed again, or the counters of
expired grants never deleted, until a restart. ``run_every`` is both loops, with one rule:

- A turn that raises an Exception is logged and the next turn runs at its time: the failure may
  pass (a lock released, a Redis back, a record repaired). Fail closed: a turn deletes only
  in the store's own transactions, so a failed one deletes nothing it had not finished.
- Shutdown ends the loop at once: cancellation (CancelledError), like KeyboardInterrupt and
  SystemExit, is a BaseException, never caught here.
- The log line names the error's kind (its type; an sqlite3 error's code, ``SQLITE_BUSY``) and
  where it was raised (file, line, function), never the error's own text: that may quote a
  value (``int()`` quotes what it could not read; an SQLite message quotes SQL, a trigger's
  text). StoreUnavailable's text is kept: it is the store's (or its client's) account of
  what failed, which an operator needs, and no store ever holds a provider key or a token.
- A failure that repeats is not logged every turn: the first failed turn is, then a turn that
  fails with another kind of error, then one turn in REMIND seconds' worth of turns while the
  failure lasts; the first turn that works after failures says so, with how many failed. Why:
  the lease sweep turns every 30 s, and 120 identical lines an hour bury the first one and the
  rest of the log; one an hour still shows it is not over. The kind compared is the type (and
  SQLite code), not the text, which may change between turns of one failure (a Redis that is
  down refuses or resets connections by turns).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import traceback
from collections.abc import Awaitable, Callable

from capwallet.store.base import StoreUnavailable

REMIND = 3600.0  # seconds of failed turns between two log lines of one failure that lasts


def kind_of(exc: Exception) -> str:
    """The error's kind: its type's name, an sqlite3 error's code with it."""
    kind = type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        kind += f" ({getattr(exc, 'sqlite_errorname', 'unknown code')})"
    return kind


def describe(exc: Exception) -> str:
    """What a log line says of a failed turn: the kind, where it was raised, and the text of a
    StoreUnavailable only (see the module docstring)."""
    text = kind_of(exc)
    if isinstance(exc, StoreUnavailable):
        text += f": {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
    return text


class FailedTurns:
    """Which failed turns of a loop are logged (the module docstring's rule), and the line."""

    def __init__(self, log: logging.Logger, what: str, interval: float) -> None:
        self.log = log
        self.what = what
        self.every = max(1, math.ceil(REMIND / interval))  # turns between two reminders
        self.count = 0  # failed turns in a row
        self.kind: str | None = None  # the last failed turn's kind

    def failed(self, exc: Exception) -> None:
        self.count += 1
        kind = kind_of(exc)
        if self.count == 1 or kind != self.kind:
            self.log.error("%s failed (tried again every turn): %s", self.what, describe(exc))
        elif self.count % self.every == 0:
            self.log.error("%s failed again, %d turns in a row: %s", self.what, self.count,
                           describe(exc))
        self.kind = kind

    def worked(self) -> None:
        if self.count:
            self.log.warning("%s works again, after %d failed turn(s)", self.what, self.count)
        self.count, self.kind = 0, None


async def run_every(interval: float, turn: Callable[[], Awaitable[object]],
                    log: logging.Logger, what: str) -> None:
    """Run ``turn`` now and every ``interval`` seconds after its end, until cancelled; a turn
    that fails is logged (``what`` names the loop: "lease sweep") and the next one runs."""
    failures = FailedTurns(log, what, interval)
    while True:
        try:
            await turn()
        except Exception as exc:  # every failure of a turn; BaseException (shutdown) ends it
            failures.failed(exc)
        else:
            failures.worked()
        await asyncio.sleep(interval)
