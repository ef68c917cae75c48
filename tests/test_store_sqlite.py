"""SQLite-specific store behaviour: URLs, WAL, and several processes on one file."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from capwallet.store import (
    Chain,
    Hold,
    LedgerEntry,
    PendingApproval,
    Reservation,
    ReserveResult,
    StoreUnavailable,
    open_store,
)
from capwallet.store.sqlite import SQLiteStore
from capwallet.store.sqlite_statements import _insert_shared_sql

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(absolute, SQLiteStore) and absolute.path == str(tmp_path / "a.db")
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db?synchronous=full")
    assert isinstance(relative, SQLiteStore) and relative.path == "rel.db"
    assert (tmp_path / "rel.db").exists()
    with sqlite3.connect(tmp_path / "rel.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db",
                                 "sqlite:///x.db?synchronous=off"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_unknown_scheme_and_redis_hook() -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme 'postgres'"):
        open_store("postgres://x")
    try:
        import capwallet.store.redis  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ValueError, match="redis store backend is not available"):
            open_store("redis://127.0.0.1:6379/0")


def test_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteStore(tmp_path / "missing-dir" / "x.db")


_WORKER = textwrap.dedent("""
    import asyncio, secrets, sys
    from capwallet.store import Hold, Reservation, open_store

    async def main(url, n):
        store = open_store(url)
        ok = 0
        for _ in range(n):
            r = Reservation(secrets.token_hex(16), "tok", (Hold("budget", 3, 3 * 50),
                            Hold("rate", 1, 10_000)), lease_until=2_000_000_000)
            if (await store.reserve(r)).ok:
                ok += 1
        await store.close()
        print(ok)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


async def test_several_processes_share_one_file_without_overspend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    SQLiteStore.from_url(url)  # create the schema once; the workers race on the rest
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, "40"], stdout=subprocess.PIPE,
                         text=True)
        for _ in range(4)
    ]
    oks = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        oks.append(int(out))
    assert sum(oks) == 50
    store = open_store(url)
    try:
        assert await store.counters(["budget", "rate"]) == {"budget": 150, "rate": 50}
    finally:
        await store.close()


async def test_write_waits_for_a_lock_held_elsewhere_without_blocking_the_loop(
        tmp_path: Path) -> None:
    import asyncio
    import secrets

    from capwallet.store import Hold, Reservation
    store = SQLiteStore(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = asyncio.create_task(store.reserve(
            Reservation(secrets.token_hex(16), "t", (Hold("b", 1, 10),), lease_until=1)))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.02)
            ticks += 1
        assert not task.done() and ticks == 10  # waiting in the worker, loop still running
        other.execute("COMMIT")
        assert (await asyncio.wait_for(task, 5)).ok
        assert await store.counters(["b"]) == {"b": 1}
    finally:
        other.close()
        await store.close()


async def test_wal_is_checkpointed(tmp_path: Path) -> None:
    from capwallet.store.sqlite import CHECKPOINT_EVERY
    store = SQLiteStore(tmp_path / "w.db")
    wal = tmp_path / "w.db-wal"

    async def calls(n: int) -> None:
        for _ in range(n):
            r = _reservation(Hold("b", 1, 10**9))
            assert (await store.reserve(r)).ok
            assert await store.settle(r.reservation_id, {"b": 1}, LedgerEntry(
                1, "t", "", "p", "m", "chat", 1, 1, 1, "USD", "ok", 1))

    try:
        await calls(3 * CHECKPOINT_EVERY)  # one write per batch
        # Without checkpoints the WAL would hold every commit (over 14 MB here).
        assert wal.stat().st_size < 4 * 1024 * 1024
        per = 3 * CHECKPOINT_EVERY // 20
        await asyncio.gather(*(calls(per) for _ in range(20)))  # batches
        assert wal.stat().st_size < 4 * 1024 * 1024
        assert await store.counters(["b"]) == {"b": 3 * CHECKPOINT_EVERY + 20 * per}
    finally:
        await store.close()


# -- group commit -------------------------------------------------------------------------------

def _reservation(*holds: Hold, rid: str | None = None) -> Reservation:
    return Reservation(rid or secrets.token_hex(16), "t", holds, lease_until=2_000_000_000)


def _trace(conn: sqlite3.Connection) -> list[str]:
    """The transaction statements a connection runs (SQLite's own trace, not a mock)."""
    seen: list[str] = []
    words = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith(words) else None)
    return seen


async def test_writes_of_one_loop_iteration_share_one_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    try:
        assert store._fast is not None
        statements = _trace(store._fast)
        results = await asyncio.gather(*(store.reserve(_reservation(Hold("b", 1, 100)))
                                         for _ in range(5)))
        assert all(r.ok for r in results)
        assert statements == ["BEGIN IMMEDIATE", "COMMIT"]  # no savepoint needed
        assert await store.counters(["b"]) == {"b": 5}
    finally:
        await store.close()


async def test_a_lone_write_commits_without_waiting_a_turn_for_company(tmp_path: Path) -> None:
    """``alone`` (the relay: no other call in flight) lets the leading write run its batch
    at once: it is committed before the loop turns (a callback queued before it has not run),
    and two writes of one iteration are then two batches. Without it, one turn and one batch."""
    store = SQLiteStore(tmp_path / "alone.db")
    loop = asyncio.get_running_loop()
    try:
        assert store._fast is not None
        statements = _trace(store._fast)
        for alone, turned_before_commit, batches in ((None, True, 1), (lambda: False, True, 1),
                                                     (lambda: True, False, 2)):
            store.alone = alone
            turned: list[bool] = []
            loop.call_soon(turned.append, True)
            assert (await store.reserve(_reservation(Hold("b", 1, 100)))).ok
            assert bool(turned) is turned_before_commit
            statements.clear()
            results = await asyncio.gather(*(store.reserve(_reservation(Hold("b", 1, 100)))
                                             for _ in range(2)))
            assert all(r.ok for r in results)
            assert statements == ["BEGIN IMMEDIATE", "COMMIT"] * batches
        assert await store.counters(["b"]) == {"b": 9}
    finally:
        await store.close()


