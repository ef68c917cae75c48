"""The SQLite store's tables: the schema every store file gets, and the columns added since.

Apart from the store because it is the file's shape, not what the store does with it. Several
processes, relays of this version and of earlier ones, may share one file, so the schema only
grows: ``CREATE ... IF NOT EXISTS`` leaves an old file's tables as they were, and _add_columns
gives them the columns added since (SCHEMA_VERSION counts the changes; the store writes it to
``PRAGMA user_version``). The comment above the schema says why the tables are laid out as they are:
every page a transaction touches is one more WAL frame per commit.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2  # 2: ledger.chain_id and the chains table

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
# What a commit writes (bench/wal_frames.py, the relay at c=20: 8.3-8.9 frames per commit, two
# pwrite calls each): counters 1, reservations 2.3 (a WITHOUT ROWID interior cell is a whole
# ~410-byte row, 9 to a leaf), ledger 1, ledger_time 0.9, ledger_token_time 1.3, usage_daily 0.7,
# and about 1.2 of page 1 (the free list's count, the file's size), the free-list trunk and
# zeroed freed pages: mostly the reservations', as the calls in flight swing across a leaf's
# worth of rows between a batch of reserves and one of settles, so a leaf is freed and taken
# back over and over (a quarter of page 1's writes are the ledger and its indexes growing).
# The page size stays SQLite's default, 4096 (tried, 2026-12-07): 8192 cost 10 K instructions
# more per call; 2048 (set before the schema on a new file) wrote 10.0 frames per commit at
# c=20 against 7.85 (reservations 4 rows to a leaf: more splits, interior and free-list pages;
# pwrite 5.2 per call against 4.0, strace) for no fewer instructions (callgrind, relay per
# call: 514-521 K against 510-515 K), and at c=1 (4.3 frames per commit either way, half the
# bytes checksummed) saved 1.3% (667-669 K against 675-678 K); timed runs differed within
# noise, as did the wallet's reads of a 100 K-row ledger. 1024 is worse still: a ~410-byte
# reservation overflows its page (231 bytes of an index cell's payload stay local), 19.5 frames
# per commit, 15 K instructions more per call.
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
# EXISTS leaves an old file's tables as they were): (table, column, declaration), the why above
# each.
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
