"""The embedded store: one SQLite file, safe for several processes (spec/budgets.md).

Why SQLite: a local relay needs durable counters without a server to run. Correctness under
concurrency comes from SQLite itself: WAL mode, and every write transaction is ``BEGIN
IMMEDIATE``, which takes the database's single write lock up front, so the check "used +
amount <= limit" and the increment cannot interleave with another writer in this process or in
any other process using the same file.

Writes: group commit on the event loop's thread. A write (reserve, settle, append_ledger, ...)
is queued in memory and its caller awaits a future; the first write of a loop iteration yields
once (unless its server says no other call is in flight: ``alone``) and then runs the batch,
so every write requested in the same iteration runs in ONE ``BEGIN IMMEDIATE ... COMMIT``,
in call order. Inside it, the reserves' and settles' writes are owed and written together
at the batch's end: one upsert per counter of its merged delta,
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from orjson import dumps as _dumps

from capwallet.bounded import drop_oldest
from capwallet.identifier import MAX_SAFE_INTEGER
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
    chain_expiry,
)
from capwallet.store.sqlite_batch import (
    _Busy,
    _Cursor,
    _Failed,
    _is_busy,
    _Op,
    _Outcome,
    _record,
    _run_batch,
)
from capwallet.store.sqlite_schema import _SCHEMA, SCHEMA_VERSION, _add_columns
from capwallet.store.sqlite_statements import (
    _DELETE_RESERVATION,
    _LEDGER_COLUMNS,
    _NOTE_CHAIN,
    _REFUSAL_ADD,
    _add_used,
    _filter,
    _insert_reservations,
    _ledger_row,
    _reserve_read_sql,
    _snapshot_sql,
    _used_sql,
)

T = TypeVar("T")
K = TypeVar("K")  # the key a chunked sweep goes on after (_in_chunks)
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
PRUNE_CHUNK = 1000  # counters read (and their dead deleted) per write of prune_counters
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
    # Deleted content is overwritten with zeros, and so is every page a delete frees: the
    # bodies the retention prunes (their overflow pages) must not stay in the file's free
    # list. Stated here, as SQLite's default depends on how it was built (off upstream; on in
    # Debian's build, which the tests ran on). FAST (no freed page zeroed) saved no WAL frame
    # under the relay's load: a page its commit frees was mostly written by that commit
    # already (bench/wal_frames.py, c=20: the zeroed frames became leaf and trunk frames).
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(f"SQLite store failed: {exc}")


def _count(value: Any) -> int:
    """A count of a stored reservation's meta for its lease_expired row, at most 2^53 - 1: a
    relay before RelayApp.reservation refused them stored worst cases past 64 bits (max_tokens
    2^63 on a token with no budget), which no INTEGER column binds; one such row failed every
    lease sweep after it, since a sweep closes all expired reservations in one transaction."""
    return min(int(value), MAX_SAFE_INTEGER)


def _merge_holds(holds: Sequence[Hold]) -> Sequence[Hold]:
    """One hold per counter key (amounts add, the smallest limit wins). Its caller, reserve,
    passes only holds that may share a key (three or more, or two of one key): it tells the
    usual case (a budget and a rate counter: nothing to merge) without a call."""
    if len({h[0] for h in holds}) == len(holds):
        return holds
    merged: dict[str, Hold] = {}
    for h in holds:
        old = merged.get(h.counter_key)
        merged[h.counter_key] = h if old is None else Hold(
            h.counter_key, old.amount + h.amount, min(old.limit, h.limit),
            old.resets_at if old.resets_at is not None else h.resets_at,
        )
    return list(merged.values())


def _reserve_read(c: _Cursor, tid: str, debits: Sequence[Hold],
                  approval_id: str | None) -> dict[str, int] | ReserveResult:
    """What a reservation checks, in one statement: the token's revocation, the approval's
    earlier use and the debited counters' values (absent counters have no row)."""
    params: list[Any] = [tid] if approval_id is None else [tid, approval_id]
    for h in debits:
        params.append(h[0])
    used: dict[str, int] = {}
    approval_used = False
    for key, value in c.execute(_reserve_read_sql(len(debits), approval_id is not None),
                                params).fetchall():
        if key is not None:
            used[key] = value
        elif value == 0:
            return _REVOKED
        else:
            approval_used = True
    return _APPROVAL_USED if approval_used else used


# A reservation's and a settlement's operations (_Op) are these functions with their values
# bound by functools.partial, not closures made per call: a closure turns every variable it
# captures into a cell of its maker's frame (an allocation each; reserve had nine), and a
# partial binds them in one C call (timeit: 0.17 us against 0.36 us for reserve's two).


