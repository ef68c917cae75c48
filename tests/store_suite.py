"""The backend-agnostic Store test suite: the semantics of capwallet.store.base, per backend.

Every backend in BACKENDS runs every test here. To add one, write a factory that takes pytest's
request and tmp_path and returns a function opening a *new handle* to one fresh, empty store
(several handles must share state, as several relay processes do), and add one line to
BACKENDS. tests/test_store_suite.py collects these tests; this module is imported, not collected
on its own (its name does not start with test_).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from capwallet.store import (
    Chain,
    Hold,
    LedgerEntry,
    PendingApproval,
    Reservation,
    Snapshot,
    Store,
    StoreUnavailable,
    UsageTotal,
    open_store,
)
from capwallet.store.base import MAX_CHAINS

Opener = Callable[[], Store]


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    url = f"sqlite:///{tmp_path / 'store.db'}"  # tmp_path is absolute: sqlite:////tmp/...
    return lambda: open_store(url)


def redis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """The session's Redis (conftest.redis_url); a fresh key prefix makes an empty store."""
    base: str = request.getfixturevalue("redis_url")
    url = f"{base}?prefix=t{secrets.token_hex(6)}"
    return lambda: open_store(url)


def redis_cluster_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A one-node Redis Cluster: it refuses any script or command whose keys span hash slots,
    so this proves the key layout is cluster-safe."""
    base: str = request.getfixturevalue("redis_cluster_url")
    url = f"{base}?cluster=1&prefix=t{secrets.token_hex(6)}"
    return lambda: open_store(url)


BACKENDS = [
    pytest.param(sqlite_backend, id="sqlite"),
    pytest.param(redis_backend, id="redis"),
    pytest.param(redis_cluster_backend, id="redis-cluster"),
]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    factory: Callable[[pytest.FixtureRequest, Path], Opener] = request.param
    return factory(request, tmp_path)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    s = opener()
    yield s
    await s.close()


NOW = 1_800_000_000


def rid() -> str:
    return secrets.token_hex(16)


def res(*holds: Hold, token: str = "t1", lease: int = NOW + 60, approval: str | None = None,
        meta: dict[str, object] | None = None, reservation_id: str | None = None) -> Reservation:
    return Reservation(
        reservation_id=reservation_id or rid(), token_id=token, holds=holds, lease_until=lease,
        approval_id=approval, created_at=NOW, meta=meta or {},
    )


def entry(status: str = "ok", cost: int = 0, token: str = "t1", time: int = NOW,
          model: str = "m") -> LedgerEntry:
    return LedgerEntry(
        time=time, token_id=token, app="app", provider="p", model=model, operation="chat",
        input_tokens=10, output_tokens=20, cost=cost, currency="EUR", status=status,
        latency_ms=5,
    )


# -- reserve ----------------------------------------------------------------------------------

async def test_reserve_adds_to_every_counter(store: Store) -> None:
    r = await store.reserve(res(Hold("budget/2026-11", 30, 100), Hold("rate/x", 1, 5)))
    assert r.ok and r.failed_counter is None
    assert await store.counters(["budget/2026-11", "rate/x", "absent"]) == {
        "budget/2026-11": 30, "rate/x": 1, "absent": 0,
    }


async def test_reserve_up_to_the_limit_exactly(store: Store) -> None:
    assert (await store.reserve(res(Hold("b", 60, 100)))).ok
    assert (await store.reserve(res(Hold("b", 40, 100)))).ok
    r = await store.reserve(res(Hold("b", 1, 100)))
    assert not r.ok and r.failed_counter == "b" and r.used == 100


async def test_reserve_is_all_or_none(store: Store) -> None:
    assert (await store.reserve(res(Hold("q", 90, 100)))).ok
    r = await store.reserve(res(Hold("b", 10, 100), Hold("q", 20, 100), Hold("c", 1, 9)))
    assert not r.ok
    assert r.failed_counter == "q" and r.used == 90
    assert await store.counters(["b", "q", "c"]) == {"b": 0, "q": 90, "c": 0}


async def test_zero_amount_never_blocks(store: Store) -> None:
    assert (await store.reserve(res(Hold("b", 100, 100)))).ok
    r = await store.reserve(res(Hold("b", 0, 100), Hold("r", 1, 10)))
    assert r.ok
    assert await store.counters(["b", "r"]) == {"b": 100, "r": 1}
    # Even a counter settled above its limit does not block a zero-amount hold.
    over = res(Hold("o", 5, 10))
    assert (await store.reserve(over)).ok
    assert await store.settle(over.reservation_id, {"o": 50}, entry(cost=50))
    assert (await store.reserve(res(Hold("o", 0, 10)))).ok
    assert not (await store.reserve(res(Hold("o", 1, 10)))).ok


async def test_approval_is_consumed_once(store: Store) -> None:
    first = await store.reserve(res(Hold("b", 10, 100), approval="a1"))
    assert first.ok and not first.approval_used
    again = await store.reserve(res(Hold("b", 10, 100), approval="a1"))
    assert not again.ok and again.approval_used
    assert await store.counters(["b"]) == {"b": 10}
    assert (await store.reserve(res(Hold("b", 10, 100), approval="a2"))).ok


async def test_failed_reserve_does_not_consume_the_approval(store: Store) -> None:
    assert (await store.reserve(res(Hold("b", 95, 100)))).ok
    r = await store.reserve(res(Hold("b", 10, 100), approval="a1"))
    assert not r.ok and not r.approval_used and r.failed_counter == "b"
    assert (await store.reserve(res(Hold("b", 5, 100), approval="a1"))).ok


async def test_reserve_refuses_a_revoked_token(opener: Opener) -> None:
    # The reservation checks the revocation in its own atomic step: a token revoked by another
    # relay after this one last looked reserves nothing, whatever its holds or approval.
    a, b = opener(), opener()
    try:
        first = res(Hold("b", 10, 100), token="tok")
        assert (await a.reserve(first)).ok
        await b.revoke("tok", NOW)
        for holds, approval in (((Hold("b", 10, 100), Hold("rate", 1, 10)), None),
                                ((Hold("b", 10, 100),), "a1"),
                                ((Hold("b", 500, 100),), None),  # would not fit either
                                ((), None)):
            r = await a.reserve(res(*holds, token="tok", approval=approval))
            assert not r.ok, f"a revoked token reserved {holds}"
            assert (r.revoked, r.approval_used, r.failed_counter) == (True, False, None), (
                holds, approval)
        assert await a.counters(["b", "rate"]) == {"b": 10, "rate": 0}
        # Nothing was reserved: only the first reservation is open.
        assert await a.expire_leases(NOW + 10**6) == 1
        assert await a.counters(["b"]) == {"b": 10}
        # Another token's reservations are its own.
        ok = await a.reserve(res(Hold("b2", 1, 10), token="other"))
        assert ok.ok and not ok.revoked
    finally:
        await a.close()
        await b.close()


async def test_concurrent_reserves_never_exceed_the_limit(opener: Opener) -> None:
    handles = [opener() for _ in range(3)]
    try:
        holds = (Hold("budget", 7, 7 * 37), Hold("rate", 1, 1000))
        results = await asyncio.gather(
            *(handles[i % 3].reserve(res(*holds)) for i in range(120))
        )
        assert sum(r.ok for r in results) == 37
        assert await handles[0].counters(["budget", "rate"]) == {"budget": 259, "rate": 37}
    finally:
        for h in handles:
            await h.close()


# -- settle / release / leases ------------------------------------------------------------------

async def test_a_settled_row_is_indexed_by_its_token_and_time(store: Store) -> None:
    # The settle appends the row and indexes it by its token and time (Redis's settle script
    # reads both from the row it is given): the reads by token and by time find it.
    for token, time, cost in (("t1", NOW + 5, 1), ("t2", NOW + 9, 2), ("t1", NOW + 12, 3)):
        r = res(Hold(f"b/{token}", 10, 100), token=token)
        assert (await store.reserve(r)).ok
        assert await store.settle(r.reservation_id, {f"b/{token}": cost},
                                  entry(cost=cost, token=token, time=time))
    assert [e.cost for e in await store.ledger(token_ids=["t1"])] == [3, 1]
    assert [e.cost for e in await store.ledger(token_ids=["t2"])] == [2]
    assert [e.cost for e in await store.ledger(since=NOW + 9)] == [3, 2]
    assert [(e.token_id, e.time) for e in await store.ledger(token_ids=["t1"],
                                                              since=NOW + 6)] == [("t1", NOW + 12)]


async def test_settle_moves_reserved_to_actual_once(store: Store) -> None:
    r = res(Hold("b", 50, 100), Hold("q", 1000, 5000))
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {"b": 12, "q": 300}, entry(cost=12))
    assert await store.counters(["b", "q"]) == {"b": 12, "q": 300}
    # A second settle or a release of the same id changes nothing.
    assert not await store.settle(r.reservation_id, {"b": 40, "q": 10}, entry(cost=40))
    assert not await store.release(r.reservation_id, entry("upstream_error"))
    assert await store.counters(["b", "q"]) == {"b": 12, "q": 300}
    rows = await store.ledger()
    assert len(rows) == 1
    assert rows[0].cost == 12 and rows[0].status == "ok"
    assert rows[0].reservation_id == r.reservation_id


async def test_settle_missing_keys_charge_zero(store: Store) -> None:
    r = res(Hold("b", 50, 100), Hold("rate", 1, 10))
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {"b": 20}, entry(cost=20))
    assert await store.counters(["b", "rate"]) == {"b": 20, "rate": 0}


async def test_settle_can_charge_more_than_reserved(store: Store) -> None:
    r = res(Hold("b", 10, 100))
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {"b": 15}, entry(cost=15))
    assert await store.counters(["b"]) == {"b": 15}


async def test_release_charges_nothing(store: Store) -> None:
    r = res(Hold("b", 50, 100), Hold("rate", 1, 10))
    assert (await store.reserve(r)).ok
    assert await store.release(r.reservation_id, entry("upstream_error"))
    assert await store.counters(["b", "rate"]) == {"b": 0, "rate": 0}
    assert not await store.settle(r.reservation_id, {"b": 50}, entry())
    assert [e.status for e in await store.ledger()] == ["upstream_error"]


async def test_settle_of_unknown_reservation_is_false(store: Store) -> None:
    assert not await store.settle(rid(), {"b": 1}, entry())
    assert await store.ledger() == []


async def test_expire_leases_charges_the_reserved_amount(store: Store) -> None:
    meta = {"app": "https://app.example", "provider": "openai", "model": "gpt-x",
            "operation": "chat", "input_tokens": 100, "output_tokens": 400, "cost": 30,
            "currency": "EUR"}
    stale = res(Hold("b", 30, 100), Hold("rate", 1, 10), lease=NOW + 10, meta=meta,
                token="tok-a")
    # Same token: a counter key is derived from its token id, so it never spans two tokens.
    live = res(Hold("b", 20, 100), lease=NOW + 1000, token="tok-a")
    assert (await store.reserve(stale)).ok
    assert (await store.reserve(live)).ok
    assert await store.expire_leases(NOW + 5) == 0
    assert await store.expire_leases(NOW + 11) == 1
    assert await store.counters(["b", "rate"]) == {"b": 50, "rate": 1}
    [row] = await store.ledger()
    assert row.status == "lease_expired"
    assert (row.token_id, row.app, row.provider, row.model) == (
        "tok-a", "https://app.example", "openai", "gpt-x")
    assert (row.cost, row.currency, row.input_tokens, row.output_tokens) == (30, "EUR", 100, 400)
    assert row.reservation_id == stale.reservation_id
    # The expired reservation is closed: a late settle changes nothing.
    assert not await store.settle(stale.reservation_id, {"b": 1}, entry())
    assert await store.expire_leases(NOW + 11) == 0
    # The live one still settles normally.
    assert await store.settle(live.reservation_id, {"b": 5}, entry(cost=5, token="tok-a"))
    assert await store.counters(["b"]) == {"b": 35}


async def test_duplicate_reservation_id_is_refused(store: Store) -> None:
    r = res(Hold("b", 5, 100))
    assert (await store.reserve(r)).ok
    with pytest.raises(ValueError, match="already exists"):
        await store.reserve(res(Hold("b", 5, 100), reservation_id=r.reservation_id))
    assert await store.counters(["b"]) == {"b": 5}


async def test_counters_equal_ledger_after_many_settles(store: Store) -> None:
    rs = [res(Hold("b", 10, 10_000)) for _ in range(30)]
    await asyncio.gather(*(store.reserve(r) for r in rs))
    await asyncio.gather(*(
        store.settle(r.reservation_id, {"b": i}, entry(cost=i)) for i, r in enumerate(rs)
    ))
    total = sum(e.cost for e in await store.ledger())
    assert total == sum(range(30)) == (await store.counters(["b"]))["b"]


# -- settle_soon: a settle nobody waits for ----------------------------------------------------

class Told:
    """What a queued settle reports (capwallet.store.Outcome), kept for the test to read."""

    def __init__(self) -> None:
        self.outcome: list[object] = []  # [result] or [exception], once

    def done(self) -> bool:
        return bool(self.outcome)

    def set_result(self, result: object, /) -> None:
        assert not self.outcome, "told twice"
        self.outcome.append(result)

    def set_exception(self, exception: BaseException, /) -> None:
        assert not self.outcome, "told twice"
        self.outcome.append(exception)


async def test_settle_soon_is_written_before_close_returns(opener: Opener) -> None:
    # Queued, then the store closed at once: close waits for the queued settles, which
    # commit exactly, and each is told.
    a = opener()
    rs = [res(Hold("b", 50, 1000), Hold("rate", 1, 10)) for _ in range(3)]
    for r in rs:
        assert (await a.reserve(r)).ok
    told = [Told() for _ in range(3)]
    a.settle_soon(rs[0].reservation_id, {"b": 12, "rate": 1}, entry(cost=12), told[0])
    a.settle_soon(rs[1].reservation_id, {}, entry("upstream_error"), told[1])  # a release
    a.settle_soon(rs[2].reservation_id, {"b": 7, "rate": 1}, entry(cost=7), told[2])
    assert not any(t.done() for t in told)  # queued, not written in the caller's step
    await a.close()
    assert [t.outcome for t in told] == [[True], [True], [True]]
    b = opener()
    try:
        assert await b.counters(["b", "rate"]) == {"b": 19, "rate": 2}
        assert sorted((e.status, e.cost) for e in await b.ledger()) == [
            ("ok", 7), ("ok", 12), ("upstream_error", 0)]
    finally:
        await b.close()


async def test_drain_waits_for_settle_soon_and_concurrent_writes_stay_exact(
        store: Store) -> None:
    rs = [res(Hold("b", 10, 10_000)) for _ in range(30)]
    await asyncio.gather(*(store.reserve(r) for r in rs[:15]))
    told = [Told() for _ in rs]
    # Queued settles interleaved with awaited reserves of the same counter, in one loop turn.
    for i, r in enumerate(rs[:15]):
        store.settle_soon(r.reservation_id, {"b": i}, entry(cost=i), told[i])
    await asyncio.gather(*(store.reserve(r) for r in rs[15:]))
    for i, r in enumerate(rs[15:], 15):
        store.settle_soon(r.reservation_id, {"b": i}, entry(cost=i), told[i])
    await store.drain()
    assert all(t.outcome == [True] for t in told)
    total = sum(e.cost for e in await store.ledger())
    assert total == sum(range(30)) == (await store.counters(["b"]))["b"]
    # A reservation is closed once: a queued settle of a settled one changes nothing.
    again = Told()
    store.settle_soon(rs[3].reservation_id, {"b": 500}, entry(cost=500), again)
    await store.drain()
    assert again.outcome == [False]
    assert len(await store.ledger()) == 30 and (await store.counters(["b"]))["b"] == total


async def test_settle_soon_on_a_closed_store_tells_the_failure(opener: Opener) -> None:
    s = opener()
    r = res(Hold("b", 5, 10))
    assert (await s.reserve(r)).ok
    await s.close()
    told = Told()
    s.settle_soon(r.reservation_id, {"b": 1}, entry(cost=1), told)  # does not raise
    await s.drain()
    [failure] = told.outcome
    assert isinstance(failure, StoreUnavailable)
    b = opener()
    try:  # still reserved at the worst case: its lease will charge that
        assert await b.counters(["b"]) == {"b": 5}
        assert await b.ledger() == []
    finally:
        await b.close()


# -- revocation -------------------------------------------------------------------------------

async def test_revocation_is_shared_and_idempotent(opener: Opener) -> None:
    a, b = opener(), opener()
    try:
        assert not await a.is_revoked("tok")
        await a.revoke("tok", NOW)
        await a.revoke("tok", NOW + 5)
        assert await a.is_revoked("tok")
        assert await b.is_revoked("tok")
        assert not await b.is_revoked("other")
    finally:
        await a.close()
        await b.close()


# -- snapshot ---------------------------------------------------------------------------------

async def test_snapshot_reads_revocation_and_counters_at_once(store: Store) -> None:
    assert (await store.reserve(res(Hold("b", 30, 100), Hold("rate", 1, 10), token="t1"))).ok
    snap = await store.snapshot("t1", ["b", "rate", "absent", "b"])
    assert snap == Snapshot(False, {"b": 30, "rate": 1, "absent": 0})
    assert snap.counters == await store.counters(["b", "rate", "absent"])
    assert await store.snapshot("t1", []) == Snapshot(False, {})
    await store.revoke("t1", NOW)
    assert await store.snapshot("t1", ["b"]) == Snapshot(True, {"b": 30})
    assert await store.snapshot("t1", []) == (True, {})
    # Another token's revocation is its own.
    assert not (await store.snapshot("t2", ["b2"])).revoked


async def test_snapshot_follows_settles_and_other_handles(opener: Opener) -> None:
    a, b = opener(), opener()
    try:
        r = res(Hold("b", 50, 100), token="tok")
        assert (await a.reserve(r)).ok
        assert await b.snapshot("tok", ["b"]) == Snapshot(False, {"b": 50})
        assert await a.settle(r.reservation_id, {"b": 20}, entry(cost=20, token="tok"))
        assert await b.snapshot("tok", ["b"]) == Snapshot(False, {"b": 20})
        await b.revoke("tok", NOW)
        assert (await a.snapshot("tok", ["b"])).revoked
    finally:
        await a.close()
        await b.close()


# -- ledger -----------------------------------------------------------------------------------

async def test_append_ledger_writes_one_row_and_charges_nothing(store: Store) -> None:
    r = res(Hold("b", 10, 100), token="t1")
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {"b": 10}, entry(cost=10, token="t1", time=NOW))
    denied = LedgerEntry(
        time=NOW + 1, token_id="t1", app="app", provider="p", model="m2", operation="chat",
        input_tokens=0, output_tokens=0, cost=0, currency="USD",
        status="denied:budget_exceeded", latency_ms=0,
    )
    await store.append_ledger(denied)
    await store.append_ledger(LedgerEntry(
        time=NOW + 2, token_id="t2", app="", provider="p", model="m3", operation="chat",
        input_tokens=0, output_tokens=0, cost=0, currency="USD", status="denied:revoked",
        latency_ms=0))
    rows = await store.ledger()
    assert [e.model for e in rows] == ["m3", "m2", "m"]
    assert rows[1] == denied  # every field kept, and no reservation named
    assert [e.status for e in await store.ledger(token_ids=["t1"])] == [
        "denied:budget_exceeded", "ok"]
    assert await store.counters(["b"]) == {"b": 10}


async def test_a_revoked_tokens_refusals_are_written(store: Store) -> None:
    """The rows a user reads to see that a revocation holds: append_ledger writes a revoked
    token's refusal (and compacts the next of the same minute into it) as any other."""
    await store.revoke("t1", NOW)
    refusal = dataclasses.replace(entry(status="denied:revoked", time=NOW + 1), input_tokens=0,
                                  output_tokens=0)
    await store.append_ledger(refusal)
    await store.append_ledger(dataclasses.replace(refusal, time=NOW + 2))
    rows = await store.ledger(token_ids=["t1"])
    assert [(e.status, e.count, e.reservation_id) for e in rows] == [("denied:revoked", 2, None)]


