"""The Redis store's request-path connection (capwallet.store.redis_pipe) against a real Redis.

It carries the scripts of every concurrent call on one connection, in one write per event-loop
turn, and matches replies to callers by order: so these tests check what could go wrong with
that: the grouping itself, replies reaching the right caller when some callers are cancelled,
a Redis that stops answering or drops the connection (fail closed, then recover), the URL's
user, password and database, and a store used from one event loop after another.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import redis.asyncio as aioredis
from store_suite import Told

from capwallet.store import Hold, LedgerEntry, Reservation, StoreUnavailable, open_store
from capwallet.store.redis import RedisStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    await r.aclose()


def _command(raw: aioredis.Redis, *args: str) -> Awaitable[Any]:
    """raw.execute_command(*args): redis-py leaves execute_command unannotated."""
    sent: Awaitable[Any] = raw.execute_command(*args)  # type: ignore[no-untyped-call]
    return sent


def _open(url: str, **opts: str) -> RedisStore:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": f"p{secrets.token_hex(6)}",
                                              **opts}.items())
    s = open_store(f"{url}?{query}")
    assert isinstance(s, RedisStore)
    return s


async def _charge(store: RedisStore, token: str, amount: int) -> None:
    r = Reservation(secrets.token_hex(16), token, (Hold(f"k/{token}", amount, 10**9),),
                    lease_until=int(time.time()) + 600)
    assert (await store.reserve(r)).ok


async def _reads(raw: aioredis.Redis) -> int:
    return int((await raw.info("stats"))["total_reads_processed"])


async def test_concurrent_calls_leave_in_one_write(redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url)
    try:
        tokens = [secrets.token_hex(16) for _ in range(40)]
        for i, t in enumerate(tokens):
            await _charge(store, t, i + 1)
        before = await _reads(raw)
        snaps = await asyncio.gather(*(store.snapshot(t, [f"k/{t}"]) for t in tokens))
        reads = await _reads(raw) - before
        # 40 scripts, and Redis read them in about one go (the INFO calls are 2 reads of their
        # own); one command per read would be 40.
        assert reads <= 5, reads
        assert [s.counters[f"k/{t}"] for s, t in zip(snaps, tokens, strict=True)] == [
            i + 1 for i in range(len(tokens))]
    finally:
        await store.close()


async def test_cancelled_callers_do_not_shift_the_replies(redis_url: str) -> None:
    store = _open(redis_url)
    try:
        tokens = [secrets.token_hex(16) for _ in range(30)]
        for i, t in enumerate(tokens):
            await _charge(store, t, 100 + i)
        for when in range(3):  # cancelled before the write, and after it at two depths
            tasks = [asyncio.ensure_future(store.snapshot(t, [f"k/{t}"])) for t in tokens]
            for _ in range(when):
                await asyncio.sleep(0)
            for task in tasks[::3]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, (t, got) in enumerate(zip(tokens, results, strict=True)):
                if isinstance(got, asyncio.CancelledError):
                    continue
                assert not isinstance(got, BaseException), got
                assert got.counters == {f"k/{t}": 100 + i}
            # and what comes next is still answered in order
            after = await asyncio.gather(*(store.snapshot(t, [f"k/{t}"]) for t in tokens))
            assert [s.counters[f"k/{t}"] for s, t in zip(after, tokens, strict=True)] == [
                100 + i for i in range(len(tokens))]
    finally:
        await store.close()


async def test_a_redis_that_stops_answering_fails_closed_then_recovers(
        redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url, timeout="0.5")
    token = secrets.token_hex(16)
    try:
        await _charge(store, token, 7)
        await _command(raw, "CLIENT", "PAUSE", "2500", "ALL")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Timeout"):
                await store.snapshot(token, [f"k/{token}"])
            # the first try and its one retry, each given 0.5 s
            assert time.monotonic() - started < 2.4
        finally:
            await _command(raw, "CLIENT", "UNPAUSE")
        assert (await store.snapshot(token, [f"k/{token}"])).counters == {f"k/{token}": 7}
    finally:
        await store.close()


async def test_a_dropped_connection_is_replaced(redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url)
    token = secrets.token_hex(16)
    try:
        await _charge(store, token, 3)
        killed = await _command(raw, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert int(killed) >= 1
        await asyncio.sleep(0.05)  # the store sees the close before its next call
        assert (await store.snapshot(token, [f"k/{token}"])).counters == {f"k/{token}": 3}
        # a connection killed while calls are out: they retry once on a new one
        calls = [store.snapshot(token, [f"k/{token}"]) for _ in range(10)]
        kill = _command(raw, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        results = await asyncio.gather(*calls, kill, return_exceptions=True)
        for got in results[:-1]:
            assert not isinstance(got, BaseException), got
            assert got.counters == {f"k/{token}": 3}
    finally:
        await store.close()


def _reservation(token: str, amount: int, **meta: object) -> Reservation:
    return Reservation(secrets.token_hex(16), token, (Hold(f"k/{token}", amount, 10**9),),
                       lease_until=int(time.time()) + 600, meta=meta)


def _entry(r: Reservation, cost: int) -> LedgerEntry:
    return LedgerEntry(int(time.time()), r.token_id, "app", "fake", "m", "chat", 1, 1, cost,
                       "USD", "ok", 1, reservation_id=r.reservation_id)


async def _kill_clients(raw: aioredis.Redis) -> None:
    await _command(raw, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


async def test_reserve_and_settle_recover_from_a_script_flush_and_a_dropped_connection(
        redis_url: str, raw: aioredis.Redis) -> None:
    # Reserve and settle send their scripts on the open connection themselves (the store's
    # fast lane) and take the slow path only when one fails: these are its failures.
    store = _open(redis_url)
    token = secrets.token_hex(16)
    key = f"k/{token}"
    try:
        await _charge(store, token, 1)  # the connection is open
        # Redis forgot the scripts (as after a restart): NOSCRIPT, then they are sent again
        first = _reservation(token, 10)
        await raw.script_flush()
        assert (await store.reserve(first)).ok
        await raw.script_flush()
        assert await store.settle(first.reservation_id, {key: 4}, _entry(first, 4))
        assert await store.counters([key]) == {key: 5}
        # the connection killed while reserves, then settles, are out: each is tried once
        # more on a new connection, and every reservation is made and charged exactly once
        rs = [_reservation(token, 10) for _ in range(12)]
        got = await asyncio.gather(*(store.reserve(r) for r in rs), _kill_clients(raw))
        assert all(result is not None and result.ok for result in got[:-1]), got
        assert await store.counters([key]) == {key: 5 + 12 * 10}
        await asyncio.gather(*(store.settle(r.reservation_id, {key: 2}, _entry(r, 2))
                               for r in rs), _kill_clients(raw))
        assert await store.counters([key]) == {key: 5 + 12 * 2}
        rows = await store.ledger(token_ids=[token])
        assert sorted(e.reservation_id or "" for e in rows) == sorted(
            r.reservation_id for r in [first, *rs])
    finally:
        await store.close()


async def test_reserve_and_settle_fail_closed_when_redis_stops_answering(
        redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url, timeout="0.5")
    token = secrets.token_hex(16)
    try:
        await _charge(store, token, 7)  # the connection is open
        r = _reservation(token, 1)
        await _command(raw, "CLIENT", "PAUSE", "2500", "ALL")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Timeout"):
                await store.reserve(r)
            with pytest.raises(StoreUnavailable, match="Timeout"):
                await store.settle(r.reservation_id, {}, _entry(r, 0))
            # each: the first try and its one retry, each given 0.5 s
            assert time.monotonic() - started < 4.8
        finally:
            await _command(raw, "CLIENT", "UNPAUSE")
        assert (await store.reserve(_reservation(token, 1))).ok
    finally:
        await store.close()


async def test_a_reservation_that_cannot_be_encoded_fails_alone(redis_url: str) -> None:
    # A lone surrogate (JSON "\ud800" in a request reads as one) cannot be sent as UTF-8:
    # that call is StoreUnavailable (the relay denies it), and the calls beside it go through.
    store = _open(redis_url)
    token = secrets.token_hex(16)
    try:
        await _charge(store, token, 1)
        bad = _reservation(token, 5, model="\ud800")
        good = [_reservation(token, 5) for _ in range(3)]
        got = await asyncio.gather(store.reserve(bad), *(store.reserve(r) for r in good),
                                   return_exceptions=True)
        assert isinstance(got[0], StoreUnavailable), got[0]
        assert all(not isinstance(x, BaseException) and x.ok for x in got[1:]), got
        assert await store.counters([f"k/{token}"]) == {f"k/{token}": 1 + 3 * 5}
    finally:
        await store.close()


async def test_settle_soon_rides_the_pipe_with_no_task_and_recovers_like_settle(
        redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url)
    token = secrets.token_hex(16)
    key = f"k/{token}"
    try:
        rs = [_reservation(token, 10) for _ in range(30)]
        await asyncio.gather(*(store.reserve(r) for r in rs))
        told = [Told() for _ in rs]
        tasks = len(asyncio.all_tasks())
        for r, t in zip(rs[:10], told[:10], strict=True):
            store.settle_soon(r.reservation_id, {key: 1}, _entry(r, 1), t)
        assert len(asyncio.all_tasks()) == tasks  # no task per settle: the pipe hands over
        await store.drain()
        assert [t.outcome for t in told[:10]] == [[True]] * 10
        # NOSCRIPT (Redis forgot the scripts) and a connection killed while settles are out:
        # each is retried once, as settle does, and charged exactly once
        await raw.script_flush()
        for r, t in zip(rs[10:20], told[10:20], strict=True):
            store.settle_soon(r.reservation_id, {key: 2}, _entry(r, 2), t)
        await store.drain()
        assert [t.outcome for t in told[10:20]] == [[True]] * 10
        for r, t in zip(rs[20:], told[20:], strict=True):
            store.settle_soon(r.reservation_id, {key: 3}, _entry(r, 3), t)
        await _kill_clients(raw)
        await store.drain()
        assert all(t.outcome in ([True], [False]) for t in told[20:]), told
        assert await store.counters([key]) == {key: 10 * 1 + 10 * 2 + 10 * 3}
        assert len(await store.ledger(token_ids=[token])) == 30
        # a settle of a settled reservation changes nothing, and says so
        again = Told()
        store.settle_soon(rs[0].reservation_id, {key: 100}, _entry(rs[0], 100), again)
        await store.drain()
        assert again.outcome == [False]
    finally:
        await store.close()


async def test_settle_soon_fails_closed_when_redis_stops_answering(
        redis_url: str, raw: aioredis.Redis) -> None:
    store = _open(redis_url, timeout="0.5")
    token = secrets.token_hex(16)
    try:
        r = _reservation(token, 9)
        assert (await store.reserve(r)).ok
        told = Told()
        await _command(raw, "CLIENT", "PAUSE", "2500", "ALL")
        try:
            store.settle_soon(r.reservation_id, {f"k/{token}": 1}, _entry(r, 1), told)
            started = time.monotonic()
            await store.drain()
            assert time.monotonic() - started < 2.4  # the first try and its one retry
        finally:
            await _command(raw, "CLIENT", "UNPAUSE")
        [failure] = told.outcome
        assert isinstance(failure, StoreUnavailable) and "Timeout" in str(failure), failure
    finally:
        await store.close()


async def test_the_urls_user_password_and_database_are_used(redis_url: str,
                                                           raw: aioredis.Redis) -> None:
    user, password = f"cw{secrets.token_hex(4)}", secrets.token_hex(8)
    await _command(raw, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                              "+@all")
    base = redis_url.removeprefix("redis://").split("/")[0]
    token = secrets.token_hex(16)
    try:
        store = _open(f"redis://{user}:{password}@{base}/5")
        try:
            await _charge(store, token, 11)
            assert (await store.snapshot(token, [f"k/{token}"])).counters == {
                f"k/{token}": 11}
            clients = await _command(raw, "CLIENT", "LIST")
            text = clients if isinstance(clients, str) else str(clients)
            assert f"user={user}" in text and " db=5 " in text
        finally:
            await store.close()
        db5 = aioredis.Redis.from_url(f"redis://{base}/5", decode_responses=True)
        try:
            assert await db5.keys(f"{{{store.prefix}:*") != []
        finally:
            await db5.aclose()
        assert await raw.keys(f"{{{store.prefix}:*") == []  # nothing in db 0
        wrong = _open(f"redis://{user}:not-{password}@{base}/5")
        try:
            with pytest.raises(StoreUnavailable):
                await wrong.snapshot(token, [f"k/{token}"])
        finally:
            await wrong.close()
    finally:
        await _command(raw, "ACL", "DELUSER", user)


def test_one_store_serves_one_event_loop_after_another(redis_url: str) -> None:
    store = _open(redis_url)
    token = secrets.token_hex(16)
    asyncio.run(_charge(store, token, 5))
    for _ in range(2):  # the first loop's connection closed with it; a new one is opened
        snap = asyncio.run(store.snapshot(token, [f"k/{token}"]))
        assert snap.counters == {f"k/{token}": 5}
    asyncio.run(store.close())


CLOSE_FROM_ANOTHER_THREAD = """
import asyncio, secrets, sys, threading, time
import uvloop
from capwallet.store import open_store
url, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    store = open_store(f"{url}?prefix=t{secrets.token_hex(4)}")
    stop = threading.Event()
    def owner():
        async def main():
            while not stop.is_set():
                try:  # the store's own connection, and redis-py's pooled ones
                    await asyncio.gather(*(store.snapshot(f"{j:032x}", ["k/1"]) for j in range(8)),
                                         store.counters([f"c/{secrets.token_hex(4)}"]))
                except Exception:
                    pass
        uvloop.run(main())
    t = threading.Thread(target=owner)
    t.start()
    time.sleep(0.02)
    if i % 2:  # the owner's loop over and closed, or still running
        stop.set()
        t.join()
    asyncio.run(store.close())
    stop.set()
    t.join(10)
    assert not t.is_alive()
print("survived", rounds)
"""


def test_a_store_closed_from_another_thread_does_not_crash(redis_url: str) -> None:
    # A wallet or relay closes its store from the main thread after (or, when its server
    # thread is slow to stop, while) the server's uvloop loop used it: the store must close its
    # connection on that loop's own thread, never touch the loop's transport from this one.
    proc = subprocess.run([sys.executable, "-c", CLOSE_FROM_ANOTHER_THREAD, redis_url, "30"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "survived 30"