def _reserve_txn(row: tuple[Any, ...], tid: str, debits: Sequence[Hold],
                 approval_id: str | None, c: _Cursor) -> ReserveResult:
    if c.defer:
        # The batch's earlier reserves of this token read what this one needs (the
        # transaction holds the write lock: only this batch changes it), and the counters'
        # owed deltas say what the batch did to them since.
        seen = c.seen
        fresh = approval_id is None and tid in c.live
        if fresh:
            for h in debits:
                if h[0] not in seen:
                    fresh = False
                    break
        if not fresh:
            got = _reserve_read(c, tid, debits, approval_id)
            if type(got) is ReserveResult:
                return got
            c.live.add(tid)
            for h in debits:
                seen[h[0]] = got.get(h[0], 0)  # type: ignore[union-attr]
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
        got = _reserve_read(c, tid, debits, approval_id)
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
            raise ValueError(f"reservation id {row[0]} already exists") from None
    if approval_id is not None:
        c.execute("INSERT INTO used_approvals (approval_id, used_at) VALUES (?, ?)",
                  (approval_id, row[5]))  # (the row's created_at: 7 values with an approval)
    return _OK


def _settle_txn(rid: tuple[str], charges: dict[str, int], entry: LedgerEntry,
                ledger_row: tuple[Any, ...], known: Sequence[Hold] | None, c: _Cursor) -> bool:
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
    # The DELETE decides: a reservation already closed (settled, released, or expired by any
    # process) deletes nothing and changes nothing.
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
        # A plain dict (insertion order: its first key is the oldest): an entry set and popped
        # per call cost 0.28 us against 0.49 us in an OrderedDict (timeit), whose order this
        # never changes but for the eviction of the oldest past HOLDS_CACHE.
        self._holds: dict[str, Sequence[Hold]] = {}
        # Whether a write now can have no company in its batch (from the servers, which know
        # their calls in flight: attach_server): then the batch it leads runs at once rather
        # than one turn of the loop later. None: always wait the turn.
        self.alone: Callable[[], bool] | None = None
        self._servers: list[tuple[Callable[[], bool], Callable[[], tuple[int, int]]]] = []
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

    def attach_server(self, alone: Callable[[], bool],
                      in_flight: Callable[[], tuple[int, int]]) -> Callable[[], None]:
        """Count this server's calls in ``alone`` (Store.attach_server): one server's own
        ``alone``, several servers' calls and tasks summed (two relays on one store object:
        a write is alone only if no other call of either is in flight)."""
        server = (alone, in_flight)
        self._servers.append(server)
        self._count_servers()

        def detach() -> None:
            if server in self._servers:
                self._servers.remove(server)
                self._count_servers()

        return detach

    def _count_servers(self) -> None:
        servers = tuple(self._servers)
        if len(servers) <= 1:  # the usual store: one relay's own test, no call of this one's
            self.alone = servers[0][0] if servers else None
            return
        counts = tuple(in_flight for _, in_flight in servers)

        def alone() -> bool:
            calls = tasks = 0
            for count in counts:
                c, t = count()
                calls += c
                tasks += t
            return calls <= 1 and tasks <= 1

        self.alone = alone

    # -- group commit -----------------------------------------------------------------------

    def _write(self, op: Callable[[_Cursor], T]) -> Awaitable[T]:
        """Queue ``op`` for the next batch; awaited, its outcome (after the COMMIT).

        Not a coroutine itself: a write that joins a batch already on its way (most writes
        under load) hands its caller the future the batch resolves, with no frame of this
        method's between them (a coroutine layer is some 1.2 K instructions per write, to
        make, to pass through as the caller sleeps and wakes, and to end: callgrind). Only
        the write that leads a batch gets a coroutine (_lead), which runs it. Awaited at
        once by every caller, so what this raises (a closed store) is raised where it was."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        loop = running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._enqueue(loop, op, future):
            return future
        return self._lead(loop, future)

    async def _lead(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]) -> T:
        """The write that leads a batch: let the batch gather, run it, give its outcome."""
        # The first write of this iteration leads the batch: it lets the loop run the other
        # callers of this iteration once (they queue theirs), then runs the batch itself, and
        # usually has its outcome without being woken again. With no other caller to wait
        # for (``alone``: the server's only call in flight) it runs the batch at once: that
        # turn of the loop lay on the way to a lone call's upstream request.
        alone = self.alone
        if alone is None or not alone():
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
        if self._active and self._loop is loop:
            # This loop's batch is on its way (the usual write under load): no lock. Only
            # this loop's thread changes the queue and these two while it holds the store
            # (another thread's loop takes it over only when it is idle or its loop closed).
            self._queue.append((op, outcome))
            return False
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
        for (_, future), value in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if type(value) is not _Failed:
                future.set_result(value)
            elif isinstance(value.exc, sqlite3.Error):
                future.set_exception(_unavailable(value.exc))
            else:
                future.set_exception(value.exc)

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
        holds: Sequence[Hold] = r.holds
        if len(holds) > 1 and (len(holds) > 2 or holds[0][0] == holds[1][0]):
            holds = _merge_holds(holds)  # (a Hold's counter_key; two distinct: nothing to merge)
        debits = holds
        for h in holds:
            if h[1] <= 0:  # (a Hold's amount) a zero amount never blocks: not a debit
                debits = tuple(h for h in holds if h[1] > 0)
                break
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
        approval_id = r.approval_id
        row = ((r.reservation_id, r.token_id, holds_json, r.lease_until, approval_id,
                r.created_at, meta_json) if approval_id is not None else
               (r.reservation_id, r.token_id, holds_json, r.lease_until, r.created_at,
                meta_json))
        result: ReserveResult = await self._write(
            partial(_reserve_txn, row, r.token_id, debits, approval_id))
        if result.ok:
            cache = self._holds
            cache[r.reservation_id] = holds
            if len(cache) > HOLDS_CACHE:
                drop_oldest(cache, HOLDS_CACHE)
        return result

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry
    ) -> bool:
        return await self._write(self._settle_op(reservation_id, actual, entry))

    def settle_soon(self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry,
                    outcome: Outcome) -> None:
        """Queued in the batches' own queue, with no task: the batch it joins is flushed
        as soon as the loop turns (see _write_soon), and close() waits for it. (_settle_op
        written out: one Python call less on every relayed call.)"""
        self._write_soon(partial(_settle_txn, (reservation_id,), dict(actual), entry,
                                 _ledger_row(entry, reservation_id),
                                 self._holds.pop(reservation_id, None)), outcome)

    def _settle_op(self, reservation_id: str, actual: Mapping[str, int],
                   entry: LedgerEntry) -> _Op:
        return partial(_settle_txn, (reservation_id,), dict(actual), entry,
                       _ledger_row(entry, reservation_id), self._holds.pop(reservation_id, None))

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
                    input_tokens=_count(m.get("input_tokens", 0)),
                    output_tokens=_count(m.get("output_tokens", 0)),
                    cost=_count(m.get("cost", 0)), currency=str(m.get("currency", "")),
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

    async def prune_chains(self, expired_before: int) -> int:
        """In writes of PRUNE_CHUNK chains each, walked in key order, as prune_counters (the
        expiry is in the caveats' text, which no index holds)."""
        def chunk(after: tuple[str, str], c: _Cursor) -> tuple[int, tuple[str, str] | None]:
            c.owe()
            rows = c.execute("SELECT token_id, chain_id, caveats FROM chains WHERE "
                             "(token_id, chain_id) > (?, ?) ORDER BY token_id, chain_id "
                             "LIMIT ?", (*after, PRUNE_CHUNK)).fetchall()
            dead = []
            for token_id, chain_id, caveats in rows:
                expiry = chain_expiry(json.loads(caveats))
                if expiry is not None and expiry < expired_before:
                    dead.append((token_id, chain_id))
            if dead:
                c.executemany("DELETE FROM chains WHERE token_id = ? AND chain_id = ?", dead)
            last = (rows[-1][0], rows[-1][1]) if len(rows) == PRUNE_CHUNK else None
            return len(dead), last

        return await self._in_chunks(chunk, ("", ""))

    async def prune_counters(self, before: int) -> int:
        """In writes of PRUNE_CHUNK counters each, walked in key order: the counters table
        has no index on resets_at (one would cost every counter write), and one DELETE over
        it would hold the write lock, and the relay's reservations, for a scan of the whole
        table. Each write reads its chunk by the primary key and deletes the dead ones in it,
        so the relay's writes go on between the chunks."""
        def chunk(after: str, c: _Cursor) -> tuple[int, str | None]:
            c.owe()  # it changes counters, which the batch's reserves may have read
            rows = c.execute("SELECT key, resets_at FROM counters WHERE key > ? ORDER BY key "
                             "LIMIT ?", (after, PRUNE_CHUNK)).fetchall()
            dead = [(k,) for k, resets in rows if resets is not None and resets < before]
            if dead:
                c.executemany("DELETE FROM counters WHERE key = ?", dead)
            return len(dead), (rows[-1][0] if len(rows) == PRUNE_CHUNK else None)

        return await self._in_chunks(chunk, "")

    async def prune_token_counters(self, token_id: str, keys: Sequence[str]) -> int:
        """One write (the keys of one token: a few per caveat)."""
        wanted = [(k,) for k in dict.fromkeys(keys)]
        if not wanted:
            return 0

        def txn(c: _Cursor) -> int:
            c.owe()  # it changes counters, which the batch's reserves may have read
            return sum(c.execute("DELETE FROM counters WHERE key = ?", k).rowcount
                       for k in wanted)

        return await self._write(txn)

    async def _in_chunks(self, chunk: Callable[[K, _Cursor], tuple[int, K | None]],
                         start: K) -> int:
        """A sweep over a whole table (prune_counters, prune_chains), one write per chunk:
        ``chunk`` deletes what it finds past a key and says how many, and the key to go on
        after (None at the table's end); the total deleted."""
        deleted: int = 0
        after: K | None = start
        while after is not None:
            n, after = await self._write(partial(chunk, after))
            deleted += n
        return deleted

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