async def test_a_failing_write_rolls_back_alone_and_the_batch_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    try:
        taken = _reservation(Hold("b", 1, 100))
        assert (await store.reserve(taken)).ok
        assert store._fast is not None
        statements = _trace(store._fast)
        first = _reservation(Hold("b", 10, 100), Hold("c", 1, 10))
        # Same id as ``taken``: it adds to the counters and then fails on the insert, so only
        # its savepoint can undo its increments.
        dup = _reservation(Hold("b", 20, 100), Hold("c", 2, 10), rid=taken.reservation_id)
        last = _reservation(Hold("b", 30, 100))
        results = await asyncio.gather(store.reserve(first), store.reserve(dup),
                                       store.reserve(last), store.append_ledger(LedgerEntry(
                                           1, "t", "", "p", "m", "chat", 0, 0, 0, "USD",
                                           "denied:x", 0)), return_exceptions=True)
        assert results[0] == ReserveResult(True) and results[2] == ReserveResult(True)
        assert isinstance(results[1], ValueError) and "already exists" in str(results[1])
        assert results[3] is None
        # Rolled back at the failure, run again with a savepoint per write: one commit.
        assert statements.count("COMMIT") == 1 and statements.count("SAVEPOINT op") == 4
        assert statements.count("ROLLBACK TO op") == 1
        assert await store.counters(["b", "c"]) == {"b": 41, "c": 1}
        assert [e.status for e in await store.ledger()] == ["denied:x"]
        assert await store.settle(last.reservation_id, {"b": 3}, LedgerEntry(
            2, "t", "", "p", "m", "chat", 1, 1, 3, "USD", "ok", 1))
        assert await store.counters(["b"]) == {"b": 14}
    finally:
        await store.close()


async def test_a_batchs_settles_add_to_the_usage_aggregates_once_each(tmp_path: Path) -> None:
    """The settles of one batch add their merged totals with one upsert per aggregate row; when
    a write of the batch fails and the batch runs again with savepoints, the totals of the
    first run are forgotten with its rows (counted once), and the failed write adds none."""
    store = SQLiteStore(tmp_path / "u.db")
    try:
        rs = [_reservation(Hold("b", 10, 1000)) for _ in range(4)]
        for r in rs:
            assert (await store.reserve(r)).ok
        assert store._fast is not None
        upserts: list[str] = []
        store._fast.set_trace_callback(
            lambda sql: upserts.append(sql) if "usage_daily" in sql else None)

        def entry(cost: int, model: str) -> LedgerEntry:
            return LedgerEntry(86400 * 3 + 5, "t", "app", "p", model, "chat", 2, 3, cost, "USD",
                               "ok", 1)

        dup = _reservation(Hold("b", 1, 1000), rid=rs[3].reservation_id)  # still open
        results = await asyncio.gather(
            store.settle(rs[0].reservation_id, {"b": 4}, entry(4, "m")),
            store.reserve(dup),  # fails: the batch runs again with savepoints
            store.settle(rs[1].reservation_id, {"b": 5}, entry(5, "m")),
            store.settle(rs[2].reservation_id, {"b": 6}, entry(6, "other")),
            return_exceptions=True)
        assert results[0] is True and results[2] is True and results[3] is True
        assert isinstance(results[1], ValueError)
        assert len(upserts) == 1  # two aggregate rows, one statement, after the rerun
        totals = {u.model: (u.cost, u.calls, u.input_tokens, u.output_tokens)
                  for u in await store.usage()}
        assert totals == {"m": (9, 2, 4, 6), "other": (6, 1, 2, 3)}
        assert await store.counters(["b"]) == {"b": 25}
        # A lone settle adds as before, to the same row.
        r = _reservation(Hold("b", 10, 1000))
        assert (await store.reserve(r)).ok
        assert await store.settle(r.reservation_id, {"b": 1}, entry(1, "m"))
        assert {u.model: u.calls for u in await store.usage()} == {"m": 3, "other": 1}
    finally:
        await store.close()


def _ok(rid: str, cost: int, t: int = 10) -> LedgerEntry:
    return LedgerEntry(t, "t", "app", "p", "m", "chat", 1, 1, cost, "USD", "ok", 1,
                       reservation_id=rid)


async def test_a_batch_writes_each_counter_once_and_its_rows_together(tmp_path: Path) -> None:
    """A batch's reserves and settles owe their writes (capwallet.store.sqlite_batch._Cursor): each
    counter gets one upsert of the batch's merged delta, whatever the number of calls, and a
    reserve later in the batch sees the deltas of the earlier ones (refused at the limit)."""
    store = SQLiteStore(tmp_path / "m.db")
    try:
        old = [_reservation(Hold("b", 10, 100), Hold("r", 1, 100)) for _ in range(4)]
        for r in old:
            assert (await store.reserve(r)).ok
        assert store._fast is not None
        seen: list[str] = []
        store._fast.set_trace_callback(seen.append)
        new = [_reservation(Hold("b", 25, 100), Hold("r", 1, 100)) for _ in range(4)]
        results = await asyncio.gather(
            *(store.settle(r.reservation_id, {"b": 3, "r": 1}, _ok(r.reservation_id, 3))
              for r in old),
            *(store.reserve(r) for r in new))
        # 4 x 3 settled, then 25 a reserve: 12 + 25 + 25 + 25 fits in 100, the fourth not.
        assert results[:4] == [True] * 4
        assert [r.ok for r in results[4:] if isinstance(r, ReserveResult)] == [
            True, True, True, False]
        assert results[7] == ReserveResult(False, failed_counter="b", used=87)
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        assert sum(s.startswith("INSERT INTO counters") for s in seen) == 2  # b and r
        assert sum(s.startswith("INSERT INTO ledger") for s in seen) == 1  # 4 rows
        assert sum(s.startswith("INSERT INTO reservations") for s in seen) == 1  # 3 rows
        assert sum(s.startswith("DELETE FROM reservations") for s in seen) == 4
        assert not any(s.startswith("SAVEPOINT") for s in seen)
        assert await store.counters(["b", "r"]) == {"b": 87, "r": 7}
        assert sorted(e.reservation_id or "" for e in await store.ledger()) == sorted(
            r.reservation_id for r in old)
        # What the batch owed was committed: the reservations it opened settle, and the ones
        # it closed do not settle again.
        assert await store.settle(new[0].reservation_id, {"b": 1}, _ok(new[0].reservation_id, 1))
        assert not await store.release(old[0].reservation_id, _ok(old[0].reservation_id, 0))
        assert await store.counters(["b", "r"]) == {"b": 63, "r": 6}
    finally:
        await store.close()


