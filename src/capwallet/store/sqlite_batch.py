"""One commit batch of the SQLite store, as a transaction: the cursor that owes the usual
writes until the batch's end, and the run of the batch's operations in one ``BEGIN IMMEDIATE
... COMMIT`` (each inside its own SAVEPOINT only when one of them fails).

Apart from the store because this is what happens inside one transaction, on whichever
connection runs it (the event loop's or the worker thread's). The store (sqlite.py) decides
when a batch runs and where, and hands out its outcomes; an operation is a function of the
batch's cursor (``_Op``) that writes at once or owes its writes (``_Cursor.defer``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from capwallet.store.base import LedgerEntry
from capwallet.store.sqlite_statements import (
    _ADD_USED_ONE,
    _DELETE_RESERVATION,
    _USAGE_ADD_ONE,
    INSERT_ROWS,
    USAGE_ROWS,
    _insert_ledger,
    _insert_reservations,
    _insert_shared_sql,
    _usage_add,
)

_UsageKey = tuple[int, str, str, str, str, str]  # day, token, app, provider, model, currency
_UsageSum = tuple[int, int, int, int]  # cost, calls, input tokens, output tokens


class _Stale(Exception):
    """A settle written at the batch's end found its reservation already closed (by another
    process's lease sweep): the batch runs again, each write in turn, so that settle is told."""


