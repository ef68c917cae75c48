"""The embedded store: one SQLite file, safe for several processes (spec/budgets.md).

Why SQLite: a local relay needs durable counters without a server to run. Correctness under
concurrency comes from SQLite itself: WAL mode, and every write transaction is ``BEGIN
IMMEDIATE``, which takes the database's single write lock up front, so the check "used +
amount <= limit" and the increment cannot interleave with another writer in this process or in
any other process using the same file.

Writes: group commit on the event loop's thread. A write (reserve, settle, append_ledger, ...)
is queued in memory and its caller awaits a future; the first write of a loop iteration yields
once and then runs the batch, so every write requested in the same iteration runs in ONE
``BEGIN IMMEDIATE ... COMMIT``, in call order. Inside it, the reserves' and settles' writes
are owed and written together at the batch's end: one upsert per counter of its merged delta,
one multi-row INSERT each for the new reservations and the ledger rows, one ``executemany``
of the closed reservations' DELETEs, one upsert per usage total (_Cursor says why, and how a
later reserve still sees the counters the earlier ones changed), and a token's counters are
read once per batch, not once per reserve: a batch of several calls runs under two
statements per call instead of six. An operation that fails (a duplicate reservation id:
ValueError) rolls back only itself and gets its own exception; the others commit (a batch in
which an operation or an owed write raises is rolled back and runs again writing each
operation's rows at once, with a SAVEPOINT around each; the usual batch needs none). Every
future resolves after the COMMIT. A settle nobody waits for (``settle_soon``: the relay's,
once the answer is sent) is queued the same way with its Outcome in place of a future, and a
batch it would lead is flushed by ``loop.call_soon``; drain() and close() wait for it.
A settle leads a batch as any write does: made to wait for the next reserve's batch instead
(1 ms, or up to 3 or 8 turns of the loop), it cut the relay's commits per call at
concurrency 20 from 0.21-0.34 to 0.18-0.21 with no CPU gain a timed run could show (issue
17), and it would add that wait to every awaited settle (a stream's end, bench/store.py's
callers).
Why on the loop's thread: an uncontended transaction without fsync costs tens of
microseconds, less than handing it to a thread and back under the GIL; and one commit for many
writes writes each page they share (a counter, the ledger's last leaf) once.

Contention: the loop thread's connection never waits for the lock (busy timeout 0). If another
process holds it, the batch tries again on the loop a few times over about 3 ms (BUSY_RETRIES;
another relay's batch holds the lock for well under a millisecond, and a thread hop costs more
than a retry); if the lock is still taken, the whole batch goes to one worker thread whose
connection waits up to BUSY_TIMEOUT_MS (then StoreUnavailable: deny), so a slow lock never
blocks the event loop.
Writes requested while a batch is on the worker wait in memory and go as the next batch: one
thread hop per batch, never per write, and batches commit in call order.

Checkpoints: the loop thread's connection never checkpoints (a checkpoint fsyncs). Every
CHECKPOINT_EVERY commits the worker runs a PASSIVE checkpoint; writes requested
meanwhile wait in memory (and then go as one batch), so the checkpoint can finish and the next
commit starts the WAL over from its beginning: under steady load the WAL stays bounded instead
of growing while writers keep appending to it. That next commit runs on the worker as well:
starting the WAL over, SQLite syncs its new header (an fdatasync), which must not stall the loop.

Reads (``snapshot``, ``counters``, ...) run on the caller's thread; WAL readers never wait for
writers. Inside the loop that runs the batches they use the batches' connection (never in a
transaction between two batches, and its page cache survives its own commits); elsewhere a
third connection. ``snapshot`` is one statement. A settle of a reservation this process made
takes its holds from memory instead of reading the row back (its DELETE still decides whether
the reservation was open). One SQLiteStore serves one event loop at a time (a second loop that
writes while the first has writes in flight gets StoreUnavailable); other processes (or loops)
open their own.

Durability: ``synchronous=NORMAL`` by default, which in WAL mode survives a crash of the relay
process but may lose the last transactions on power loss; ``sqlite:///path?synchronous=full``
makes every commit durable at the cost of an fsync each. With ``full`` every batch runs on the
worker (its commit fsyncs), still one commit, so one fsync, per batch.

What a reservation's ``meta`` should hold, for the ledger row written when its lease expires:
``app``, ``provider``, ``model``, ``operation``, ``input_tokens``, ``output_tokens``, ``cost``,
``currency`` (the reserved worst case) and ``chain_id``. Missing keys are logged as empty or 0.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from orjson import dumps as _dumps

from capwallet.loops import running_loop
from capwallet.store.base import (
    MAX_CHAINS,
    Chain,
    Hold,
    LedgerEntry,
    Outcome,
    PendingApproval,
    Reservation,
    ReserveResult,
    Snapshot,
    Store,
    StoreUnavailable,
    UsageTotal,
    counts_as_usage,
    usage_day,
)

T = TypeVar("T")
SCHEMA_VERSION = 2  # 2: ledger.chain_id and the chains table
BUSY_TIMEOUT_MS = 5000
BUSY_RETRIES = 4  # tries on the loop before a batch that finds the lock taken goes to the worker
BUSY_RETRY_S = 0.0002  # the first try's wait; each next one waits twice as long (3 ms in all)
# Commits (batches) between checkpoints: a commit writes each page its batch touched once, 4-8
# pages whatever the batch's size, so this bounds the WAL (about 1000 pages, 4 MB) where a
# count of writes did not: 200 writes were 200 commits alone but 30 in batches of 7, and each
# checkpoint copied the same few hot pages (counters, the ledger's last leaf) and synced the
# files again (measured, bench/store.py's calls at concurrency 20: 11 us less CPU per call).
CHECKPOINT_EVERY = 128
HOLDS_CACHE = 16384  # open reservations whose holds this process remembers for their settle

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    used INTEGER NOT NULL,
    resets_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    holds TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    approval_id TEXT,
    created_at INTEGER NOT NULL,
    meta TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used_approvals (
    approval_id TEXT PRIMARY KEY,
    used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
    token_id TEXT PRIMARY KEY,
    revoked_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    app TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    reservation_id TEXT,
    request_body TEXT,
    response_body TEXT
);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger (time);
CREATE INDEX IF NOT EXISTS ledger_token_time ON ledger (token_id, time);
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    approval TEXT,
    kind TEXT NOT NULL DEFAULT 'model_call'
);
CREATE INDEX IF NOT EXISTS pending_status ON pending (status, expires_at);
CREATE TABLE IF NOT EXISTS usage_daily (
    day INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    app TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    currency TEXT NOT NULL,
    cost INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, token_id, app, provider, model, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chains (
    token_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    caveats TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (token_id, chain_id)
) WITHOUT ROWID;
"""