async def test_a_batchs_ledger_rows_of_one_token_bind_what_they_share_once(
        tmp_path: Path) -> None:
    """The owed ledger rows of a batch that share token, app, provider, model, operation,
    currency, status and chain go as one INSERT binding those once (numbered parameters);
    rows that do not all share them go as the plain multi-row INSERT. Either way every row
    reads back with its own values."""
    store = SQLiteStore(tmp_path / "l.db")
    try:
        res = [_reservation(Hold("b", 10, 100), rid=f"r{i}") for i in range(6)]
        for r in res:
            assert (await store.reserve(r)).ok
        entries = [LedgerEntry(100 + i, "t", "app", "p", "m", "chat", i, 2 * i, i + 1, "USD",
                               "ok", 7 * i, reservation_id=r.reservation_id, chain_id="c")
                   for i, r in enumerate(res)]
        entries[4] = LedgerEntry(104, "u", "app", "p", "m", "chat", 4, 8, 5, "USD", "ok", 28,
                                 reservation_id="r4", chain_id="c")  # another token
        assert store._fast is not None
        seen: list[str] = []
        store._fast.set_trace_callback(seen.append)
        shared = []
        for batch in (entries[:3], entries[3:]):
            before = _insert_shared_sql.cache_info()
            assert await asyncio.gather(*(store.settle(e.reservation_id or "", {"b": 1}, e)
                                          for e in batch)) == [True] * 3
            after = _insert_shared_sql.cache_info()
            shared.append(after.hits + after.misses - before.hits - before.misses)
        assert shared == [1, 0]  # t, t, t shared; t, u, t did not
        assert sum(s.startswith("INSERT INTO ledger") for s in seen) == 2
        assert sorted(await store.ledger(), key=lambda e: e.time) == entries
        assert await store.counters(["b"]) == {"b": 6}
    finally:
        await store.close()


async def test_a_batchs_reserves_of_one_token_read_its_counters_once(tmp_path: Path) -> None:
    """Inside one batch (it holds the write lock) the second reserve of a token needs no read:
    the first one's values plus what the batch owes are its counters."""
    store = SQLiteStore(tmp_path / "r.db")
    try:
        assert (await store.reserve(_reservation(Hold("b", 10, 100)))).ok
        assert store._fast is not None
        seen: list[str] = []
        store._fast.set_trace_callback(seen.append)
        got = await asyncio.gather(*(store.reserve(_reservation(Hold("b", 30, 100),
                                                                Hold("r", 1, 9)))
                                     for _ in range(4)))
        assert [r.ok for r in got] == [True, True, True, False]
        assert got[3] == ReserveResult(False, failed_counter="b", used=100)
        assert sum("FROM revoked" in s for s in seen) == 1
        assert await store.counters(["b", "r"]) == {"b": 100, "r": 3}
    finally:
        await store.close()


async def test_a_batch_reserve_sees_a_revocation_and_writes_made_earlier_in_it(
        tmp_path: Path) -> None:
    """What a batch's reserves read is forgotten when the batch changes it otherwise: a
    revocation, or counters written at once (a settle of another process's reservation)."""
    store = SQLiteStore(tmp_path / "v.db")
    other = SQLiteStore(tmp_path / "v.db")
    try:
        results = await asyncio.gather(store.reserve(_reservation(Hold("b", 1, 100))),
                                       store.revoke("t", 5),
                                       store.reserve(_reservation(Hold("b", 1, 100))))
        assert list(results) == [ReserveResult(True), None, ReserveResult(False, revoked=True)]
        theirs = Reservation(secrets.token_hex(16), "u", (Hold("c", 40, 100),), 2_000_000_000)
        assert (await other.reserve(theirs)).ok

        def mine(n: int) -> Reservation:
            return Reservation(secrets.token_hex(16), "u", (Hold("c", n, 100),), 2_000_000_000)

        after = await asyncio.gather(
            store.reserve(mine(50)),  # reads c = 40, owes +50
            store.settle(theirs.reservation_id, {"c": 40}, _ok(theirs.reservation_id, 40)),
            store.reserve(mine(50)))  # 40 + 50 + 50 > 100
        assert list(after) == [ReserveResult(True), True,
                               ReserveResult(False, failed_counter="c", used=90)]
        assert await store.counters(["c"]) == {"c": 90}
    finally:
        await other.close()
        await store.close()