class _Cursor(sqlite3.Cursor):
    """A batches' cursor, carrying what its open transaction still owes the database: the
    writes of the batch's usual operations, merged and written together at its end (``owe``).

    Why: under load a batch holds the reserves and settles of several calls, and these mostly
    touch the same few rows (one token's counters, its usage total for today, the ledger's
    last leaf). Written one statement per operation, a call cost six statements; owed, a
    batch writes each kind once: the new reservations and the ledger rows (a multi-row
    INSERT each), the closed ones (``executemany``: measured cheaper than ``id IN (...)``),
    each counter's merged delta and the usage totals (upserts).
    What an operation later in the batch reads, it reads through what is owed: a reserve adds
    the counters' owed deltas to the values it reads (``adds``), and the operations that read
    or change the reservations or the ledger themselves (a settle of a reservation this
    process did not make, an expiry, a refusal, a prune) first write what is owed
    (``owe``). Nothing else reads these tables inside a batch, and the owed writes are
    written before the same COMMIT: they commit together with the rest, or not at all.

    A settle owes its DELETE too: its outcome (True) assumes its reservation is still open,
    which this process knows for the reservations it made unless another process's sweep
    expired one meanwhile; if the owed DELETEs close fewer rows than were owed, _Stale makes
    the batch run again with ``defer`` off (each operation writing at once, as a failed
    batch's retry does, see _run_batch), so that settle finds it closed and returns False.
    Counters: a merged delta is the sum of the ops' deltas, written as one upsert that keeps
    the counter at or above 0 as each op's did; the two agree since a counter never drops
    below what its open reservations hold (a settle's negative delta is at most its own
    hold), so no op's delta clamped at 0 before either.

    Reads: a batch's transaction holds the write lock, so only the batch changes what its
    reserves read. The first reserve of a token reads its revocation and counters; the next
    ones of the batch reuse those values (``seen``, ``live``) plus the owed deltas instead of
    reading again (under load a batch holds several calls of one token). They are forgotten
    whenever the batch changes them another way: a revocation, and every ``owe`` (which
    writes the deltas, and precedes every write made at once in a deferred batch)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self.defer = False  # owe the usual writes (else write each at once)
        self.usage: dict[_UsageKey, _UsageSum] = {}  # totals owed per usage_daily row
        self.adds: dict[str, list[Any]] = {}  # counter key -> [delta owed, its resets_at]
        self.inserts: list[Any] = []  # new reservation rows owed, their values in one list
        self.insert_width = 6  # values per row in ``inserts`` (one shape at a time)
        self.deletes: list[tuple[str]] = []  # ids of reservations whose DELETE is owed
        self.rows: list[Any] = []  # ledger rows owed, their values in one list
        self.row_width = 14  # values per row in ``rows`` (one shape at a time)
        # Read by this batch's reserves: counters' values as stored (without ``adds``), and
        # tokens found not revoked. Forgotten when the owed writes are written (``owe``).
        self.seen: dict[str, int] = {}
        self.live: set[str] = set()

    def forget(self) -> None:
        """Drop what is owed (the transaction rolled back)."""
        self.usage.clear()
        self.adds.clear()
        self.inserts.clear()
        self.deletes.clear()
        self.rows.clear()
        self.seen.clear()
        self.live.clear()

    def owe_insert(self, row: tuple[Any, ...]) -> None:
        """Owe a new reservation's row (a row of another shape than those owed first writes
        those: one multi-row INSERT holds one shape)."""
        if len(row) != self.insert_width:
            if self.inserts:
                _insert_rows(self, _insert_reservations, self.inserts, self.insert_width)
            self.insert_width = len(row)
        self.inserts += row

    def owe_ledger(self, row: tuple[Any, ...]) -> None:
        """Owe a ledger row (as owe_insert, per shape)."""
        if len(row) != self.row_width:
            if self.rows:
                _insert_rows(self, _insert_ledger, self.rows, self.row_width)
            self.row_width = len(row)
        self.rows += row

    def owe(self) -> None:
        """Write what is owed, in the order the ops would have (new reservations before
        closed ones: a reservation opened and closed in one batch is opened first), and
        forget what the batch read (the counters now hold the deltas)."""
        self.seen.clear()
        self.live.clear()
        if self.inserts:
            _insert_rows(self, _insert_reservations, self.inserts, self.insert_width)
        if self.deletes:
            n = self.executemany(_DELETE_RESERVATION, self.deletes).rowcount
            if n != len(self.deletes):
                raise _Stale
            self.deletes.clear()
        if self.adds:
            self.executemany(_ADD_USED_ONE, [(k, d, r) for k, (d, r) in self.adds.items()])
            self.adds.clear()
        if self.rows:
            if self.row_width != 14 or not _insert_shared(self, self.rows):
                _insert_rows(self, _insert_ledger, self.rows, self.row_width)
        if self.usage:
            _add_usage(self)


def _insert_rows(cur: _Cursor, sql: Callable[[int, int], str], values: list[Any],
                 width: int) -> None:
    """Insert the rows whose ``width`` values each ``values`` holds in order, then forget them:
    one multi-row INSERT per INSERT_ROWS rows (measured cheaper than ``executemany`` of the
    rows, whose every row is a step and a reset of its own: callgrind, a batch of 20 calls,
    -8 K instructions per call)."""
    step = INSERT_ROWS * width
    for i in range(0, len(values), step):
        chunk = values[i:i + step] if len(values) > step else values
        cur.execute(sql(len(chunk) // width, width), chunk)
    values.clear()


_Op = Callable[[_Cursor], Any]


class _Failed:
    """The outcome of an op that raised: its exception (an op's value otherwise, as it is:
    no tuple per op to say which)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


_Outcome = Any  # an op's value, or _Failed


def _insert_shared(cur: _Cursor, values: list[Any]) -> bool:
    """Insert the owed ledger rows of width 14 in ``values`` with their shared last 8 values
    bound once, then forget them; False (nothing done) unless there are several rows, at most
    INSERT_ROWS, that all share them."""
    n = len(values) // 14
    if n < 2 or n > INSERT_ROWS:
        return False
    shared = values[6:14]
    params = values[0:6]
    for i in range(14, len(values), 14):
        if values[i + 6:i + 14] != shared:
            return False
        params += values[i:i + 6]
    params += shared
    cur.execute(_insert_shared_sql(n), params)
    values.clear()
    return True


class _Busy(Exception):
    """The write lock is taken: use the worker thread, which waits for it."""


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _begin(cur: _Cursor) -> None:
    try:
        cur.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _Busy from None
        raise


