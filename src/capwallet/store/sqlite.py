"""The embedded store: one SQLite file, safe for several processes (spec/budgets.md).

Why SQLite: a local relay needs durable counters without a server to run. Correctness under
concurrency comes from SQLite itself: WAL mode, and every reserve, settle or lease sweep is one
``BEGIN IMMEDIATE`` transaction, which takes the database's single write lock up front, so the
check "used + amount <= limit" and the increment cannot interleave with another writer in this
process or in any other process using the same file. ``busy_timeout`` makes a writer wait for
the lock instead of failing at once; if it still cannot get it, StoreUnavailable (deny).

Threads: a write first tries the caller's thread on a connection that never waits for the lock
(busy timeout 0, no automatic checkpoint): uncontended, a transaction without fsync takes tens
of microseconds, less than handing it to a thread and back. If the lock is taken (another
process, or a write already queued here) it goes to one worker thread whose connection waits
up to BUSY_TIMEOUT_MS, so a slow lock never blocks the event loop. The worker also runs the WAL
checkpoints. Reads (``is_revoked`` and ``counters`` on every request) run on the caller's
thread on a third connection: WAL readers never wait for writers. With ``synchronous=full``
every commit fsyncs, so all writes go to the worker. One SQLiteStore serves one event loop;
other processes (or loops) open their own.

Durability: ``synchronous=NORMAL`` by default, which in WAL mode survives a crash of the relay
process but may lose the last transactions on power loss; ``sqlite:///path?synchronous=full``
makes every commit durable at the cost of an fsync each.

What a reservation's ``meta`` should hold, for the ledger row written when its lease expires:
``app``, ``provider``, ``model``, ``operation``, ``input_tokens``, ``output_tokens``, ``cost``
and ``currency`` (the reserved worst case). Missing keys are logged as empty or 0.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from capwallet.store.base import (
    Hold,
    LedgerEntry,
    PendingApproval,
    Reservation,
    ReserveResult,
    Store,
    StoreUnavailable,
)

T = TypeVar("T")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY = 200  # fast-path commits (about 1000 WAL pages) between two checkpoints

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
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    approval TEXT
);
CREATE INDEX IF NOT EXISTS pending_status ON pending (status, expires_at);
"""
# Every page a transaction touches is one more WAL frame to write, so the hot tables are
# WITHOUT ROWID (the primary key is the table: one page, not table + key index) and the
# reservations table, which only holds calls in flight, has no lease index (the sweep scans it).

_LEDGER_COLUMNS = (
    "time, token_id, app, provider, model, operation, input_tokens, output_tokens, cost, "
    "currency, status, latency_ms, reservation_id, request_body, response_body"
)
_LEDGER_INSERT = f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES ({', '.join('?' * 15)})"  # noqa: S608
_ADD_USED = (
    "INSERT INTO counters (key, used, resets_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET used = max(used + excluded.used, 0)"
)