def test_every_store_writes_refusal_rows_itself() -> None:
    """append_ledger has no default built on reserve and release (which would drop a revoked
    token's refusals and name a reservation the call never had): a backend must write them."""
    assert "append_ledger" in Store.__abstractmethods__


async def test_concurrent_appends_and_settles_all_land(store: Store) -> None:
    rs = [res(Hold("b", 5, 1000), token="t1") for _ in range(10)]
    assert all(r.ok for r in await asyncio.gather(*(store.reserve(r) for r in rs)))
    await asyncio.gather(
        *(store.settle(r.reservation_id, {"b": 1}, entry(cost=1, token="t1")) for r in rs),
        *(store.append_ledger(entry(status="denied:rate_limited", token="t1"))
          for _ in range(10)),
    )
    rows = await store.ledger(token_ids=["t1"])
    # the ten refusals of one token, reason and minute are one row with a count of 10
    assert sorted((e.status, e.count) for e in rows) == [("denied:rate_limited", 10)] + [
        ("ok", 1)] * 10
    assert (await store.counters(["b"]))["b"] == 10 == sum(e.cost for e in rows)


async def test_ledger_filters_newest_first(store: Store) -> None:
    for i, tok in enumerate(["t1", "t2", "t1", "t3", "t1"]):
        r = res(Hold("b", 1, 100), token=tok)
        assert (await store.reserve(r)).ok
        assert await store.settle(r.reservation_id, {"b": 1},
                                  entry(token=tok, time=NOW + i, model=f"m{i}", cost=1))
    assert [e.model for e in await store.ledger()] == ["m4", "m3", "m2", "m1", "m0"]
    assert [e.model for e in await store.ledger(token_ids=["t1"])] == ["m4", "m2", "m0"]
    assert [e.model for e in await store.ledger(token_ids=["t1", "t3"], since=NOW + 2)] == [
        "m4", "m3", "m2"]
    assert [e.model for e in await store.ledger(limit=2)] == ["m4", "m3"]
    assert await store.ledger(token_ids=[]) == []