async def test_a_batch_larger_than_one_insert_writes_every_row(tmp_path: Path) -> None:
    """A batch's owed rows go as multi-row INSERTs of at most INSERT_ROWS rows each."""
    from capwallet.store.sqlite_statements import INSERT_ROWS

    store = SQLiteStore(tmp_path / "big.db")
    try:
        n = INSERT_ROWS + 3
        rs = [_reservation(Hold("b", 2, 10**6)) for _ in range(n)]
        assert store._fast is not None
        seen: list[str] = []
        store._fast.set_trace_callback(seen.append)
        assert all(r.ok for r in await asyncio.gather(*(store.reserve(r) for r in rs)))
        assert sum(s.startswith("INSERT INTO reservations") for s in seen) == 2
        assert all(await asyncio.gather(*(
            store.settle(r.reservation_id, {"b": 1}, _ok(r.reservation_id, 1)) for r in rs)))
        assert sum(s.startswith("INSERT INTO ledger") for s in seen) == 2
        assert await store.counters(["b"]) == {"b": n}
        assert sorted(e.reservation_id or "" for e in await store.ledger(limit=2 * n)) == sorted(
            r.reservation_id for r in rs)
        assert [(u.calls, u.cost) for u in await store.usage()] == [(n, n)]
    finally:
        await store.close()


async def test_a_settle_of_a_reservation_closed_elsewhere_is_told_in_a_batch(
        tmp_path: Path) -> None:
    """A settle whose DELETE is owed assumes its reservation open; if another process's
    sweep closed it meanwhile, the batch runs again write by write: that settle returns
    False and charges nothing, the others of the batch commit once."""
    store = SQLiteStore(tmp_path / "s.db")
    other = SQLiteStore(tmp_path / "s.db")
    try:
        gone = Reservation(secrets.token_hex(16), "t", (Hold("b", 10, 100),), lease_until=5)
        kept = _reservation(Hold("b", 10, 100))
        for r in (gone, kept):
            assert (await store.reserve(r)).ok
        assert await other.expire_leases(6) == 1  # charges gone's 10, closes it
        assert store._fast is not None
        statements = _trace(store._fast)
        fresh = _reservation(Hold("b", 70, 100))
        results = await asyncio.gather(
            store.settle(gone.reservation_id, {"b": 1}, _ok(gone.reservation_id, 1)),
            store.settle(kept.reservation_id, {"b": 2}, _ok(kept.reservation_id, 2)),
            store.reserve(fresh))
        assert list(results) == [False, True, ReserveResult(True)]
        assert statements.count("COMMIT") == 1
        assert await store.counters(["b"]) == {"b": 10 + 2 + 70}
        assert sorted(e.status for e in await store.ledger()) == ["lease_expired", "ok"]
    finally:
        await other.close()
        await store.close()


async def test_refusals_of_one_batch_are_compacted_into_one_row(tmp_path: Path) -> None:
    """A refusal adds to its minute's row even when that row is owed by the same batch."""
    store = SQLiteStore(tmp_path / "c.db")
    try:
        r = _reservation(Hold("b", 10, 100))
        assert (await store.reserve(r)).ok

        def refusal(t: int) -> LedgerEntry:
            return LedgerEntry(t, "t", "app", "", "", "chat", 0, 0, 0, "USD", "denied:x", 0)

        await asyncio.gather(store.settle(r.reservation_id, {"b": 1}, _ok(r.reservation_id, 1)),
                             store.append_ledger(refusal(120)), store.append_ledger(refusal(121)),
                             store.append_ledger(refusal(125)))
        rows = await store.ledger()
        assert sorted((e.status, e.count) for e in rows) == [("denied:x", 3), ("ok", 1)]
    finally:
        await store.close()


async def test_pruned_bodies_leave_no_trace_in_the_file(tmp_path: Path) -> None:
    """Logged bodies the retention prunes are gone from the database file, their overflow
    pages zeroed, not left in the free list: also a refusal's body whose row was rewritten by
    a later refusal of the same minute (the old copy freed then), and while reservations come
    and go in the same file. The store turns secure_delete ON itself: a SQLite built
    without SECURE_DELETE (upstream's default; Debian's has it) leaves all of them, and
    FAST, which zeroes no page it frees, leaves them in the free list."""
    store = SQLiteStore(tmp_path / "p.db")
    path = tmp_path / "p.db"
    try:
        for i in range(30):
            r = _reservation(Hold("b", 10, 10**9))
            assert (await store.reserve(r)).ok
            body = f"<old {i} request>" * (400 if i % 2 else 8)  # an overflow chain or inline
            entry = LedgerEntry(10 + i, "t", "app", "p", "m", "chat", 1, 1, 1, "USD", "ok", 1,
                                reservation_id=r.reservation_id, request_body=body,
                                response_body=f"<old {i} answer>" * 300)
            assert await store.settle(r.reservation_id, {"b": 1}, entry)
        for n in range(3):  # the second and third add to the first's row
            await store.append_ledger(LedgerEntry(
                60, "t", "app", "", "", "chat", 0, 0, 0, "USD", "denied:x", 0,
                request_body="<old refused request>" * 400 + str(n)))
        assert await store.prune_ledger(1000) == 31
        for i in range(5):  # rows kept, written after the prune (some into freed pages)
            await store.append_ledger(LedgerEntry(
                2000 + i, "t", "app", "p", "m", "chat", 1, 1, 1, "USD", "ok", 1,
                request_body=f"<kept {i}>" * 300))
        with sqlite3.connect(path) as c:
            assert c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        await store.close()
    data = path.read_bytes()
    assert b"<kept 4>" in data  # the file is read as it is written
    assert b"<old" not in data


async def test_a_batch_settles_a_reservation_another_process_made(tmp_path: Path) -> None:
    """A settle of a reservation this store did not make reads it back, seeing what the
    batch owes: one settled earlier in the batch is not settled twice."""
    store = SQLiteStore(tmp_path / "x.db")
    other = SQLiteStore(tmp_path / "x.db")
    try:
        theirs = _reservation(Hold("b", 10, 100))
        mine = _reservation(Hold("b", 10, 100))
        assert (await other.reserve(theirs)).ok and (await store.reserve(mine)).ok
        results = await asyncio.gather(
            store.settle(mine.reservation_id, {"b": 1}, _ok(mine.reservation_id, 1)),
            store.settle(theirs.reservation_id, {"b": 2}, _ok(theirs.reservation_id, 2)),
            store.settle(mine.reservation_id, {"b": 5}, _ok(mine.reservation_id, 5)),
            store.reserve(_reservation(Hold("b", 97, 100))))
        assert list(results) == [True, True, False, ReserveResult(True)]
        assert await store.counters(["b"]) == {"b": 100}
        assert len(await store.ledger()) == 2
    finally:
        await other.close()
        await store.close()


