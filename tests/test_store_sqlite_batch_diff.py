"""A SQLite batch does what its operations do one at a time, in call order.

The group commit runs the writes of one loop iteration as one batch, and inside it the
reserves and settles owe their writes and write them merged at the batch's end
(capwallet.store.sqlite_batch._Cursor), reusing what earlier reserves read; a failing op sends the
batch to a retry with a savepoint per op. None of that may change an outcome: these tests run
random mixes of reserves (shared counters, tight limits, approvals, duplicate ids), settles
(some with logged bodies: ledger rows of several shapes in one batch) and releases (of
reservations this store made and of ones another store made), revocations, refusals, lease
expiries and prunes once as one batch and once one op per batch on a second file, and compare
every outcome and every table.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from store_suite import Told

from capwallet.store import Hold, LedgerEntry, Reservation
from capwallet.store.sqlite import SQLiteStore

KEYS = ["b:shared", "b:one", "b:two", "r:calls"]
TOKENS = ["t1", "t2", "t3"]
NOW = 1_800_000_000


def _entry(tid: str, status: str, cost: int, rid: str | None = None,
           logged: bool = False, chain: str = "") -> LedgerEntry:
    return LedgerEntry(NOW, tid, "app", "openai" if status != "denied:x" else "",
                       "m", "chat", 3, 4, cost, "USD", status, 5, rid,
                       '{"q": 1}' if logged else None, "answer" if logged else None,
                       chain_id=chain)


def _plan(rng: random.Random, n_setup: int, n_ops: int) -> tuple[list[Any], list[Any]]:
    """(setup reservations made by store A or store B, the batch's ops)."""
    setup = []
    for i in range(n_setup):
        tid = rng.choice(TOKENS)
        holds = tuple(Hold(k, rng.randint(1, 40), 10_000) for k in rng.sample(KEYS, 2))
        setup.append((rng.choice("AB"), Reservation(f"s{i}", tid, holds,
                                                   NOW + rng.choice([-100, 100]))))
    ops: list[Any] = []
    for i in range(n_ops):
        kind = rng.choice(["reserve"] * 6 + ["settle"] * 4 + ["release", "revoke", "refusal",
                                                              "expire", "dup", "approval",
                                                              "logged", "soon", "soon"])
        tid = rng.choice(TOKENS)
        if kind in ("reserve", "dup", "approval"):
            holds = tuple(Hold(k, rng.randint(1, 60), rng.randint(60, 260))
                          for k in rng.sample(KEYS, rng.randint(1, 3)))
            # A duplicate of an open reservation's id (random ids never repeat otherwise: a
            # reused id after its reservation closed is not a case to compare).
            live = [r.reservation_id for _, r in setup if r.lease_until > NOW]
            rid = rng.choice(live) if kind == "dup" and live else f"o{i}"
            ops.append(("reserve", Reservation(rid, tid, holds, NOW + 100,
                                               "ap1" if kind == "approval" else None, NOW)))
        elif kind in ("settle", "release", "logged", "soon"):  # logged: with its bodies;
            # soon: queued with settle_soon. The ledger rows name one of a few tokens and
            # chains, so a batch's rows share their common values or not (_insert_shared).
            rid = f"s{rng.randrange(n_setup)}"
            actual = {k: rng.randint(0, 50) for k in rng.sample(KEYS, 2)}
            ops.append((kind, rid, actual if kind != "release" else {},
                        rng.choice(["t1"] * 4 + ["t2"]), rng.choice(["", "", "", "c1"])))
        elif kind == "revoke":
            ops.append(("revoke", tid))
        elif kind == "refusal":
            ops.append(("refusal", tid))
        else:
            ops.append(("expire",))
    return setup, ops


def _op(store: SQLiteStore, op: Any) -> Any:
    kind = op[0]
    if kind == "reserve":
        return store.reserve(op[1])
    if kind in ("settle", "logged"):
        return store.settle(op[1], op[2], _entry(op[3], "ok", sum(op[2].values()), op[1],
                                                 kind == "logged", op[4]))
    if kind == "soon":
        return _soon(store, op[1], op[2], _entry(op[3], "ok", sum(op[2].values()), op[1],
                                                 chain=op[4]))
    if kind == "release":
        return store.release(op[1], _entry(op[3], "upstream_error", 0, op[1], chain=op[4]))
    if kind == "revoke":
        return store.revoke(op[1], NOW)
    if kind == "refusal":
        return store.append_ledger(_entry(op[1], "denied:x", 0))
    return store.expire_leases(NOW)


async def _soon(store: SQLiteStore, rid: str, actual: dict[str, int],
                entry: LedgerEntry) -> Any:
    """A settle queued (settle_soon) in its turn among the batch's ops, and its outcome once
    the store has written it."""
    told = Told()
    store.settle_soon(rid, actual, entry, told)
    while not told.done():
        await store.drain()
        await asyncio.sleep(0)
    (got,) = told.outcome
    if isinstance(got, BaseException):
        raise got
    return got


def _tables(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        return {
            "counters": db.execute("SELECT key, used FROM counters ORDER BY key").fetchall(),
            "reservations": db.execute("SELECT * FROM reservations ORDER BY id").fetchall(),
            "ledger": db.execute("SELECT time, token_id, app, provider, model, operation, "
                                 "input_tokens, output_tokens, cost, currency, status, "
                                 "latency_ms, reservation_id, request_body, response_body, "
                                 "chain_id, count FROM ledger ORDER BY seq").fetchall(),
            "usage": db.execute("SELECT * FROM usage_daily ORDER BY 1, 2, 3, 4, 5, 6").fetchall(),
            "revoked": db.execute("SELECT * FROM revoked ORDER BY 1").fetchall(),
            "approvals": db.execute("SELECT * FROM used_approvals").fetchall(),
        }
    finally:
        db.close()


def _outcome(x: Any) -> Any:
    return ("raised", type(x).__name__) if isinstance(x, BaseException) else x


async def _run(path: Path, setup: list[Any], ops: list[Any], batched: bool,
               contended: bool = False) -> list[Any]:
    a, b = SQLiteStore(path), SQLiteStore(path)
    try:
        for who, res in setup:
            assert (await (a if who == "A" else b).reserve(res)).ok
        if len(ops) % 2:  # half the plans: the other store's sweep closes the expired ones,
            # A's among them, so A's settles of those (holds remembered) must find them closed
            await b.expire_leases(NOW)
        if batched:
            commits = a.commits
            other = None
            if contended:  # another process holds the write lock: the batch goes to the worker
                other = sqlite3.connect(path, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                asyncio.get_running_loop().call_later(0.02, other.execute, "COMMIT")
            got = await asyncio.gather(*(_op(a, op) for op in ops), return_exceptions=True)
            if other is not None:
                other.close()
            assert a.commits == commits + 1  # one batch
        else:
            got = []
            for op in ops:
                try:
                    got.append(await _op(a, op))
                except Exception as exc:
                    got.append(exc)
        return [_outcome(x) for x in got]
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("contended", [False, True], ids=["loop", "worker"])
@pytest.mark.parametrize("seed", range(24))
def test_a_batch_does_what_its_ops_do_one_at_a_time(tmp_path: Path, seed: int,
                                                     contended: bool) -> None:
    rng = random.Random(seed)
    setup, ops = _plan(rng, rng.randint(2, 8), rng.randint(2, 24))
    one = asyncio.run(_run(tmp_path / "one.db", setup, ops, batched=False))
    batch = asyncio.run(_run(tmp_path / "batch.db", setup, ops, batched=True,
                             contended=contended))
    assert batch == one
    assert _tables(tmp_path / "batch.db") == _tables(tmp_path / "one.db")