async def test_ledger_keeps_bodies_when_given(store: Store) -> None:
    r = res(Hold("b", 1, 100))
    assert (await store.reserve(r)).ok
    e = LedgerEntry(
        time=NOW, token_id="t1", app="", provider="p", model="m", operation="chat",
        input_tokens=1, output_tokens=2, cost=1, currency="USD", status="ok", latency_ms=3,
        request_body='{"q": "é"}', response_body="answer",
    )
    assert await store.settle(r.reservation_id, {"b": 1}, e)
    [row] = await store.ledger()
    assert row.request_body == '{"q": "é"}' and row.response_body == "answer"
    assert row.latency_ms == 3 and row.currency == "USD"


# -- pending approvals --------------------------------------------------------------------------

def pending(pid: str, created: int = NOW, expires: int = NOW + 300) -> PendingApproval:
    return PendingApproval(
        approval_request_id=pid, token_id="t1", digest="ab" * 32, summary=f"approve {pid}?",
        created_at=created, expires_at=expires,
    )


async def test_pending_approvals_lifecycle(store: Store) -> None:
    await store.add_pending(pending("p1", created=NOW))
    await store.add_pending(pending("p2", created=NOW + 1))
    await store.add_pending(pending("p3", created=NOW + 2, expires=NOW + 10))
    assert await store.get_pending("nope") is None
    got = await store.get_pending("p1")
    assert got == pending("p1")
    assert [p.approval_request_id for p in await store.list_pending(NOW + 5)] == [
        "p1", "p2", "p3"]
    assert [p.approval_request_id for p in await store.list_pending(NOW + 20)] == ["p1", "p2"]
    assert await store.resolve_pending("p1", "approved", "cwa1_xyz")
    assert not await store.resolve_pending("p1", "denied", None)
    assert not await store.resolve_pending("nope", "denied", None)
    p1 = await store.get_pending("p1")
    assert p1 is not None and p1.status == "approved" and p1.approval == "cwa1_xyz"
    assert await store.resolve_pending("p2", "denied", None)
    assert await store.list_pending(NOW + 5) == [pending("p3", NOW + 2, NOW + 10)]