async def test_the_oldest_remembered_holds_are_forgotten_past_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past HOLDS_CACHE open reservations, the oldest one's holds are forgotten (its settle
    reads them back from its row); the others settle from memory. Each settles exactly."""
    monkeypatch.setattr("capwallet.store.sqlite.HOLDS_CACHE", 2)
    store = SQLiteStore(tmp_path / "x.db")
    try:
        rs = [_reservation(Hold("b", 10, 100)) for _ in range(3)]
        for r in rs:
            assert (await store.reserve(r)).ok
        assert list(store._holds) == [rs[1].reservation_id, rs[2].reservation_id]
        for i, r in enumerate(rs):
            assert await store.settle(r.reservation_id, {"b": i + 1}, _ok(r.reservation_id, 1))
        assert await store.counters(["b"]) == {"b": 6}
        assert not store._holds
    finally:
        await store.close()


async def test_a_reservations_stored_json_reads_back_in_another_process(
        tmp_path: Path) -> None:
    """A reservation's holds and meta are stored as JSON text (orjson, or the json module for
    what orjson refuses: an int past 64 bits, a lone surrogate): a store that did not make it
    settles it from its stored holds, and a lease sweep logs its stored meta, as the json
    module reads them (a relay of an earlier version sharing the file)."""
    import json

    store = SQLiteStore(tmp_path / "x.db")
    other = SQLiteStore(tmp_path / "x.db")
    try:
        huge = 2**70
        meta = {"app": "caf\u00e9", "provider": "p", "model": "m", "cost": 7,
                "currency": "USD", "chain_id": "c", "note": "\ud800"}
        plain = Reservation("plain", "t", (Hold("b", 10, 100, 1234), Hold("r", 1, 5)),
                            lease_until=2_000_000_000, meta=meta | {"note": "n"})
        odd = Reservation("odd", "t", (Hold("b", 10, huge),), lease_until=5, meta=meta)
        assert (await store.reserve(plain)).ok and (await store.reserve(odd)).ok
        rows = dict(sqlite3.connect(tmp_path / "x.db").execute(
            "SELECT id, holds || ' ' || meta FROM reservations").fetchall())
        assert json.loads(rows["plain"].split(" ", 1)[0]) == [["b", 10, 100, 1234],
                                                              ["r", 1, 5, None]]
        assert json.loads(rows["plain"].split(" ", 1)[1]) == meta | {"note": "n"}
        assert json.loads(rows["odd"].split(" ", 1)[0]) == [["b", 10, huge, None]]
        assert json.loads(rows["odd"].split(" ", 1)[1]) == meta
        assert await other.settle("plain", {"b": 3}, _ok("plain", 3))
        assert await other.counters(["b", "r"]) == {"b": 13, "r": 0}  # 3 + odd's 10
        assert await other.expire_leases(10) == 1
        [expired] = [e for e in await other.ledger() if e.status == "lease_expired"]
        assert (expired.app, expired.model, expired.cost) == ("caf\u00e9", "m", 7)
        assert await store.counters(["b"]) == {"b": 13}  # the worst case stays charged
    finally:
        await other.close()
        await store.close()


async def test_a_stored_worst_case_past_64_bits_does_not_stop_the_lease_sweep(
        tmp_path: Path) -> None:
    """A reservation whose meta holds counts past 64 bits (stored by a relay that did not yet
    refuse such a worst case: max_tokens 2^63 on a token with no budget) is closed by the
    sweep with its counts at 2^53 - 1, and so is every other expired reservation: the sweep,
    one transaction, raised OverflowError for all of them."""
    store = SQLiteStore(tmp_path / "x.db")
    try:
        meta = {"app": "a", "provider": "p", "model": "m", "currency": "USD", "chain_id": "c",
                "input_tokens": 10, "output_tokens": 2**63, "cost": 2**80}
        huge = Reservation("huge", "t", (), lease_until=5, meta=meta)
        plain = Reservation("plain", "t", (Hold("b", 10, 100),), lease_until=5,
                            meta=meta | {"output_tokens": 16, "cost": 7})
        assert (await store.reserve(huge)).ok and (await store.reserve(plain)).ok
        assert await store.expire_leases(10) == 2
        rows = {e.output_tokens: e for e in await store.ledger()}
        assert sorted(rows) == [16, 2**53 - 1]
        assert rows[2**53 - 1].cost == 2**53 - 1 and rows[16].cost == 7
        assert {e.status for e in rows.values()} == {"lease_expired"}
        assert await store.expire_leases(10) == 0
    finally:
        await store.close()


def test_the_ledger_and_usage_reads_have_index_plans(tmp_path: Path) -> None:
    """Every read of the ledger and the aggregates is a search or an ordered index walk, never
    a scan of the table (EXPLAIN QUERY PLAN): dropping an index would fail here."""
    from capwallet.store.sqlite_statements import _LEDGER_COLUMNS, _REFUSAL_ADD, _filter

    SQLiteStore(tmp_path / "x.db")  # the schema
    reads = []
    for tokens in (None, ["a"], ["a", "b"]):
        for since in (None, 5):
            where, params = _filter(tokens, "time", since)
            sql = f"SELECT {_LEDGER_COLUMNS}, count FROM ledger"
            if where:
                sql += " WHERE " + " AND ".join(where)
            reads.append((sql + " ORDER BY time DESC, seq DESC LIMIT ?", [*params, 10]))
            where, params = _filter(tokens, "day", since)
            if since is not None:  # the wallet's reads (a token filter alone has no caller)
                reads.append(("SELECT cost FROM usage_daily WHERE "
                              + " AND ".join(where), params))
    reads += [("DELETE FROM ledger WHERE time < ?", [5]),
              (_REFUSAL_ADD, ["t", 0, 60, "denied:x"])]
    with sqlite3.connect(tmp_path / "x.db") as c:
        for sql, params in reads:
            plan = [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql, params)]
            for step in plan:
                if step.startswith("SCAN "):
                    assert "USING INDEX" in step, (sql, plan)
            assert any("USING" in step for step in plan), (sql, plan)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
async def test_a_batch_runs_its_writes_in_call_order(tmp_path: Path,
                                                     order: tuple[int, int]) -> None:
    store = SQLiteStore(tmp_path / "o.db")
    try:
        pair = [_reservation(Hold("b", 60, 100)), _reservation(Hold("b", 50, 100))]
        first, second = (pair[i] for i in order)
        a, b = await asyncio.gather(store.reserve(first), store.reserve(second))
        assert a.ok and not b.ok
        assert b.failed_counter == "b" and b.used == first.holds[0].amount
        assert await store.counters(["b"]) == {"b": first.holds[0].amount}
    finally:
        await store.close()


async def test_a_batch_waits_for_a_lock_held_elsewhere_in_one_hop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "l.db")
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    try:
        assert (await store.reserve(_reservation(Hold("b", 1, 4)))).ok
        writer = _trace(store._writer)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock ...
        other.execute("UPDATE counters SET used = used + 1 WHERE key = 'b'")  # ... and spends
        tasks = [asyncio.create_task(store.reserve(_reservation(Hold("b", 1, 4))))
                 for _ in range(3)]
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 10 and not any(t.done() for t in tasks)  # the loop runs on
        later = asyncio.create_task(store.reserve(_reservation(Hold("c", 1, 4))))
        await asyncio.sleep(0.02)
        other.execute("COMMIT")
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        # The batch saw the other process's write: 2 used, room for two of the three.
        assert [r.ok for r in results] == [True, True, False]
        assert (await asyncio.wait_for(later, 5)).ok
        assert await store.counters(["b", "c"]) == {"b": 4, "c": 1}
        # The three waited on the worker as one transaction (the later write came after).
        assert writer.count("BEGIN IMMEDIATE") == 1 and writer.count("COMMIT") == 1
    finally:
        other.close()
        await store.close()


async def test_a_write_cancelled_before_its_batch_does_not_happen(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    try:
        task = asyncio.create_task(store.reserve(_reservation(Hold("b", 1, 10))))
        await asyncio.sleep(0)  # the task queued its write; the batch runs next iteration
        task.cancel()
        kept = await asyncio.wait_for(store.reserve(_reservation(Hold("b", 2, 10))), 5)
        assert kept.ok and task.cancelled()
        assert await store.counters(["b"]) == {"b": 2}
    finally:
        await asyncio.wait_for(store.close(), 5)


async def test_the_others_commit_when_the_first_caller_is_cancelled(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "lead.db")
    try:
        first = asyncio.create_task(store.reserve(_reservation(Hold("b", 1, 10))))
        second = asyncio.create_task(store.reserve(_reservation(Hold("b", 2, 10))))
        await asyncio.sleep(0)  # both queued their writes; the first leads the batch
        first.cancel()
        assert (await asyncio.wait_for(second, 5)).ok
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await store.counters(["b"]) == {"b": 2}
    finally:
        await asyncio.wait_for(store.close(), 5)  # a batch left unrun would hang it


async def test_close_lets_queued_writes_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    task = asyncio.create_task(store.reserve(_reservation(Hold("b", 3, 10))))
    await asyncio.sleep(0)
    await store.close()
    assert (await task).ok
    with pytest.raises(StoreUnavailable):
        await store.reserve(_reservation(Hold("b", 1, 10)))
    again = SQLiteStore(tmp_path / "q.db")
    try:
        assert await again.counters(["b"]) == {"b": 3}
    finally:
        await again.close()


async def test_synchronous_full_commits_batches_on_the_worker(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "full.db", synchronous="full")
    try:
        assert store._fast is None
        writer = _trace(store._writer)
        results = await asyncio.gather(*(store.reserve(_reservation(Hold("b", 1, 3)))
                                         for _ in range(5)))
        assert [r.ok for r in results] == [True, True, True, False, False]
        assert writer.count("BEGIN IMMEDIATE") == 1 and writer.count("COMMIT") == 1
    finally:
        await store.close()


def test_one_store_serves_successive_event_loops(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "loops.db")
    assert asyncio.run(store.reserve(_reservation(Hold("b", 1, 10)))).ok
    assert asyncio.run(store.reserve(_reservation(Hold("b", 1, 10)))).ok
    assert asyncio.run(store.snapshot("t", ["b"])) == (False, {"b": 2})
    asyncio.run(store.close())


async def test_an_existing_ledger_with_autoincrement_still_works(tmp_path: Path) -> None:
    """Files created before the ledger lost AUTOINCREMENT keep it and work unchanged."""
    path = tmp_path / "old.db"
    from capwallet.store.sqlite_schema import _SCHEMA
    old_schema = _SCHEMA.replace("seq INTEGER PRIMARY KEY,",
                                 "seq INTEGER PRIMARY KEY AUTOINCREMENT,")
    assert old_schema != _SCHEMA
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode = WAL")
        c.executescript(old_schema)
    store = SQLiteStore(path)
    try:
        r = _reservation(Hold("b", 5, 10))
        assert (await store.reserve(r)).ok
        assert await store.settle(r.reservation_id, {"b": 4}, LedgerEntry(
            5, "t", "", "p", "m", "chat", 1, 1, 4, "USD", "ok", 1))
        await store.append_ledger(LedgerEntry(6, "t", "", "p", "m", "chat", 0, 0, 0, "USD",
                                              "denied:x", 0))
        assert [e.status for e in await store.ledger()] == ["denied:x", "ok"]
    finally:
        await store.close()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ledger'").fetchone() == (2,)


_BATCHING_WORKER = textwrap.dedent("""
    import asyncio, secrets, sys
    from capwallet.store import Hold, LedgerEntry, Reservation, open_store

    async def main(url, n, concurrency):
        store = open_store(url)
        ok = refused = 0

        async def caller():
            nonlocal ok, refused
            for _ in range(n // concurrency):
                rid = secrets.token_hex(16)
                r = Reservation(rid, "tok", (Hold("budget", 3, 200), Hold("rate", 1, 10**6)),
                                lease_until=2_000_000_000)
                if (await store.reserve(r)).ok:
                    ok += 1
                    await asyncio.sleep(0)
                    assert await store.settle(rid, {"budget": 2, "rate": 1}, LedgerEntry(
                        1, "tok", "", "p", "m", "chat", 1, 1, 2, "USD", "ok", 1))
                else:
                    refused += 1
                    await store.append_ledger(LedgerEntry(
                        1, "tok", "", "p", "m", "chat", 0, 0, 0, "USD", "denied:budget", 0))

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        await store.close()
        print(ok, refused)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
""")


async def test_processes_with_batches_share_one_file_exactly(tmp_path: Path) -> None:
    """Three processes, each with 10 concurrent callers (so each commits batches), spend one
    budget: it is never exceeded and the ledger matches the counters row for row."""
    url = f"sqlite:///{tmp_path / 'batches.db'}"
    SQLiteStore.from_url(url)
    procs = [subprocess.Popen([sys.executable, "-c", _BATCHING_WORKER, url, "80", "10"],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    ok = refused = 0
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        a, b = map(int, out.split())
        ok, refused = ok + a, refused + b
    assert ok + refused == 240
    assert 0 < ok <= 100 and refused > 0  # 2 settled per call: the budget allows 100
    store = open_store(url)
    try:
        assert await store.counters(["budget", "rate"]) == {"budget": 2 * ok, "rate": ok}
        rows = await store.ledger(limit=1000)
        # refusals are compacted: one row per token, reason and minute, with a count
        assert sorted(e.status for e in rows for _ in range(e.count)) == [
            "denied:budget"] * refused + ["ok"] * ok
        assert sum(1 for e in rows if e.refused) == 1
        assert sum(e.cost for e in rows) == 2 * ok
    finally:
        await store.close()


async def test_a_writer_killed_holding_the_lock_lets_the_batch_through(tmp_path: Path) -> None:
    """A process killed mid-transaction: its write is rolled back and its lock released, and
    the batch that was waiting for the lock commits."""
    store = SQLiteStore(tmp_path / "k.db")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sqlite3, sys, time
        c = sqlite3.connect(sys.argv[1], isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO counters (key, used) VALUES ('b', 100)")
        print("locked", flush=True)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    """), str(tmp_path / "k.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        results = await asyncio.wait_for(asyncio.gather(
            *(store.reserve(_reservation(Hold("b", 4, 10))) for _ in range(3))), 10)
        assert [r.ok for r in results] == [True, True, False]
        assert child.wait(5) == -9
        assert await store.counters(["b"]) == {"b": 8}
    finally:
        if child.poll() is None:
            child.kill()
        await store.close()