# Columns added after the first release, to old files and new ones alike (CREATE TABLE IF NOT
# EXISTS leaves an old file's tables as they were): (table, column, declaration, why).
_ADDED_COLUMNS = (
    # refusals compacted into one row per token, status and minute
    ("ledger", "count", "INTEGER NOT NULL DEFAULT 1"),
    # approvals state their kind; an old file's open requests were all the relay's model calls
    ("pending", "kind", "TEXT NOT NULL DEFAULT 'model_call'"),
    # the token chain that made the call (old rows: '', unknown)
    ("ledger", "chain_id", "TEXT NOT NULL DEFAULT ''"),
)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a store file the columns added since it was made. ADD COLUMN with a constant
    default rewrites nothing (SQLite reads the default for old rows), so opening a large old
    file stays quick. Two processes may race to add a column: the loser's duplicate is fine."""
    for table, column, declaration in _ADDED_COLUMNS:
        cols = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        if column in cols:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


# Every page a transaction touches is one more WAL frame to write, so the hot tables are
# WITHOUT ROWID (the primary key is the table: one page, not table + key index) and the
# reservations table, which only holds calls in flight, has no lease index (the sweep scans it).
# The ledger's seq is a plain INTEGER PRIMARY KEY: AUTOINCREMENT would also rewrite
# sqlite_sequence on every insert (one more page per commit). Only the oldest rows are ever
# deleted (prune_ledger), so the next rowid is always max + 1, the same order. Files created
# before this still have AUTOINCREMENT (CREATE TABLE IF NOT EXISTS leaves them be) and work
# unchanged. A settled call also adds to one usage_daily row (the aggregates): one upsert per
# row and batch, of the batch's merged totals (_Cursor).
# The ledger's two indexes are what its reads need (EXPLAIN QUERY PLAN, tests/test_store_sqlite):
# ledger_time serves the wallet's recent calls of every token (ORDER BY time DESC, seq DESC
# LIMIT: a walk back from the index's end) and the retention's DELETE by time; seq order cannot
# stand in for it, as a row's time is its call's and calls settle out of order (a long stream
# after many short calls). ledger_token_time serves one token's rows. Each costs about 1.5% of
# a call's store CPU (callgrind, bench/store.py's call at c=20: 325 K -> 320 K instructions
# without ledger_time).