async def test_pending_approval_keeps_its_kind(store: Store) -> None:
    """The kind decides what approval the wallet issues (spec/approvals.md#kinds)."""
    await store.add_pending(dataclasses.replace(pending("p1"), kind="resource_access"))
    await store.add_pending(pending("p2", created=NOW + 1))
    got = await store.get_pending("p1")
    assert got is not None and got.kind == "resource_access"
    assert [p.kind for p in await store.list_pending(NOW + 5)] == ["resource_access",
                                                                    "model_call"]


async def test_resolve_pending_rejects_unknown_status(store: Store) -> None:
    await store.add_pending(pending("p1"))
    with pytest.raises(ValueError):
        await store.resolve_pending("p1", "pending", None)


# -- lifecycle --------------------------------------------------------------------------------

async def test_state_survives_reopening(opener: Opener) -> None:
    a = opener()
    r = res(Hold("b", 9, 100))
    assert (await a.reserve(r)).ok
    await a.revoke("tok", NOW)
    await a.close()
    b = opener()
    try:
        assert await b.counters(["b"]) == {"b": 9}
        assert await b.is_revoked("tok")
        assert await b.settle(r.reservation_id, {"b": 3}, entry(cost=3))
    finally:
        await b.close()


async def test_closed_store_is_unavailable(opener: Opener) -> None:
    s = opener()
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StoreUnavailable):
        await s.reserve(res(Hold("b", 1, 10)))
    with pytest.raises(StoreUnavailable):
        await s.is_revoked("tok")