def test_a_store_file_from_before_approval_kinds_gains_the_column(tmp_path: Path) -> None:
    """A pending table without ``kind`` (made before approvals stated their kind) is migrated:
    its rows read as model calls, and new rows keep their kind."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE pending (id TEXT PRIMARY KEY, token_id TEXT NOT NULL, digest TEXT NOT NULL,"
        " summary TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
        " status TEXT NOT NULL, approval TEXT);"
        "INSERT INTO pending VALUES ('old', 't', 'ab', 's', 1, 9999999999, 'pending', NULL);")
    conn.commit()
    conn.close()

    async def run() -> None:
        store = SQLiteStore(str(path))
        try:
            old = await store.get_pending("old")
            assert old is not None and old.kind == "model_call"
            await store.add_pending(PendingApproval(
                approval_request_id="new", token_id="t", digest="cd", summary="s",
                created_at=2, expires_at=9999999999, kind="resource_access"))
            new = await store.get_pending("new")
            assert new is not None and new.kind == "resource_access"
        finally:
            await store.close()
    asyncio.run(run())


def test_a_store_file_from_before_chains_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    """A ledger without ``count`` and ``chain_id`` and no chains table (a file made before
    either) opens: its rows read with chain "" and count 1, new rows keep their chain, chains
    are recorded, and it opens again after that."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,"
        " token_id TEXT NOT NULL, app TEXT NOT NULL, provider TEXT NOT NULL,"
        " model TEXT NOT NULL, operation TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
        " output_tokens INTEGER NOT NULL, cost INTEGER NOT NULL, currency TEXT NOT NULL,"
        " status TEXT NOT NULL, latency_ms INTEGER NOT NULL, reservation_id TEXT,"
        " request_body TEXT, response_body TEXT);"
        "INSERT INTO ledger (time, token_id, app, provider, model, operation, input_tokens,"
        " output_tokens, cost, currency, status, latency_ms) VALUES"
        " (100, 't', 'a', 'p', 'm', 'chat', 1, 2, 3, 'EUR', 'ok', 4);")
    conn.commit()
    conn.close()

    async def run() -> None:
        store = SQLiteStore(str(path))
        try:
            [old] = await store.ledger()
            assert (old.cost, old.chain_id, old.count) == (3, "", 1)
            await store.append_ledger(LedgerEntry(101, "t", "a", "p", "m", "chat", 0, 0, 0,
                                                  "EUR", "denied:revoked", 0,
                                                  chain_id="ab" * 8))
            assert await store.note_chain(Chain("t", "ab" * 8, ("app a",), 101))
        finally:
            await store.close()
        again = SQLiteStore(str(path))
        try:
            assert [e.chain_id for e in await again.ledger()] == ["ab" * 8, ""]
            assert await again.chains(["t"]) == [Chain("t", "ab" * 8, ("app a",), 101)]
        finally:
            await again.close()
    asyncio.run(run())


