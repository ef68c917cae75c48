"""Redis-specific store behaviour: URLs, failing closed, counter expiry, key slots, big sweeps.

The shared semantics (all backends) are in tests/store_suite.py; this is what only Redis has.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import example, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot
from redis_server import free_port

from capwallet.store import (
    Chain,
    Hold,
    LedgerEntry,
    Reservation,
    StoreUnavailable,
    open_store,
)
from capwallet.store.redis import (
    COUNTER_MARGIN,
    SWEEP_BATCH,
    RedisStore,
    _dumps,
    _dumps_ascii,
    _Script,
    bucket_of,
)
from capwallet.store.redis_pipe import pack

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = open_store(f"{redis_url}?prefix=r{secrets.token_hex(6)}")
    assert isinstance(s, RedisStore)
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    await r.aclose()


def entry(token: str, cost: int = 1) -> LedgerEntry:
    return LedgerEntry(int(time.time()), token, "app", "p", "m", "chat", 1, 2, cost, "USD", "ok",
                       3)


@pytest.mark.parametrize(("url", "message"), [
    ("redis://", "not a redis URL"),
    ("redis://h:1/0?pool=3", "unknown redis store option"),
    ("redis://h:1/0?timeout=abc", "timeout must be a number"),
    ("redis://h:1/0?timeout=0", "timeout must be in"),
    ("redis://h:1/0?max_connections=0", "max_connections"),
    ("redis://h:1/0?prefix=a{b}", "prefix"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_url_keeps_no_password() -> None:
    s = open_store("redis://user:s3cret@127.0.0.1:6390/2?prefix=x")
    assert isinstance(s, RedisStore)
    assert s.url == "redis://127.0.0.1:6390/2"  # what logs and errors may show
    assert s.prefix == "x"


async def test_unreachable_redis_fails_closed_at_once() -> None:
    s = open_store(f"redis://127.0.0.1:{free_port()}/0?timeout=1")
    try:
        for op in (lambda: s.is_revoked("t"), lambda: s.counters(["k"]),
                   lambda: s.reserve(Reservation(secrets.token_hex(16), "t", (Hold("k", 1, 5),),
                                                 lease_until=2_000_000_000)),
                   lambda: s.expire_leases(int(time.time())), lambda: s.ledger()):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="Redis store failed"):
                await op()
            assert time.monotonic() - started < 3
    finally:
        await s.close()


async def test_counters_expire_after_their_period(store: RedisStore,
                                                  raw: aioredis.Redis) -> None:
    now = int(time.time())
    tag = "{" + store.prefix + ":" + bucket_of("tok") + "}:c:"
    r = Reservation(secrets.token_hex(16), "tok", (Hold("month/x", 5, 100, now + 1000),
                                                   Hold("total/x", 5, 100, None)), now + 60)
    assert (await store.reserve(r)).ok
    ttl = await raw.ttl(tag + "month/x")
    assert 1000 + COUNTER_MARGIN - 5 <= ttl <= 1000 + COUNTER_MARGIN
    assert await raw.ttl(tag + "total/x") == -1  # a "total" budget never expires
    # The index that lets counters(keys) find a counter expires with it.
    assert 0 < await raw.ttl(f"{store.prefix}:ck:month/x") <= 1000 + COUNTER_MARGIN
    assert await store.settle(r.reservation_id, {"month/x": 3, "total/x": 4}, entry("tok"))
    assert await raw.get(tag + "month/x") == "3"
    assert 1000 + COUNTER_MARGIN - 5 <= await raw.ttl(tag + "month/x")


async def test_a_counter_created_again_gets_its_expiry_again(store: RedisStore,
                                                            raw: aioredis.Redis) -> None:
    # A counter that expired between reserve and settle is created again by the settle's
    # refund (at 0) and must expire again; one that holds a value keeps the expiry it has.
    now = int(time.time())
    name = "{" + store.prefix + ":" + bucket_of("tok") + "}:c:month/y"
    r1 = Reservation(secrets.token_hex(16), "tok", (Hold("month/y", 5, 100, now + 1000),), now + 60)
    assert (await store.reserve(r1)).ok
    first = await raw.ttl(name)
    assert 1000 + COUNTER_MARGIN - 5 <= first <= 1000 + COUNTER_MARGIN
    r2 = Reservation(secrets.token_hex(16), "tok", (Hold("month/y", 5, 100, now + 9000),), now + 60)
    assert (await store.reserve(r2)).ok  # a later period end does not move the expiry
    assert await raw.get(name) == "10" and await raw.ttl(name) <= first
    await raw.delete(name)  # as if it expired
    assert await store.settle(r1.reservation_id, {"month/y": 2}, entry("tok"))
    assert await raw.get(name) == "0"
    assert 1000 + COUNTER_MARGIN - 5 <= await raw.ttl(name) <= 1000 + COUNTER_MARGIN


async def test_every_key_of_a_token_shares_one_slot(store: RedisStore,
                                                    raw: aioredis.Redis) -> None:
    tok = secrets.token_hex(16)
    r = Reservation(secrets.token_hex(16), tok, (Hold("a/1", 1, 9, None), Hold("b/1", 1, 9)),
                    lease_until=int(time.time()) + 60, approval_id="ap1")
    assert (await store.reserve(r)).ok
    open_keys = await raw.keys("{" + store.prefix + ":*")
    assert await store.settle(r.reservation_id, {"a/1": 1}, entry(tok))
    await store.revoke(tok, int(time.time()))
    assert await store.note_chain(Chain(tok, "ab" * 8, ("app x",), int(time.time())))
    keys = set(open_keys) | set(await raw.keys("{" + store.prefix + ":*"))
    # counters, reservation, leases, approvals, ledger rows and indexes, revocations, chains
    assert len(keys) >= 10
    assert len({key_slot(k.encode() if isinstance(k, str) else k) for k in keys}) == 1


async def test_one_sweep_closes_more_than_a_batch(store: RedisStore) -> None:
    now = int(time.time())
    n = SWEEP_BATCH + 20
    for i in range(n):
        r = Reservation(f"{i:032x}", "tok", (Hold("k", 2, 10**9, None),), lease_until=now - 1,
                        created_at=now - 5, meta={"cost": 2, "currency": "USD"})
        assert (await store.reserve(r)).ok
    assert await store.expire_leases(now) == n
    assert await store.expire_leases(now) == 0
    rows = await store.ledger(token_ids=["tok"], limit=10 * n)
    assert len(rows) == n and {e.status for e in rows} == {"lease_expired"}
    assert sum(e.cost for e in rows) == (await store.counters(["k"]))["k"] == 2 * n


async def _commands(raw: aioredis.Redis) -> dict[str, int]:
    stats = await raw.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_snapshot_and_append_ledger_are_one_command_each(store: RedisStore,
                                                               raw: aioredis.Redis) -> None:
    tok = secrets.token_hex(16)
    r = Reservation(secrets.token_hex(16), tok, (Hold("a/1", 4, 9), Hold("b/1", 1, 9)),
                    lease_until=int(time.time()) + 60)
    assert (await store.reserve(r)).ok
    await store.snapshot(tok, ["a/1"])  # loads the script once
    await store.append_ledger(entry(tok, cost=0))
    before = await _commands(raw)
    assert await store.snapshot(tok, ["a/1", "b/1", "c/1"]) == (False, {"a/1": 4, "b/1": 1,
                                                                      "c/1": 0})
    await store.append_ledger(entry(tok, cost=0))
    after = await _commands(raw)
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k)}
    # Two scripts; what ran inside them is counted too (one HEXISTS and three GETs in the
    # snapshot), and nothing else was sent (INFO is this test's own).
    assert delta["evalsha"] == 2 and delta["info"] == 1
    assert delta["hexists"] == 1 and delta["get"] == 3 and "mget" not in delta


async def test_snapshot_reads_a_counter_known_to_live_in_another_bucket(
        store: RedisStore) -> None:
    owner, other = "tok-a", next(t for t in (f"tok-{i}" for i in range(100))
                                 if bucket_of(t) != bucket_of("tok-a"))
    r = Reservation(secrets.token_hex(16), owner, (Hold("k/1", 7, 9),),
                    lease_until=int(time.time()) + 60)
    assert (await store.reserve(r)).ok
    await store.revoke(other, int(time.time()))
    assert await store.snapshot(other, ["k/1"]) == (True, {"k/1": 7})


async def test_a_ledger_row_written_before_chains_reads_with_no_chain(
        store: RedisStore, raw: aioredis.Redis) -> None:
    """Rows already in Redis when chains were added (the JSON array without its last field)
    still read, their chain unknown (""), beside new rows that name theirs."""
    tok = secrets.token_hex(16)
    tag = "{" + store.prefix + ":" + bucket_of(tok) + "}:"
    old = json.dumps([1_800_000_000, 5, tok, "app", "p", "m", "chat", 1, 2, 3, "EUR", "ok",
                      None, None, None])
    await raw.hset(tag + "rows", "0000000000000000", old)
    await raw.zadd(tag + "log:" + tok, {"0000000000000000": 1_800_000_000})
    await store.append_ledger(dataclasses.replace(entry(tok), time=1_800_000_001,
                                                  chain_id="cd" * 8))
    rows = await store.ledger(token_ids=[tok])
    assert [(e.time, e.cost, e.chain_id) for e in rows] == [
        (1_800_000_001, rows[0].cost, "cd" * 8), (1_800_000_000, 3, "")]


# Any code point, lone surrogates too (orjson refuses them: the json module writes those).
_text = st.text(st.characters(blacklist_categories=()))
_record = st.lists(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                             _text, st.lists(st.one_of(_text, st.integers()), max_size=4)),
                   max_size=20)


def _sent(record: bytes | str) -> bytes:
    """What leaves for Redis: bytes as they are, a text in UTF-8 (surrogates kept, to compare:
    the command packer refuses them)."""
    return record if isinstance(record, bytes) else record.encode("utf-8", "surrogatepass")


@settings(max_examples=500, deadline=None)
@given(_record)
@example(["\x7f"])  # DEL: ASCII, which json escapes with ensure_ascii and orjson does not
def test_records_are_encoded_as_json_dumps_would(record: list[Any]) -> None:
    # The store encodes its records with orjson (and the json module where orjson refuses or
    # would escape otherwise); what Redis stores (and the ledger rows already there) must stay
    # byte for byte what json.dumps writes.
    assert _sent(_dumps(record)) == _sent(
        json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    assert _sent(_dumps(tuple(record))) == _sent(_dumps(record))
    assert _sent(_dumps_ascii(record)) == _sent(json.dumps(record, separators=(",", ":")))


def test_every_code_point_is_encoded_as_json_dumps_would() -> None:
    # orjson and json agree on every character (escapes of the control characters, quotes,
    # backslashes; everything else as is, in UTF-8): checked one by one, not by chance.
    for start in range(0, 0x110000, 4096):
        text = "".join(chr(c) for c in range(start, start + 4096) if not 0xD800 <= c < 0xE000)
        record = [text, text[:40]]
        assert _sent(_dumps(record)) == json.dumps(
            record, separators=(",", ":"), ensure_ascii=False).encode()
        assert _sent(_dumps_ascii(record)) == json.dumps(record, separators=(",", ":")).encode()
    for c in range(128):  # each ASCII character alone (a record of ASCII only stays orjson's)
        assert _sent(_dumps_ascii([chr(c)])) == json.dumps([chr(c)]).encode(), c


_script = _Script("return 1")
_arg = st.one_of(st.text(), st.binary(), st.integers(-2**63, 2**63 - 1))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["{cw:00}:leases", "{cw:ff}:leases", "{é}:leases", "k"]),
       st.lists(_arg, max_size=70))
def test_a_script_command_is_packed_as_hiredis_packs_it(key: str, args: list[Any]) -> None:
    # The request path's commands keep their first four arguments packed per key; the bytes
    # must be those hiredis packs for the whole command (any number of arguments: past 59
    # it packs the whole command itself), the first time for a key and every time after.
    whole = pack(("EVALSHA", _script.sha, 1, key, *args))
    assert _script.command(key, tuple(args)) == whole
    assert _script.command(key, tuple(args)) == whole


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
async def test_chains_recorded_before_the_expiry_index_are_pruned_too(
        request: pytest.FixtureRequest, cluster: bool) -> None:
    # A chain recorded before note_chain indexed its expiry (1bad818) is only in its token's
    # hash: prune_chains indexes such chains first, once per store (a SCAN for the hashes,
    # every node of a cluster), then prunes them as any other. Seen failing on the old code:
    # the first prune deleted the indexed chain only (1, not 2), and kept the old expired one.
    now = int(time.time())
    base = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    url = f"{base}?{'cluster=1&' if cluster else ''}prefix=o{secrets.token_hex(6)}"
    s = open_store(url)
    assert isinstance(s, RedisStore)

    async def record_old(c: Chain) -> None:  # as a store before the index wrote it
        await s._r.hset(s._chains_key(c.token_id), c.chain_id,
                        json.dumps([c.first_seen, list(c.caveats)]))

    gone = Chain("aa" * 16, "a1" * 8, ("app Blog", f"expires {now + 10}"), now)
    live = Chain("bb" * 16, "b2" * 8, (f"expires {now + 10**6}",), now)
    forever = Chain("cc" * 16, "c3" * 8, ("app Notes",), now)
    sub = Chain("dd" * 16, "d4" * 8, ("app X", f"expires {now + 10**6}",
                                      f"expires {now + 20}"), now)  # its own, earlier
    new = Chain("ee" * 16, "e5" * 8, (f"expires {now + 30}",), now)
    try:
        for c in (gone, live, forever, sub):
            await record_old(c)
        assert await s.note_chain(new)
        assert len({bucket_of(c.token_id) for c in (gone, live, forever, sub, new)}) > 1
        assert await s.prune_chains(now + 100) == 3  # gone, sub and new
        ids = [gone.token_id, live.token_id, forever.token_id, sub.token_id, new.token_id]
        assert await s.chains(ids) == [live, forever]
        assert await s._r.exists(s.prefix + ":chainexp:indexed")
        # Once indexed, a store does not look again (a new handle neither: the marker says
        # so): a chain an older relay records without its expiry from then on is kept.
        late = Chain("ff" * 16, "f6" * 8, (f"expires {now + 10}",), now)
        await record_old(late)
        other = open_store(url)
        try:
            assert await other.prune_chains(now + 100) == 0
            assert await other.chains([late.token_id]) == [late]
        finally:
            await other.close()
        assert await s.prune_chains(now + 10**7) == 1  # live, from the index
        assert await s.chains(ids) == [forever]
    finally:
        await s.close()


async def test_a_failing_scan_of_the_old_chains_is_the_stores_failure(
        redis_url: str, raw: aioredis.Redis) -> None:
    # The one-off SCAN for the chains recorded before their index (_index_old_chains) fails
    # as every other Redis command does: StoreUnavailable, which the relay's sweep catches,
    # and the marker stays unset (the next sweep runs the pass again). Here its user may not
    # SCAN (an ACL); a connection lost mid-scan is the same. Seen failing on 40cc022: the
    # client's own NoPermissionError left prune_chains, and with it the relay's lease sweep
    # task (tests/test_relay_prune.py: expired leases were never closed again).
    user, password = f"ns{secrets.token_hex(4)}", secrets.token_hex(8)
    setuser: Any = raw.execute_command  # redis-py leaves execute_command unannotated
    await setuser("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-scan")
    base = redis_url.removeprefix("redis://").split("/")[0]
    s = open_store(f"redis://{user}:{password}@{base}/0?prefix=n{secrets.token_hex(6)}")
    assert isinstance(s, RedisStore)
    try:
        with pytest.raises(StoreUnavailable, match="Redis store failed: NoPermissionError"):
            await s.prune_chains(int(time.time()))
        assert not await raw.exists(s.prefix + ":chainexp:indexed")
        with pytest.raises(StoreUnavailable):  # tried again, not taken as done
            await s.prune_chains(int(time.time()))
    finally:
        await s.close()
        await setuser("ACL", "DELUSER", user)