def _run_batch(cur: _Cursor, ops: Sequence[_Op]) -> list[_Outcome]:
    """Run ``ops`` in one transaction, in call order, and commit what succeeded: an op that
    raises is rolled back alone and its exception is its outcome (_Failed).

    The batch first runs with its usual writes owed and written together at its end (see
    _Cursor), and no savepoints (two statements fewer per op). If anything raises (an op, or
    the owed writes: a duplicate reservation id, a reservation closed meanwhile), the batch
    is rolled back and runs again writing each op's rows at once, each op inside its own
    SAVEPOINT, so an op that raises is rolled back alone and gets its own exception. An op
    changes only the database and what its cursor owes, so running it again is running it
    later.

    Raises _Busy if BEGIN finds the write lock taken (or still taken after the connection's
    busy timeout), or the sqlite3.Error that failed the transaction as a whole (nothing was
    committed). ``cur`` is the connection's one cursor: reusing it spares each statement a
    cursor object (measured: about 2 us a statement)."""
    _begin(cur)  # (nothing is owed between batches: each ends in owe() or forget())
    try:
        try:
            cur.defer = defer = len(ops) > 1  # a lone op has nothing to merge with
            outcomes: list[_Outcome] = [op(cur) for op in ops]
            if defer:
                cur.owe()
            elif cur.usage:
                _add_usage(cur)
        except Exception:  # an op's, or a write's: found again below, op by op
            if cur.connection.in_transaction:
                cur.execute("ROLLBACK")
            cur.forget()
            cur.defer = False
            _begin(cur)
            outcomes = _with_savepoints(cur, ops)
            cur.owe()
        cur.execute("COMMIT")
    except BaseException:
        cur.forget()
        if cur.connection.in_transaction:
            cur.execute("ROLLBACK")
        raise
    return outcomes


def _with_savepoints(cur: _Cursor, ops: Sequence[_Op]) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    for op in ops:
        cur.execute("SAVEPOINT op")
        owed = cur.usage.copy()  # the totals are immutable tuples: a copy is a snapshot
        try:
            outcomes.append(op(cur))
        except Exception as exc:  # handed to the op's caller
            if not cur.connection.in_transaction:
                raise  # SQLite rolled everything back (I/O error, disk full)
            cur.execute("ROLLBACK TO op")
            cur.usage = owed  # the op's totals roll back with its rows
            outcomes.append(_Failed(exc))
        cur.execute("RELEASE op")
    return outcomes


def _add_usage(cur: _Cursor) -> None:
    """Write the usage totals the transaction owes (merged per aggregate row), then forget them."""
    owed = cur.usage
    if len(owed) == 1:  # the usual batch at low concurrency
        for key, total in owed.items():
            cur.execute(_USAGE_ADD_ONE, key + total)
    else:
        rows = list(owed.items())
        for i in range(0, len(rows), USAGE_ROWS):
            chunk = rows[i:i + USAGE_ROWS]
            cur.execute(_usage_add(len(chunk)), [x for key, total in chunk for x in key + total])
    owed.clear()


def _record(c: _Cursor, entry: LedgerEntry, row: tuple[Any, ...]) -> None:
    """Write a settled call's ledger row (or owe it) and add it to the usage aggregates (one
    step: the totals are written before the same transaction commits, merged with the
    batch's others)."""
    if c.defer:
        if len(row) == c.row_width:
            c.rows += row
        else:
            c.owe_ledger(row)
    else:
        c.execute(_insert_ledger(1, len(row)), row)
    # counts_as_usage(entry) and usage_day(entry.time) written out (three Python calls
    # less per settled call; tests/test_store_sqlite.py checks they agree).
    if entry.provider and not entry.status.startswith("denied"):
        key = (entry.time // 86400, entry.token_id, entry.app, entry.provider, entry.model,
               entry.currency)
        old = c.usage.get(key)
        c.usage[key] = ((entry.cost, 1, entry.input_tokens, entry.output_tokens) if old is None
                        else (old[0] + entry.cost, old[1] + 1, old[2] + entry.input_tokens,
                              old[3] + entry.output_tokens))