async def test_the_commit_that_starts_the_wal_over_runs_off_the_loop(tmp_path: Path) -> None:
    # After a checkpoint the next commit writes the WAL's first frame again, and SQLite syncs
    # the new WAL header then (an fdatasync): that commit belongs on the worker, like the
    # checkpoint, not on the event loop's thread.
    from capwallet.store.sqlite import CHECKPOINT_EVERY
    store = SQLiteStore(tmp_path / "r.db")
    loop_thread = threading.get_ident()
    commits: list[bool] = []  # per COMMIT: whether it ran on the loop's thread

    def seen(sql: str) -> None:
        if sql == "COMMIT":
            commits.append(threading.get_ident() == loop_thread)

    try:
        assert store._fast is not None
        store._fast.set_trace_callback(seen)
        store._writer.set_trace_callback(seen)
        for _ in range(2 * CHECKPOINT_EVERY + 2):  # one write per batch: one commit each
            assert (await store.reserve(_reservation(Hold("b", 1, 10**9)))).ok
        # Commits 1..CHECKPOINT_EVERY on the loop, then the checkpoint (on the worker), then
        # the commit that starts the WAL over: on the worker, and the next ones on the loop.
        off_loop = [i for i, on_loop in enumerate(commits, 1) if not on_loop]
        assert off_loop == [CHECKPOINT_EVERY + 1, 2 * CHECKPOINT_EVERY + 1]
        assert await store.counters(["b"]) == {"b": 2 * CHECKPOINT_EVERY + 2}
    finally:
        await store.close()