# -- usage aggregates, compacted refusals, retention (issue 13 F5) ---------------------------

async def _settled(store: Store, token: str, cost: int, time: int, model: str = "m") -> None:
    r = res(Hold("b-" + token, cost, 10**12), token=token)
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {"b-" + token: cost},
                              entry(cost=cost, token=token, time=time, model=model))


def _refusal(token: str, time: int, status: str = "denied:model_not_allowed") -> LedgerEntry:
    return LedgerEntry(time=time, token_id=token, app="attacker", provider="p", model="m",
                       operation="chat", input_tokens=0, output_tokens=0, cost=0,
                       currency="USD", status=status, latency_ms=0)


async def test_usage_aggregates_follow_every_settled_call(store: Store) -> None:
    day = NOW // 86400
    await _settled(store, "victim", 7, NOW)
    await _settled(store, "victim", 5, NOW + 10)
    await _settled(store, "victim", 3, NOW + 86400, model="m2")
    meta = {"app": "app", "provider": "p", "model": "m", "operation": "chat",
            "input_tokens": 10, "output_tokens": 20, "cost": 9, "currency": "EUR"}
    r = res(Hold("b-victim", 9, 10**12), token="victim", lease=NOW - 1, meta=meta)
    assert (await store.reserve(r)).ok
    assert await store.expire_leases(NOW) == 1  # an expired lease counts, at its worst case
    r2 = res(Hold("b-victim", 4, 10**12), token="victim")
    assert (await store.reserve(r2)).ok
    assert await store.release(r2.reservation_id, entry(status="upstream_error", token="victim"))
    await store.append_ledger(_refusal("victim", NOW))  # a refusal is not usage
    got = sorted(await store.usage(), key=lambda u: u.day)
    assert got == [
        UsageTotal(day, "victim", "app", "p", "m", "EUR", 7 + 5 + 9, 4, 40, 80),
        UsageTotal(day + 1, "victim", "app", "p", "m2", "EUR", 3, 1, 10, 20),
    ]
    assert await store.usage(since_day=day + 1) == [got[1]]
    assert await store.usage(token_ids=["nobody"]) == []
    assert sorted(await store.usage(token_ids=["victim"]), key=lambda u: u.day) == got