class _Busy(Exception):
    """The write lock is taken: use the worker thread, which waits for it."""


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _connect(path: str, synchronous: str, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _ledger_row(entry: LedgerEntry, reservation_id: str | None) -> tuple[Any, ...]:
    return (
        entry.time, entry.token_id, entry.app, entry.provider, entry.model, entry.operation,
        entry.input_tokens, entry.output_tokens, entry.cost, entry.currency, entry.status,
        entry.latency_ms, reservation_id, entry.request_body, entry.response_body,
    )


def _merge_holds(holds: Iterable[Hold]) -> list[Hold]:
    """One hold per counter key (amounts add, the smallest limit wins)."""
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
        try:
            self._writer = _connect(self.path, synchronous)
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"SQLite could not switch {self.path} to WAL mode")
            # CREATE ... IF NOT EXISTS: several processes may open the same file at once.
            self._writer.executescript(_SCHEMA)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._reader = _connect(self.path, synchronous)
            self._fast: sqlite3.Connection | None = None
            if synchronous.upper() == "NORMAL":
                self._fast = _connect(self.path, synchronous, busy_ms=0)
                self._fast.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capwallet-sqlite")
        self._fast_lock = threading.Lock()
        self._queued = 0  # writes waiting for or running on the worker
        self._fast_commits = 0

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

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        if self._fast is not None and self._queued == 0 and self._fast_lock.acquire(False):
            try:
                result = self._fast_txn(self._fast, fn)
            except _Busy:
                pass
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store failed: {exc}") from None
            else:
                self._fast_commits += 1
                if self._fast_commits % CHECKPOINT_EVERY == 0:
                    # Writes queue behind the checkpoint (``_queued`` > 0) so that it can
                    # finish and the next writer can start the WAL over.
                    self._queued += 1
                    done = loop.run_in_executor(self._executor, self._checkpoint)
                    done.add_done_callback(self._checkpointed)  # runs on this loop
                return result
            finally:
                self._fast_lock.release()
        self._queued += 1
        try:
            return await loop.run_in_executor(self._executor, self._in_txn, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store failed: {exc}") from None
        except RuntimeError as exc:  # executor shut down by close()
            raise StoreUnavailable(f"store is closed: {exc}") from None
        finally:
            self._queued -= 1

    @staticmethod
    def _fast_txn(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise _Busy from None
            raise
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _checkpoint(self) -> None:
        try:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # a busy checkpoint is retried after the next CHECKPOINT_EVERY commits

    def _checkpointed(self, _: asyncio.Future[None]) -> None:
        self._queued -= 1

    def _in_txn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._closed:
            raise StoreUnavailable("store is closed")
        try:
            with self._lock:
                return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store failed: {exc}") from None

    # -- reservations -----------------------------------------------------------------------

    async def reserve(self, reservation: Reservation) -> ReserveResult:
        holds = _merge_holds(reservation.holds)
        holds_json = json.dumps([[h.counter_key, h.amount, h.limit, h.resets_at] for h in holds])
        meta_json = json.dumps(dict(reservation.meta), separators=(",", ":"))

        def txn(c: sqlite3.Connection) -> ReserveResult:
            r = reservation
            if r.approval_id is not None and c.execute(
                "SELECT 1 FROM used_approvals WHERE approval_id = ?", (r.approval_id,)
            ).fetchone():
                return ReserveResult(False, approval_used=True)
            for h in holds:
                if h.amount <= 0:
                    continue
                row = c.execute("SELECT used FROM counters WHERE key = ?", (h.counter_key,))
                found = row.fetchone()
                used = int(found[0]) if found else 0
                if used + h.amount > h.limit:
                    return ReserveResult(False, failed_counter=h.counter_key, used=used)
            for h in holds:
                if h.amount > 0:
                    c.execute(_ADD_USED, (h.counter_key, h.amount, h.resets_at))
            try:
                c.execute(
                    "INSERT INTO reservations (id, token_id, holds, lease_until, approval_id, "
                    "created_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (r.reservation_id, r.token_id, holds_json, r.lease_until, r.approval_id,
                     r.created_at, meta_json),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"reservation id {r.reservation_id} already exists") from None
            if r.approval_id is not None:
                c.execute("INSERT INTO used_approvals (approval_id, used_at) VALUES (?, ?)",
                          (r.approval_id, r.created_at))
            return ReserveResult(True)

        return await self._write(txn)

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry
    ) -> bool:
        charges = dict(actual)

        def txn(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT holds FROM reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is None:
                return False
            for key, amount, _limit, resets_at in json.loads(row[0]):
                delta = int(charges.get(key, 0)) - int(amount)
                if delta:
                    c.execute(_ADD_USED, (key, delta, resets_at))
            c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            c.execute(_LEDGER_INSERT, _ledger_row(entry, reservation_id))
            return True

        return await self._write(txn)

    async def expire_leases(self, now: int) -> int:
        def txn(c: sqlite3.Connection) -> int:
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
                )
                # The counters already hold the reserved amounts: closing the reservation
                # without a delta charges exactly the worst case.
                c.execute("DELETE FROM reservations WHERE id = ?", (rid,))
                c.execute(_LEDGER_INSERT, _ledger_row(entry, rid))
            return len(rows)

        return await self._write(txn)

    async def counters(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(keys))
        result = dict.fromkeys(wanted, 0)
        if not wanted:
            return result
        marks = ", ".join("?" * len(wanted))
        for key, used in self._read(f"SELECT key, used FROM counters WHERE key IN ({marks})",  # noqa: S608
                                    wanted):
            result[key] = int(used)
        return result

    # -- revocation -------------------------------------------------------------------------

    async def revoke(self, token_id: str, now: int) -> None:
        def txn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO revoked (token_id, revoked_at) VALUES (?, ?) "
                "ON CONFLICT (token_id) DO NOTHING", (token_id, now),
            )

        await self._write(txn)

    async def is_revoked(self, token_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM revoked WHERE token_id = ?", (token_id,)))

    # -- ledger -----------------------------------------------------------------------------

    async def ledger(
        self, *, token_ids: Sequence[str] | None = None, since: int | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        where: list[str] = []
        params: list[Any] = []
        if token_ids is not None:
            if not token_ids:
                return []
            where.append(f"token_id IN ({', '.join('?' * len(token_ids))})")
            params.extend(token_ids)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        sql = f"SELECT {_LEDGER_COLUMNS} FROM ledger"  # noqa: S608 (no user text in the SQL)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, seq DESC LIMIT ?"
        params.append(max(int(limit), 0))
        return [
            LedgerEntry(
                time=r[0], token_id=r[1], app=r[2], provider=r[3], model=r[4], operation=r[5],
                input_tokens=r[6], output_tokens=r[7], cost=r[8], currency=r[9], status=r[10],
                latency_ms=r[11], reservation_id=r[12], request_body=r[13], response_body=r[14],
            )
            for r in self._read(sql, params)
        ]

    # -- pending approvals ------------------------------------------------------------------

    async def add_pending(self, pending: PendingApproval) -> None:
        p = pending

        def txn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO pending (id, token_id, digest, summary, created_at, expires_at, "
                "status, approval) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (p.approval_request_id, p.token_id, p.digest, p.summary, p.created_at,
                 p.expires_at, p.status, p.approval),
            )

        await self._write(txn)

    @staticmethod
    def _pending(r: Sequence[Any]) -> PendingApproval:
        return PendingApproval(
            approval_request_id=r[0], token_id=r[1], digest=r[2], summary=r[3],
            created_at=r[4], expires_at=r[5], status=r[6], approval=r[7],
        )

    _PENDING_COLUMNS = "id, token_id, digest, summary, created_at, expires_at, status, approval"

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

        def txn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE pending SET status = ?, approval = ? WHERE id = ? AND status = 'pending'",
                (status, approval, approval_request_id),
            )
            return cur.rowcount == 1

        return await self._write(txn)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        with self._lock:
            self._reader.close()
        with self._fast_lock:
            if self._fast is not None:
                self._fast.close()
        self._writer.close()