_LEDGER_COLUMNS = (
    "time, token_id, app, provider, model, operation, input_tokens, output_tokens, cost, "
    "currency, status, latency_ms, reservation_id, request_body, response_body, chain_id"
)
# A NULL is written by leaving its column out, never by binding None: Python's sqlite3 binds
# None through its adapter protocol (a registry lookup and two failed attribute lookups, some
# 3,400 instructions each; an int or a str binds directly), and a relayed call's reservation
# (no approval) and ledger row (no bodies) had three (callgrind: 10 K instructions per call,
# 2.6% of the relay's capability logic). So a row is written in one of a few shapes, named by
# its width: the ledger's 16 columns, 14 without the bodies, 13 without the reservation id
# either (_ledger_row); the reservation's 7, or 6 without the approval (reserve).
_LEDGER_SHAPES = {
    16: _LEDGER_COLUMNS,
    # a row's own values first, then those a batch's rows mostly share (_insert_shared)
    14: "time, input_tokens, output_tokens, cost, latency_ms, reservation_id, token_id, app, "
        "provider, model, operation, currency, status, chain_id",
    13: _LEDGER_COLUMNS.replace(" reservation_id, request_body, response_body,", ""),
}
USAGE_ROWS = 256  # usage_daily rows per upsert statement (10 parameters each)
# Ledger or reservation rows per INSERT statement (16 or 7 parameters each): a batch's rows go
# as one statement of exactly their number up to this, so each number is one more prepared
# statement to keep (about 0.1 ms to prepare, once; see _connect).
INSERT_ROWS = 32
# A refusal adds to the row of the same token, status and minute, if there is one.
_REFUSAL_ADD = (
    "UPDATE ledger SET count = count + 1 WHERE seq = (SELECT seq FROM ledger "
    "WHERE token_id = ? AND time >= ? AND time < ? AND status = ? LIMIT 1)"
)
# First write wins; a token's chains stop at MAX_CHAINS (params: token, chain, caveats, time,
# token, MAX_CHAINS).
_NOTE_CHAIN = (
    "INSERT INTO chains (token_id, chain_id, caveats, first_seen) SELECT ?, ?, ?, ? "
    "WHERE (SELECT count(*) FROM chains WHERE token_id = ?) < ? "
    "ON CONFLICT (token_id, chain_id) DO NOTHING"
)
_RESERVATION_SHAPES = {
    7: "id, token_id, holds, lease_until, approval_id, created_at, meta",
    6: "id, token_id, holds, lease_until, created_at, meta",
}
_DELETE_RESERVATION = "DELETE FROM reservations WHERE id = ?"
_OK = ReserveResult(True)
_REVOKED = ReserveResult(False, revoked=True)
_APPROVAL_USED = ReserveResult(False, approval_used=True)


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON for what orjson refuses (_json_text) and a chain's caveats. json.dumps
    builds a new encoder on every call (a tenth of a reserve's Python time); this builds the
    C encoder once, where the interpreter has it.

    Not msgpack: packing a relayed call's holds and meta took 1.2 us against 3.8 us for this
    (timeit, issue 17) and makes the row 72 bytes smaller (259 against 331; the
    reservations of a batch still fit the page they share, so no WAL frame is saved), about
    1% of the relay's CPU per call. Not worth a dependency again, nor rows that a relay
    process of an earlier version sharing the file cannot read: its lease sweep would fail
    on every such row. A hand-written formatter was slower than this C encoder."""
    from json import encoder

    plain = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    c_encode = make(None, plain.default, encoder.encode_basestring_ascii, None, ":", ",",
                    False, False, True)
    return lambda obj: "".join(c_encode(obj, 0))


_compact = _json_encoder()


def _json_text(obj: Any) -> str:
    """Compact JSON text of a reservation's holds (plain tuples) or meta, written by orjson:
    the json module's C encoder took 36 K instructions per relayed call for the two
    (callgrind, the relay at c=20: 9% of the capability logic), orjson some 4 K. The text is
    JSON as before (the same values; non-ASCII as UTF-8 rather than \\u escapes), so a relay
    of an earlier version sharing the file reads these rows as its own. What orjson refuses
    (an int past 64 bits, a lone surrogate, a key that is not a str) goes through the json
    module as before."""
    try:
        return _dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return _compact(obj)


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
_Outcome = tuple[bool, Any]  # (True, the op's value) or (False, the exception it raised)


# Several counters are read with one statement of point lookups joined by UNION ALL: measured
# faster than ``key IN (...)`` (which builds an ephemeral table for its list) and than one
# statement per key. ``DELETE ... RETURNING`` was measured slower than SELECT then DELETE.
@lru_cache(maxsize=64)
def _used_sql(n: int) -> str:
    """(key, used) of ``n`` counters (params: the keys); absent counters have no row."""
    return " UNION ALL ".join(["SELECT key, used FROM counters WHERE key = ?"] * n)


@lru_cache(maxsize=64)
def _add_used(n: int) -> str:
    """Add to ``n`` counters in one statement (params: key, delta, resets_at per counter)."""
    rows = ", ".join(["(?, ?, ?)"] * n)
    return (f"INSERT INTO counters (key, used, resets_at) VALUES {rows} "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET used = max(used + excluded.used, 0)")


@lru_cache(maxsize=64)
def _usage_add(n: int) -> str:
    """Add ``n`` merged totals to the usage aggregates in one statement (params per row: day,
    token, app, provider, model, currency, cost, calls, input tokens, output tokens)."""
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return ("INSERT INTO usage_daily (day, token_id, app, provider, model, currency, cost, "  # noqa: S608
            f"calls, input_tokens, output_tokens) VALUES {rows} "
            "ON CONFLICT (day, token_id, app, provider, model, currency) DO UPDATE SET "
            "cost = cost + excluded.cost, calls = calls + excluded.calls, "
            "input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens")


_USAGE_ADD_ONE = _usage_add(1)


@lru_cache(maxsize=3 * INSERT_ROWS)
def _insert_ledger(n: int, width: int) -> str:
    """Insert ``n`` ledger rows of ``width`` values each in one statement (_LEDGER_SHAPES)."""
    row = f"({', '.join('?' * width)})"
    return (f"INSERT INTO ledger ({_LEDGER_SHAPES[width]}) VALUES "  # noqa: S608
            + ", ".join([row] * n))


# A batch's ledger rows are mostly one token's calls of one model: the same token, app,
# provider, model, operation, currency, status and chain. These are bound once for all the
# rows (numbered parameters, each used in every row), not once per row: every text bound is
# a copy into SQLite (sqlite3_bind_text, some 700 instructions with its Python side), and
# they are 8 of a row's 14 values, the last 8 in that shape (_LEDGER_SHAPES).


@lru_cache(maxsize=INSERT_ROWS)
def _insert_shared_sql(n: int) -> str:
    """Insert ``n`` ledger rows of width 14 sharing their last 8 values (params: each row's
    first 6 values, then the 8 shared ones once)."""
    shared = ", ".join(f"?{6 * n + i}" for i in range(1, 9))
    rows = ", ".join("(" + ", ".join(f"?{6 * k + i}" for i in range(1, 7)) + f", {shared})"
                     for k in range(n))
    return f"INSERT INTO ledger ({_LEDGER_SHAPES[14]}) VALUES {rows}"  # noqa: S608


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


@lru_cache(maxsize=2 * INSERT_ROWS)
def _insert_reservations(n: int, width: int) -> str:
    """Insert ``n`` reservation rows of ``width`` values each in one statement
    (_RESERVATION_SHAPES)."""
    row = f"({', '.join('?' * width)})"
    return (f"INSERT INTO reservations ({_RESERVATION_SHAPES[width]}) VALUES "  # noqa: S608
            + ", ".join([row] * n))


_ADD_USED_ONE = _add_used(1)


@lru_cache(maxsize=128)
def _reserve_read_sql(n: int, approval: bool) -> str:
    """What a reservation checks, in one statement: the token's revocation (a row (NULL, 0)),
    the approval's earlier use (a row (NULL, 1); params: token, [approval], the keys) and ``n``
    counters (key, used)."""
    parts = ["SELECT NULL, 0 FROM revoked WHERE token_id = ?"]
    if approval:
        parts.append("SELECT NULL, 1 FROM used_approvals WHERE approval_id = ?")
    if n:
        parts.append(_used_sql(n))
    return " UNION ALL ".join(parts)


@lru_cache(maxsize=64)
def _snapshot_sql(n: int) -> str:
    """The token's revocation (a row with key NULL) and ``n`` counters, one statement."""
    sql = "SELECT NULL, 1 FROM revoked WHERE token_id = ?"
    if n:
        sql += " UNION ALL " + _used_sql(n)
    return sql


class _Busy(Exception):
    """The write lock is taken: use the worker thread, which waits for it."""


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _connect(path: str, synchronous: str, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    # A batch's multi-row statements differ by their row count (up to INSERT_ROWS of each
    # kind, and each row shape is a kind: 3 ledger shapes and its shared-values INSERT, 2
    # reservation shapes, besides the upserts and reads by count): room in the connection's
    # cache of prepared statements (default 128) for them, so none is prepared again.
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False,
        cached_statements=512,
    )
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _begin(cur: _Cursor) -> None:
    try:
        cur.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _Busy from None
        raise


def _run_batch(cur: _Cursor, ops: Sequence[_Op]) -> list[_Outcome]:
    """Run ``ops`` in one transaction, in call order, and commit what succeeded: an op that
    raises is rolled back alone and its exception is its outcome.

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
            outcomes: list[_Outcome] = [(True, op(cur)) for op in ops]
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
            outcomes.append((True, op(cur)))
        except Exception as exc:  # handed to the op's caller
            if not cur.connection.in_transaction:
                raise  # SQLite rolled everything back (I/O error, disk full)
            cur.execute("ROLLBACK TO op")
            cur.usage = owed  # the op's totals roll back with its rows
            outcomes.append((False, exc))
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


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(f"SQLite store failed: {exc}")


def _ledger_row(entry: LedgerEntry, reservation_id: str | None) -> tuple[Any, ...]:
    """The values of ``entry``'s ledger row, in the shape (_LEDGER_SHAPES) that binds no None
    for the usual rows."""
    if entry.request_body is None and entry.response_body is None:
        if reservation_id is None:
            return (entry.time, entry.token_id, entry.app, entry.provider, entry.model,
                    entry.operation, entry.input_tokens, entry.output_tokens, entry.cost,
                    entry.currency, entry.status, entry.latency_ms, entry.chain_id)
        return (entry.time, entry.input_tokens, entry.output_tokens, entry.cost,
                entry.latency_ms, reservation_id, entry.token_id, entry.app, entry.provider,
                entry.model, entry.operation, entry.currency, entry.status, entry.chain_id)
    return (
        entry.time, entry.token_id, entry.app, entry.provider, entry.model, entry.operation,
        entry.input_tokens, entry.output_tokens, entry.cost, entry.currency, entry.status,
        entry.latency_ms, reservation_id, entry.request_body, entry.response_body,
        entry.chain_id,
    )


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
    if counts_as_usage(entry):
        key = (usage_day(entry.time), entry.token_id, entry.app, entry.provider, entry.model,
               entry.currency)
        old = c.usage.get(key)
        c.usage[key] = ((entry.cost, 1, entry.input_tokens, entry.output_tokens) if old is None
                        else (old[0] + entry.cost, old[1] + 1, old[2] + entry.input_tokens,
                              old[3] + entry.output_tokens))


def _merge_holds(holds: Sequence[Hold]) -> Sequence[Hold]:
    """One hold per counter key (amounts add, the smallest limit wins)."""
    n = len(holds)
    if n < 2 or (n == 2 and holds[0][0] != holds[1][0]) or len({h[0] for h in holds}) == n:
        return holds  # the usual case (a budget and a rate counter): nothing to merge
    merged: dict[str, Hold] = {}
    for h in holds:
        old = merged.get(h.counter_key)
        merged[h.counter_key] = h if old is None else Hold(
            h.counter_key, old.amount + h.amount, min(old.limit, h.limit),
            old.resets_at if old.resets_at is not None else h.resets_at,
        )
    return list(merged.values())


class SQLiteStore(Store):
    """Store backed by one SQLite file (see the module docstring for the concurrency model)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be normal, full or extra")
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise ValueError("the SQLite store needs a file path (several connections share it)")
        self._closed = False
        self._lock = threading.Lock()  # guards the reader connection across threads
        # Guards the batches' connection: it belongs to the loop that runs the batches, but a
        # second loop in another thread may take the store over between two batches while a
        # read of the first is still in SQLite (the GIL released), and one sqlite3 cursor
        # used by two threads at once can crash the process. Uncontended, about 0.1 us.
        self._fast_lock = threading.Lock()
        try:
            self._writer = _connect(self.path, synchronous)
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"SQLite could not switch {self.path} to WAL mode")
            # CREATE ... IF NOT EXISTS: several processes may open the same file at once.
            self._writer.executescript(_SCHEMA)
            _add_columns(self._writer)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._reader = _connect(self.path, synchronous)
            self._fast: sqlite3.Connection | None = None
            if synchronous.upper() == "NORMAL":
                self._fast = _connect(self.path, synchronous, busy_ms=0)
                self._fast.execute("PRAGMA wal_autocheckpoint = 0")
            # One cursor per connection, reused by every statement on it.
            self._fast_cur = None if self._fast is None else self._fast.cursor(_Cursor)
            self._writer_cur = self._writer.cursor(_Cursor)
            self._reader_cur = self._reader.cursor()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capwallet-sqlite")
        # Group commit state. The loop that runs the batches touches it on its own thread; a
        # loop in another thread reads it to find the store taken (and is refused), or takes it
        # over when it is idle. Which loop holds the store and the queue it appends to change
        # under ``_claim``: a check then an append without it let two threads both find the
        # store idle, queue into one batch and resolve the other loop's future from the wrong
        # thread (no wake-up: that loop slept in select for ever, seen as a hung test).
        self._claim = threading.Lock()
        self._queue: list[tuple[_Op, Outcome]] = []  # writes waiting for a batch
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that runs the batches
        # (that loop, its thread), replaced as one value so another thread never pairs one
        # loop with the other's thread when it asks whether it is the store's loop
        self._owner: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._active = False  # a flush is scheduled, or a batch or checkpoint is on the worker
        self._since_checkpoint = 0  # commits since the last checkpoint
        self._restart_due = False  # a checkpoint ran: the next batch goes to the worker
        self._busy_tries = 0  # consecutive flushes that found the write lock taken
        self._drained: asyncio.Future[None] | None = None  # drain() waits for the queue
        # reservation id -> its (merged) holds, for the settle of a reservation this process
        # made: it need not read the row back (the DELETE still decides whether it is open).
        self._holds: OrderedDict[str, Sequence[Hold]] = OrderedDict()
        # What the group commit did, for benchmarks: commits (batches) and the writes in them.
        self.commits = 0
        self.writes = 0

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (as in SQLAlchemy),
        optional ``?synchronous=normal|full|extra``."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"not a sqlite URL: {url!r} (write sqlite:///path/to/file.db)")
        path = parts.path[1:]
        if not path:
            raise ValueError("sqlite URL has no file path")
        opts = parse_qs(parts.query)
        sync = opts.get("synchronous", ["normal"])[-1]
        return cls(path, synchronous=sync)

    # -- group commit -----------------------------------------------------------------------

    async def _write(self, op: Callable[[_Cursor], T]) -> T:
        """Queue ``op`` for the next batch and wait for its outcome (after the COMMIT)."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        loop = running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._enqueue(loop, op, future):
            return await future
        # The first write of this iteration leads the batch: it lets the loop run the other
        # callers of this iteration once (they queue theirs), then runs the batch itself, and
        # usually has its outcome without being woken again.
        try:
            await asyncio.sleep(0)
        except BaseException:  # cancelled: the batch still runs, without this write
            future.cancel()
            loop.call_soon(self._flush)
            raise
        self._flush()
        return future.result() if future.done() else await future

    def _write_soon(self, op: _Op, outcome: Outcome) -> None:
        """Queue ``op`` for the next batch, its outcome to ``outcome`` (settle_soon): nobody
        waits, so the batch is flushed from the loop (``call_soon``) if no write leads it."""
        if self._closed:
            outcome.set_exception(StoreUnavailable("store is closed"))
            return
        loop = running_loop()
        try:
            lead = self._enqueue(loop, op, outcome)
        except StoreUnavailable as exc:
            outcome.set_exception(exc)
            return
        if lead:
            loop.call_soon(self._flush)

    def _enqueue(self, loop: asyncio.AbstractEventLoop, op: _Op, outcome: Outcome) -> bool:
        """Queue ``op`` for this loop's next batch; True if no batch is on its way (the
        caller then has it run)."""
        with self._claim:
            if self._active and self._loop is not loop:
                if self._loop is not None and not self._loop.is_closed():
                    raise StoreUnavailable("an SQLiteStore serves one event loop at a time "
                                           "(open one per loop)")
                self._queue, self._active = [], False  # that loop died with writes queued
            self._queue.append((op, outcome))
            if self._active:
                return False
            self._active = True
            self._loop, self._owner = loop, (loop, threading.get_ident())
        return True

    def _own_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop that runs the batches if this code runs inside it (so between two)."""
        owner = self._owner
        if owner is None or owner[1] != threading.get_ident() or not owner[0].is_running():
            return None
        return owner[0]

    def _flush(self) -> None:
        """Run every queued write as one batch: here if the lock is free, else on the worker."""
        # A caller cancelled before its batch starts does not get its write.
        with self._claim:
            batch = [item for item in self._queue if not item[1].done()]
            self._queue = []
        if not batch:
            self._idle()
            return
        ops = [op for op, _ in batch]
        if self._fast_cur is None or self._restart_due:
            # synchronous=full: commits fsync, never on the loop. After a checkpoint: the next
            # commit starts the WAL over, and SQLite syncs the new WAL header as it writes
            # its first frame (an fdatasync, 0.3 ms seen with strace), so it goes to the worker.
            self._restart_due = False
            self._to_worker(batch, ops)
            return
        try:
            with self._fast_lock:
                outcomes = _run_batch(self._fast_cur, ops)
        except _Busy:  # another process holds the lock
            if self._busy_tries < BUSY_RETRIES:
                # Mostly for well under a millisecond (another relay's batch): try again
                # shortly here, the writes queued meanwhile joining this batch, rather than
                # pay a thread hop each time (measured with two relay processes on one file).
                self._busy_tries += 1
                with self._claim:
                    self._queue = batch + self._queue
                assert self._loop is not None
                self._loop.call_later(BUSY_RETRY_S * 2 ** (self._busy_tries - 1), self._flush)
                return
            self._busy_tries = 0  # still taken: the worker's connection waits for it
            self._to_worker(batch, ops)
            return
        except Exception as exc:  # the batch failed as a whole
            self._fail(batch, exc)
            self._idle()
            return
        self._busy_tries = 0
        self.commits += 1
        self.writes += len(ops)
        self._resolve(batch, outcomes)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._submit(self._checkpoint, [])
            return
        self._idle()

    def _to_worker(self, batch: list[tuple[_Op, Outcome]], ops: list[_Op]) -> None:
        self._since_checkpoint += 1
        checkpoint = self._since_checkpoint >= CHECKPOINT_EVERY
        if checkpoint:
            self._since_checkpoint = 0
        self._submit(self._on_worker, batch, ops, checkpoint)

    def _submit(self, fn: Callable[..., list[_Outcome] | None],
                batch: list[tuple[_Op, Outcome]], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker; its outcomes go to ``batch`` back on the loop."""
        assert self._loop is not None
        try:
            job = self._loop.run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # executor shut down
            self._fail(batch, StoreUnavailable(f"store is closed: {exc}"))
            self._idle()
            return
        job.add_done_callback(lambda done: self._worker_done(batch, done))

    def _on_worker(self, ops: list[_Op], checkpoint: bool) -> list[_Outcome]:
        """The worker thread: one batch on the connection that waits for the lock, then the
        checkpoint if it is due (still one hop)."""
        try:
            outcomes = _run_batch(self._writer_cur, ops)
        except _Busy:
            raise StoreUnavailable(
                f"SQLite store: the write lock stayed taken for {BUSY_TIMEOUT_MS} ms") from None
        if checkpoint:
            self._checkpoint()
        return outcomes

    def _checkpoint(self) -> None:
        self._restart_due = True  # read on the loop after the worker is done (_worker_done)
        try:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # a busy checkpoint is retried after the next CHECKPOINT_EVERY writes

    def _worker_done(self, batch: list[tuple[_Op, Outcome]],
                     done: asyncio.Future[list[_Outcome] | None]) -> None:
        """On the loop: hand out the worker's outcomes, then flush what queued meanwhile."""
        if done.cancelled():
            self._fail(batch, StoreUnavailable("store is closed"))
        elif (exc := done.exception()) is not None:
            self._fail(batch, exc)
        elif batch:
            self.commits += 1
            self.writes += len(batch)
            self._resolve(batch, done.result() or [])
        if self._queue:
            self._flush()  # the writes that waited in memory: one batch
        else:
            self._idle()

    @staticmethod
    def _resolve(batch: list[tuple[_Op, Outcome]],
                 outcomes: list[_Outcome]) -> None:
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, sqlite3.Error):
                future.set_exception(_unavailable(value))
            else:
                future.set_exception(value)

    @staticmethod
    def _fail(batch: list[tuple[_Op, Outcome]], exc: BaseException) -> None:
        error = _unavailable(exc)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    def _idle(self) -> None:
        with self._claim:
            self._active = False
        drained = self._drained
        if drained is not None:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the writes queued so far (settle_soon's too) are committed or failed."""
        if self._active and self._loop is asyncio.get_running_loop():
            if self._drained is None:
                self._drained = self._loop.create_future()
            await asyncio.shield(self._drained)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read on the loop that runs the batches uses the batches' connection: never in a
        transaction between two batches, and its page cache is still valid after its own
        commits (another connection's is not). Elsewhere, or if that connection finds the
        database busy (it never waits), the reader connection, which waits."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        fast = self._fast_cur
        if fast is not None and self._own_loop() is not None:
            try:
                with self._fast_lock:
                    return fast.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise StoreUnavailable(f"SQLite store failed: {exc}") from None
        try:
            with self._lock:
                return self._reader_cur.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store failed: {exc}") from None

    # -- reservations -----------------------------------------------------------------------

    async def reserve(self, reservation: Reservation) -> ReserveResult:
        r = reservation
        holds = _merge_holds(r.holds)
        debits = [h for h in holds if h[1] > 0]  # (a Hold's amount)
        meta = r.meta
        if type(meta) is not dict:  # a plain dict needs no copy
            meta = dict(meta)
        # A Hold is a NamedTuple (counter_key, amount, limit, resets_at), stored as the array
        # of its values (orjson writes a plain tuple, and hands it a Hold to make one of it).
        # See _json_text.
        try:
            meta_json = _dumps(meta).decode()
            holds_json = _dumps(holds, default=tuple).decode()
        except TypeError:
            meta_json = _json_text(meta)
            holds_json = _json_text([*map(tuple, holds)])
        approval = r.approval_id is not None
        row = ((r.reservation_id, r.token_id, holds_json, r.lease_until, r.approval_id,
                r.created_at, meta_json) if approval else
               (r.reservation_id, r.token_id, holds_json, r.lease_until, r.created_at,
                meta_json))
        tid = r.token_id
        # Revocation, the approval and the counters: one statement.
        check = _reserve_read_sql(len(debits), approval)
        params: list[Any] = [tid, r.approval_id] if approval else [tid]
        keys = [h[0] for h in debits]  # (a Hold's counter_key)
        params += keys

        def read(c: _Cursor) -> dict[str, int] | ReserveResult:
            used: dict[str, int] = {}
            approval_used = False
            for key, value in c.execute(check, params).fetchall():
                if key is not None:
                    used[key] = value
                elif value == 0:
                    return _REVOKED
                else:
                    approval_used = True
            return _APPROVAL_USED if approval_used else used

        def txn(c: _Cursor) -> ReserveResult:
            if c.defer:
                # The batch's earlier reserves of this token read what this one needs (the
                # transaction holds the write lock: only this batch changes it), and the
                # counters' owed deltas say what the batch did to them since.
                seen = c.seen
                if approval or tid not in c.live or not seen.keys() >= frozenset(keys):
                    got = read(c)
                    if type(got) is ReserveResult:
                        return got
                    c.live.add(tid)
                    for key in keys:
                        seen[key] = got.get(key, 0)  # type: ignore[union-attr]
                owed = c.adds
                for key, amount, limit, _ in debits:
                    u = seen[key]
                    add = owed.get(key)
                    if add is not None:
                        u += add[0]
                    if u + amount > limit:
                        return ReserveResult(False, failed_counter=key, used=u)
                for key, amount, _, resets_at in debits:
                    add = owed.get(key)
                    if add is None:
                        owed[key] = [amount, resets_at]
                    else:
                        add[0] += amount
                if len(row) == c.insert_width:
                    c.inserts += row
                else:
                    c.owe_insert(row)
            else:
                got = read(c)
                if type(got) is ReserveResult:
                    return got
                for h in debits:
                    u = int(got.get(h.counter_key, 0))  # type: ignore[union-attr]
                    if u + h.amount > h.limit:
                        return ReserveResult(False, failed_counter=h.counter_key, used=u)
                if debits:
                    c.execute(_add_used(len(debits)),
                              [x for h in debits for x in (h.counter_key, h.amount, h.resets_at)])
                try:
                    c.execute(_insert_reservations(1, len(row)), row)
                except sqlite3.IntegrityError:
                    raise ValueError(
                        f"reservation id {r.reservation_id} already exists") from None
            if r.approval_id is not None:
                c.execute("INSERT INTO used_approvals (approval_id, used_at) VALUES (?, ?)",
                          (r.approval_id, r.created_at))
            return _OK

        result = await self._write(txn)
        if result.ok:
            self._holds[r.reservation_id] = holds
            if len(self._holds) > HOLDS_CACHE:
                self._holds.popitem(last=False)
        return result

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry
    ) -> bool:
        return await self._write(self._settle_op(reservation_id, actual, entry))

    def settle_soon(self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry,
                    outcome: Outcome) -> None:
        """Queued in the batches' own queue, with no task: the batch it joins is flushed
        as soon as the loop turns (see _write_soon), and close() waits for it."""
        self._write_soon(self._settle_op(reservation_id, actual, entry), outcome)

    def _settle_op(self, reservation_id: str, actual: Mapping[str, int],
                   entry: LedgerEntry) -> _Op:
        charges = dict(actual)
        ledger_row = _ledger_row(entry, reservation_id)
        rid = (reservation_id,)
        known = self._holds.pop(reservation_id, None)

        def txn(c: _Cursor) -> bool:
            if known is None:  # reserved by another process (or forgotten): read it back
                c.owe()
                found = c.execute("SELECT holds FROM reservations WHERE id = ?", rid).fetchall()
                if not found:
                    return False
                holds = json.loads(found[0][0])
            elif c.defer:  # open unless another process closed it: the owed DELETE tells
                c.deletes.append(rid)
                owed = c.adds
                for key, amount, _limit, resets_at in known:
                    delta = int(charges.get(key, 0)) - int(amount)
                    if delta:
                        got = owed.get(key)
                        if got is None:
                            owed[key] = [delta, resets_at]
                        else:
                            got[0] += delta
                _record(c, entry, ledger_row)
                return True
            else:
                holds = known
            # The DELETE decides: a reservation already closed (settled, released, or expired
            # by any process) deletes nothing and changes nothing.
            if c.execute(_DELETE_RESERVATION, rid).rowcount != 1:
                return False
            adds: list[Any] = []
            for key, amount, _limit, resets_at in holds:  # a Hold, or its stored array
                delta = int(charges.get(key, 0)) - int(amount)
                if delta:
                    adds += (key, delta, resets_at)
            if adds:
                c.execute(_add_used(len(adds) // 3), adds)
            _record(c, entry, ledger_row)
            return True

        return txn

    async def expire_leases(self, now: int) -> int:
        def txn(c: _Cursor) -> int:
            c.owe()  # it reads the reservations and writes the ledger
            rows = c.execute(
                "SELECT id, token_id, created_at, meta FROM reservations WHERE lease_until < ?",
                (now,),
            ).fetchall()
            for rid, token_id, created_at, meta_json in rows:
                m = json.loads(meta_json)
                entry = LedgerEntry(
                    time=now, token_id=token_id, app=str(m.get("app", "")),
                    provider=str(m.get("provider", "")), model=str(m.get("model", "")),
                    operation=str(m.get("operation", "")),
                    input_tokens=int(m.get("input_tokens", 0)),
                    output_tokens=int(m.get("output_tokens", 0)),
                    cost=int(m.get("cost", 0)), currency=str(m.get("currency", "")),
                    status="lease_expired", latency_ms=max(now - int(created_at), 0) * 1000,
                    chain_id=str(m.get("chain_id", "")),
                )
                # The counters already hold the reserved amounts: closing the reservation
                # without a delta charges exactly the worst case.
                c.execute(_DELETE_RESERVATION, (rid,))
                _record(c, entry, _ledger_row(entry, rid))
            return len(rows)

        return await self._write(txn)

    async def counters(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(keys))
        result = dict.fromkeys(wanted, 0)
        if not wanted:
            return result
        for key, used in self._read(_used_sql(len(wanted)), wanted):
            result[key] = int(used)
        return result

    async def snapshot(self, token_id: str, keys: Sequence[str]) -> Snapshot:
        wanted = list(dict.fromkeys(keys))
        counters = dict.fromkeys(wanted, 0)
        revoked = False
        for key, used in self._read(_snapshot_sql(len(wanted)), [token_id, *wanted]):
            if key is None:
                revoked = True
            else:
                counters[key] = int(used)
        return Snapshot(revoked, counters)

    # -- revocation -------------------------------------------------------------------------

    async def revoke(self, token_id: str, now: int) -> None:
        def txn(c: _Cursor) -> None:
            c.live.discard(token_id)  # a later reserve of the batch must see it
            c.execute(
                "INSERT INTO revoked (token_id, revoked_at) VALUES (?, ?) "
                "ON CONFLICT (token_id) DO NOTHING", (token_id, now),
            )

        await self._write(txn)

    async def is_revoked(self, token_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM revoked WHERE token_id = ?", (token_id,)))

    # -- ledger -----------------------------------------------------------------------------

    async def append_ledger(self, entry: LedgerEntry) -> None:
        row = _ledger_row(entry, entry.reservation_id)
        refusal = entry.refused
        minute = entry.time - entry.time % 60
        find = (entry.token_id, minute, minute + 60, entry.status)

        def txn(c: _Cursor) -> None:
            if refusal:
                c.owe()  # the row to add to may be one this batch owes
                if c.execute(_REFUSAL_ADD, find).rowcount == 1:
                    return
            _record(c, entry, row)

        await self._write(txn)

    async def usage(self, *, since_day: int | None = None,
                    token_ids: Sequence[str] | None = None) -> list[UsageTotal]:
        if token_ids is not None and not token_ids:
            return []
        where, params = _filter(token_ids, "day", since_day)
        sql = ("SELECT day, token_id, app, provider, model, currency, cost, calls, "
               "input_tokens, output_tokens FROM usage_daily")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [UsageTotal(*r) for r in self._read(sql, params)]

    # -- chains -----------------------------------------------------------------------------

    async def note_chain(self, chain: Chain) -> bool:
        params = (chain.token_id, chain.chain_id, _compact(list(chain.caveats)),
                  chain.first_seen, chain.token_id, MAX_CHAINS)

        def txn(c: _Cursor) -> bool:
            return c.execute(_NOTE_CHAIN, params).rowcount == 1

        return await self._write(txn)

    async def chains(self, token_ids: Sequence[str]) -> list[Chain]:
        wanted = list(dict.fromkeys(token_ids))
        if not wanted:
            return []
        where, params = _filter(wanted, "first_seen", None)
        rows = self._read("SELECT token_id, chain_id, caveats, first_seen FROM chains WHERE "  # noqa: S608
                          + " AND ".join(where) + " ORDER BY token_id, first_seen, chain_id",
                          params)
        return [Chain(r[0], r[1], tuple(json.loads(r[2])), r[3]) for r in rows]

    async def prune_ledger(self, before: int) -> int:
        def txn(c: _Cursor) -> int:
            c.owe()
            return int(c.execute("DELETE FROM ledger WHERE time < ?", (before,)).rowcount)

        return await self._write(txn)

    async def ledger(
        self, *, token_ids: Sequence[str] | None = None, since: int | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        if token_ids is not None and not token_ids:
            return []
        where, params = _filter(token_ids, "time", since)
        sql = f"SELECT {_LEDGER_COLUMNS}, count FROM ledger"  # noqa: S608 (no user text)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, seq DESC LIMIT ?"
        params.append(max(int(limit), 0))
        return [
            LedgerEntry(
                time=r[0], token_id=r[1], app=r[2], provider=r[3], model=r[4], operation=r[5],
                input_tokens=r[6], output_tokens=r[7], cost=r[8], currency=r[9], status=r[10],
                latency_ms=r[11], reservation_id=r[12], request_body=r[13], response_body=r[14],
                chain_id=r[15], count=r[16],
            )
            for r in self._read(sql, params)
        ]

    # -- pending approvals ------------------------------------------------------------------

    async def add_pending(self, pending: PendingApproval) -> None:
        p = pending

        def txn(c: _Cursor) -> None:
            c.execute(
                "INSERT INTO pending (id, token_id, digest, summary, created_at, expires_at, "
                "status, approval, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (p.approval_request_id, p.token_id, p.digest, p.summary, p.created_at,
                 p.expires_at, p.status, p.approval, p.kind),
            )

        await self._write(txn)

    @staticmethod
    def _pending(r: Sequence[Any]) -> PendingApproval:
        return PendingApproval(
            approval_request_id=r[0], token_id=r[1], digest=r[2], summary=r[3],
            created_at=r[4], expires_at=r[5], status=r[6], approval=r[7], kind=r[8],
        )

    _PENDING_COLUMNS = ("id, token_id, digest, summary, created_at, expires_at, status, approval, "
                        "kind")

    async def get_pending(self, approval_request_id: str) -> PendingApproval | None:
        rows = self._read(f"SELECT {self._PENDING_COLUMNS} FROM pending WHERE id = ?",  # noqa: S608
                          (approval_request_id,))
        return self._pending(rows[0]) if rows else None

    async def list_pending(self, now: int) -> list[PendingApproval]:
        """Requests still waiting for the user (status pending, not yet expired), oldest first."""
        rows = self._read(
            f"SELECT {self._PENDING_COLUMNS} FROM pending "  # noqa: S608
            "WHERE status = 'pending' AND expires_at > ? ORDER BY created_at, id", (now,),
        )
        return [self._pending(r) for r in rows]

    async def resolve_pending(
        self, approval_request_id: str, status: str, approval: str | None
    ) -> bool:
        """Move a pending request to approved/denied/expired once; False if not pending."""
        if status not in ("approved", "denied", "expired"):
            raise ValueError(f"cannot resolve an approval request to {status!r}")

        def txn(c: _Cursor) -> bool:
            cur = c.execute(
                "UPDATE pending SET status = ?, approval = ? WHERE id = ? AND status = 'pending'",
                (status, approval, approval_request_id),
            )
            return cur.rowcount == 1

        return await self._write(txn)

    async def close(self) -> None:
        """Refuse new calls, let the writes already queued commit, then close."""
        if self._closed:
            return
        self._closed = True
        await self.drain()
        self._executor.shutdown(wait=True)
        with self._lock:
            self._reader.close()
        if self._fast is not None:
            with self._fast_lock:
                self._fast.close()
        self._writer.close()


def _filter(token_ids: Sequence[str] | None, column: str,
            since: int | None) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for the ledger and usage reads: these tokens, from ``since``
    on (``column`` is "time" or "day", never user text)."""
    where: list[str] = []
    params: list[Any] = []
    if token_ids is not None:
        where.append(f"token_id IN ({', '.join('?' * len(token_ids))})")
        params.extend(token_ids)
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    return where, params