@pytest.mark.parametrize("status", ["ok", "usage_missing", "upstream_error", "denied",
                                    "denied:budget_exceeded", "lease_expired",
                                    "client_disconnected"])
@pytest.mark.parametrize("provider", ["openai", ""])
def test_record_adds_usage_as_counts_as_usage_says(status: str, provider: str) -> None:
    """_record writes counts_as_usage and usage_day out (no calls per settled call): it adds
    a row to the usage aggregates exactly when counts_as_usage says so, under usage_day."""
    from capwallet.store.base import counts_as_usage, ledger_entry, usage_day
    from capwallet.store.sqlite_batch import _Cursor, _record
    from capwallet.store.sqlite_statements import _ledger_row

    entry = ledger_entry(1_765_000_123, "tok", "app", provider, "m", "chat", 3, 4, 50, "USD",
                         status, 7, "rid", None, None, 1, "")
    cur = sqlite3.connect(":memory:").cursor(_Cursor)
    cur.defer = True
    _record(cur, entry, _ledger_row(entry, "rid"))
    want = {(usage_day(entry.time), "tok", "app", provider, "m", "USD"): (50, 1, 3, 4)}
    assert cur.usage == (want if counts_as_usage(entry) else {})


async def test_prune_counters_deletes_the_counters_of_past_periods_only(tmp_path: Path) -> None:
    """Without it the file kept every period's counter of every token for ever (a rate's one
    per minute of use): nothing deleted from the counters table. Deleted: a counter whose
    period ended before the time given; kept: the running periods' and "total" counters
    (no resets_at). More counters than one write reads (PRUNE_CHUNK), so the walk goes on
    over several writes, and a reservation's counter made the usual way is judged alike."""
    from capwallet.store.sqlite import PRUNE_CHUNK

    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    try:
        live = _reservation(Hold("b/2026-09", 10, 10**9, 2000))
        assert (await store.reserve(live)).ok
        dead = _reservation(Hold("b/2026-08", 10, 10**9, 900))
        assert (await store.reserve(dead)).ok
        assert await store.settle(dead.reservation_id, {"b/2026-08": 7}, LedgerEntry(
            1, "t", "app", "p", "m", "chat", 1, 1, 7, "USD", "ok", 1,
            reservation_id=dead.reservation_id))
        n = PRUNE_CHUNK * 2 + 500
        with sqlite3.connect(path) as c:
            c.executemany("INSERT INTO counters (key, used, resets_at) VALUES (?, ?, ?)",
                          [(f"r/{i:05d}", 1, 500 + i % 3 * 1000 if i % 4 else None)
                           for i in range(n)])
        # resets_at 500 (dead), 1500 (kept at 1000) or 2500 (kept), None (a total: kept)
        want_dead = {f"r/{i:05d}" for i in range(n) if i % 4 and i % 3 == 0}

        def table() -> dict[str, int]:
            with sqlite3.connect(path) as c:
                return dict(c.execute("SELECT key, used FROM counters").fetchall())

        before = table()
        assert before["b/2026-08"] == 7 and len(before) == n + 2
        assert await store.prune_counters(1000) == len(want_dead) + 1
        after = table()
        assert set(before) - set(after) == want_dead | {"b/2026-08"}
        assert all(after[k] == before[k] for k in after)
        assert await store.counters(["b/2026-08", "b/2026-09"]) == {"b/2026-08": 0,
                                                                    "b/2026-09": 10}
        assert await store.prune_counters(1000) == 0
        # the live reservation still settles on its counter
        assert await store.settle(live.reservation_id, {"b/2026-09": 4}, LedgerEntry(
            2, "t", "app", "p", "m", "chat", 1, 1, 4, "USD", "ok", 1,
            reservation_id=live.reservation_id))
        assert await store.counters(["b/2026-09"]) == {"b/2026-09": 4}
    finally:
        await store.close()