async def test_refusals_are_compacted_and_cannot_evict_usage(store: Store) -> None:
    """20,000 refusals (issue 13 F5's flood) leave the victim's spend and calls intact, and
    take one ledger row per token, reason and minute."""
    await _settled(store, "victim", 42, NOW)
    for i in range(0, 20_000, 40):  # 40 at a time: within a cluster client's connections
        await asyncio.gather(*(store.append_ledger(_refusal("attacker", NOW + (i + j) // 100))
                               for j in range(40)))
    rows = await store.ledger(token_ids=["attacker"], limit=100_000)
    assert sum(e.count for e in rows) == 20_000
    assert len(rows) <= 20_000 // 100 // 60 + 2  # one row per minute the flood lasted
    assert all(e.refused for e in rows)
    victim = await store.usage(token_ids=["victim"])
    assert [(u.cost, u.calls) for u in victim] == [(42, 1)]
    assert [e.cost for e in await store.ledger(token_ids=["victim"])] == [42]


async def test_prune_ledger_keeps_usage_and_counters(store: Store) -> None:
    await _settled(store, "t1", 5, NOW - 100 * 86400)
    await _settled(store, "t1", 6, NOW)
    await store.append_ledger(_refusal("t1", NOW - 100 * 86400))
    assert await store.prune_ledger(NOW - 90 * 86400) == 2
    assert [e.cost for e in await store.ledger()] == [6]
    assert sorted(u.cost for u in await store.usage()) == [5, 6]
    assert await store.counters(["b-t1"]) == {"b-t1": 11}
    assert await store.prune_ledger(NOW - 90 * 86400) == 0


# -- chains (sub-task tokens) -------------------------------------------------------------------

async def test_every_ledger_row_keeps_its_chain(store: Store) -> None:
    """Settled, released, refused and lease-expired rows each name the chain that made them,
    so a sub-task's calls can be told from its parent's (same token id)."""
    parent, child = "a1" * 8, "b2" * 8
    r = res(Hold("b", 10, 100), token="t1")
    assert (await store.reserve(r)).ok
    await store.settle(r.reservation_id, {"b": 4},
                       dataclasses.replace(entry(cost=4), chain_id=parent))
    r2 = res(Hold("b", 10, 100), token="t1")
    assert (await store.reserve(r2)).ok
    await store.release(r2.reservation_id, dataclasses.replace(entry(time=NOW + 1),
                                                               chain_id=child))
    await store.append_ledger(dataclasses.replace(_refusal("t1", NOW + 2), chain_id=child))
    stale = res(Hold("b", 7, 100), token="t1", lease=NOW + 3,
                meta={"provider": "p", "model": "m", "currency": "EUR", "cost": 7,
                      "chain_id": child})
    assert (await store.reserve(stale)).ok
    assert await store.expire_leases(NOW + 4) == 1
    rows = await store.ledger(token_ids=["t1"])
    assert [(e.status, e.chain_id) for e in rows] == [
        ("lease_expired", child), ("denied:model_not_allowed", child), ("ok", child),
        ("ok", parent)]
    await store.append_ledger(entry(time=NOW + 5, token="t2"))  # no chain given: ""
    assert (await store.ledger(token_ids=["t2"]))[0].chain_id == ""


async def test_a_chain_is_recorded_once_and_per_token(opener: Opener) -> None:
    a, b = opener(), opener()  # two relay processes see the same chain
    try:
        first = Chain("t1", "c1" * 8, ("app Blog", "models gpt-4o-mini"), NOW)
        assert await a.note_chain(first)
        again = dataclasses.replace(first, caveats=("other",), first_seen=NOW + 9)
        assert not await b.note_chain(again)  # first write wins
        assert not await a.note_chain(first)
        sub = Chain("t1", "d4" * 8, (*first.caveats, "budget 5 USD total"), NOW + 1)
        assert await b.note_chain(sub)
        assert await a.note_chain(Chain("t2", "e5" * 8, (), NOW))
        assert await a.chains(["t1"]) == [first, sub]  # oldest first
        assert await b.chains(["t2", "t1", "t2"]) == [first, sub, Chain("t2", "e5" * 8, (), NOW)]
        assert await a.chains(["nobody"]) == []
        assert await a.chains([]) == []
    finally:
        await a.close()
        await b.close()


async def test_chains_that_expired_before_a_time_are_pruned(store: Store) -> None:
    """prune_chains deletes the chains whose earliest ``expires`` caveat is before the time
    given (a sub-task's own, or its parent's that it holds), and keeps the rest: a chain
    with no expiry, one that expires at or after the time, other tokens' chains. Before, no
    chain was ever deleted: the wallet's grants all expire, and their chains stayed."""
    root = Chain("t1", "a1" * 8, ("app Blog", f"expires {NOW + 1000}"), NOW)
    sub = Chain("t1", "b2" * 8, (*root.caveats, f"expires {NOW + 100}", "budget 5 USD total"),
                NOW + 1)
    later = Chain("t1", "c3" * 8, (*root.caveats, "models gpt-4o-mini"), NOW + 2)
    forever = Chain("t2", "d4" * 8, ("app Notes",), NOW)
    own = Chain("t3", "e5" * 8, (f"expires {NOW + 50}", f"expires {NOW + 5000}"), NOW)
    for c in (root, sub, later, forever, own):
        assert await store.note_chain(c)
    assert await store.prune_chains(NOW + 100) == 1  # own (NOW + 50); sub's is not before
    assert await store.chains(["t1", "t2", "t3"]) == [root, sub, later, forever]
    assert await store.prune_chains(NOW + 101) == 1  # sub
    assert await store.chains(["t1"]) == [root, later]
    assert await store.prune_chains(NOW + 10**6) == 2  # root and later (root's expiry)
    assert await store.chains(["t1", "t2", "t3"]) == [forever]
    assert await store.prune_chains(NOW + 10**6) == 0
    # a pruned token records chains again, up to MAX_CHAINS
    assert await store.note_chain(root)
    assert await store.chains(["t1"]) == [root]


async def test_a_tokens_counters_are_deleted_when_asked(opener: Opener) -> None:
    """prune_token_counters deletes the counters named, of any period (the wallet's "total"
    ones of a grant expired long ago: capwallet.wallet.expired), and no other: not another
    key of the token, not another token's. Every handle sees them gone, and a counter
    deleted counts from 0 if written again."""
    store, other = opener(), opener()
    try:
        r1 = res(Hold("a1/total", 30, 100), Hold("a2/2026-11", 5, 100, NOW + 600),
                 Hold("a3/total", 7, 100), token="t1")
        r2 = res(Hold("b1/total", 11, 100), token="t2")
        for r in (r1, r2):
            assert (await store.reserve(r)).ok
        assert await store.settle(r1.reservation_id, {"a1/total": 20, "a2/2026-11": 5,
                                                      "a3/total": 7}, entry())
        keys = ["a1/total", "a2/2026-11", "a3/total", "b1/total"]
        assert await other.counters(keys) == {"a1/total": 20, "a2/2026-11": 5, "a3/total": 7,
                                              "b1/total": 11}
        assert await store.prune_token_counters("t1", ["a1/total", "a2/2026-11",
                                                       "a9/total", "a1/total"]) == 2
        want = {"a1/total": 0, "a2/2026-11": 0, "a3/total": 7, "b1/total": 11}
        assert await store.counters(keys) == want
        assert await other.counters(keys) == want
        assert await store.prune_token_counters("t1", ["a1/total"]) == 0
        assert await store.prune_token_counters("t1", []) == 0
        assert (await other.reserve(res(Hold("a1/total", 3, 100), token="t1"))).ok
        assert await store.counters(["a1/total"]) == {"a1/total": 3}
    finally:
        await store.close()
        await other.close()


async def test_a_token_cannot_record_unbounded_chains(store: Store) -> None:
    """Anyone holding a token can mint chains offline: the store keeps MAX_CHAINS of them."""
    done = await asyncio.gather(*(store.note_chain(Chain("flood", f"{i:016x}", ("x",), NOW + i))
                                  for i in range(MAX_CHAINS + 10)))
    assert sum(done) == MAX_CHAINS
    assert len(await store.chains(["flood"])) == MAX_CHAINS
    assert await store.note_chain(Chain("other", "0" * 16, (), NOW))  # others unaffected
