"""The shared store: Redis, so several relay processes enforce one set of budgets exactly.

Why Redis: a company gateway, a hosted wallet or a provider runs many relay processes; they
must see one counter per budget. Redis executes a Lua script atomically, so each of reserve,
settle (or release) and the lease sweep is one script: the limit check and the increments of
all of a token's counters happen together or not at all, an approval id is consumed in the
same script as the reservation it pays for, and settle deletes the reservation in the script
that charges it, so it happens at most once. Nothing is read-modify-written from Python.

URL: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS), options in the query:
``prefix=cw`` (key namespace, so several deployments can share one Redis), ``timeout=2``
(seconds for one command; a Redis that does not answer in time is "unavailable": deny),
``max_connections=16`` (pooled connections per process, per node, for what is not on the
request path; under load a command queues up to POOL_WAIT seconds for a free one: Redis runs
one command at a time, so more connections add overhead, not speed; the request path's
scripts share one more connection of their own, capwallet.store.redis_pipe), ``cluster=1``
(Redis Cluster: the URL names any one node; that client cannot queue for a connection, so it
may open 8 x max_connections per node and fails closed beyond).

Key layout (hash tags in braces; every key one script touches shares one tag, so one slot):

* A token's state lives in one of 256 *buckets*, ``{<prefix>:<bb>}`` with ``bb`` = CRC-32 of
  the token id, low byte, in hex. The bucket, not the token id itself, is the tag, so that the
  lease sweep and the ledger can enumerate every slot in use (256 of them) without an index
  kept outside the scripts; tokens still spread over 256 slots, enough for any cluster size.
  - ``{P:bb}:c:<counter key>``  a counter (integer, settled + reserved). Counter keys are
    derived from the token id (capwallet.limits.counter_id), so a counter has one bucket.
    Expires at its period's end (``resets_at``) plus COUNTER_MARGIN; "total" never expires.
  - ``{P:bb}:r:<reservation id>``  an open reservation (hash: holds, token, created, and the
    ledger row to write if its lease expires).
  - ``{P:bb}:leases``  sorted set reservation id -> lease_until: the sweep reads only what has
    expired (ZRANGEBYSCORE), one script per bucket.
  - ``{P:bb}:approvals``  set of consumed approval ids.
  - ``{P:bb}:revoked``  hash token id -> revoked_at. The reserve script checks it before
    anything else (a revoked token reserves nothing); ``snapshot`` reads it and the token's
    counters with one script in the bucket (one round trip, on a refusal).
  - ``{P:bb}:rows`` (hash seq -> row), ``{P:bb}:log`` (sorted set by time: the bucket's ledger),
    ``{P:bb}:log:<token id>`` (the token's ledger), ``{P:bb}:seq`` (row numbers). A settle
    appends its row in the same script that charges the counters; ``append_ledger`` (a
    refused call's row, no reservation) is one script of its own. ``{P:bb}:count`` (hash
    member -> count) and ``{P:bb}:d:<token>:<minute>:<status>`` (the minute's refusal row,
    expiring after 3 minutes) compact refusals into one row per token, status and minute.
  - ``{P:bb}:agg:cost``, ``:agg:calls``, ``:agg:in``, ``:agg:out``: the usage aggregates,
    hashes keyed by the JSON array [UTC day, token, app, provider, model, currency], added to
    by the same script that appends a settled call's row; ``prune_ledger`` never touches them.
  - ``{P:bb}:chains:<token id>``  hash chain id -> JSON [first_seen, [caveat text, ...]]: the
    token chains seen (``note_chain``, at most MAX_CHAINS per token), and ``{P:bb}:chainexp``
    sorted set '<token id> <chain id>' -> the chain's expiry (chains that have one), from
    which ``prune_chains`` deletes the chains that expired long ago (the chains recorded
    before the index existed are added to it once, ``<prefix>:chainexp:indexed`` saying so).
  A ledger row is the JSON array of the entry's fields, the chain id last (rows written
  before it existed have none: read as "").
* ``<prefix>:ck:<counter key>`` -> bucket: lets ``counters(keys)``, which is not told the token,
  find a counter's bucket. Written before the reserve that may create the counter, with the
  same expiry; a process also remembers the mapping (it never changes).
* Pending approvals are few and not on the request path: ``{P:pending}:p:<id>`` (hash, kept
  PENDING_KEEP seconds after it expires) and ``{P:pending}:open`` (sorted set by created_at).

Settle and release find the reservation's bucket from the token id in the ledger entry (the
relay always passes the reservation's own token id) or from the process that reserved it.

Ledger order: newest first by time; rows with the same time come in the order their bucket
wrote them (per bucket sequence), buckets tied by time in bucket order.

Durability: Redis must persist (``appendonly yes``; ``appendfsync everysec`` loses at most a
second of debits on power loss, ``always`` none). A Redis restarted empty forgets spending.

Failures: any Redis error or timeout raises StoreUnavailable (the relay answers 503 and
forwards nothing). After a connection error the command is retried once on another
connection; pooled connections the server closed are reconnected when next used, and the
request path's connection is reopened, so a restarted Redis is picked up by the next request.
Retrying a reserve whose reply was lost is safe: the script refuses a duplicate reservation id
before anything else, and on a retry that answer means the first attempt landed.
``append_ledger`` is not retried (its row may have landed; a lost reply loses that row rather
than doubling it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from capwallet.store import redis_scripts as lua
from capwallet.store.base import (
    MAX_CHAINS,
    Chain,
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
from capwallet.store.redis_pipe import Endpoint, Pipe, pack

T = TypeVar("T")
BUCKETS = 256
COUNTER_MARGIN = lua.COUNTER_MARGIN  # a counter outlives its period by this (late settles)
PENDING_KEEP = 7 * 86400  # a pending approval record outlives its expiry by this
MAX_EXACT = 2**53 - 1  # Lua numbers are doubles: larger amounts are refused before Lua
SWEEP_BATCH = 500
POOL_WAIT = 10.0  # seconds a command may queue for a free connection under load
CACHE_SIZE = 65536
_OK = ReserveResult(True)
_REVOKED = ReserveResult(False, revoked=True)
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

Client = aioredis.Redis | RedisCluster


def bucket_of(token_id: str) -> str:
    """The token's bucket: low byte of CRC-32 of its id, two hex digits (stable everywhere)."""
    return f"{zlib.crc32(token_id.encode()) & 0xFF:02x}"


def _exact(n: int, what: str) -> int:
    if n.__class__ is int:  # the common case, checked first (a dozen times per call)
        return n
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValueError(f"{what} must be an integer")
    return n


def _json_encoder(*, ensure_ascii: bool) -> Callable[[Any], str]:
    """json.dumps(o, separators=(",", ":"), ensure_ascii=...), the same text, with the C
    encoder built once (json.dumps builds a JSONEncoder and a C encoder on every call). Without
    the C accelerator (not CPython) it is JSONEncoder.encode. What ``_dumps`` falls back to."""
    std = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii)
    make = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
    if make is None:  # pragma: no cover - CPython has it
        return std.encode
    strings = (json.encoder.encode_basestring_ascii if ensure_ascii
               else json.encoder.encode_basestring)
    encode = make(None, std.default, strings, None, ":", ",", False, False, True)

    def dumps(o: Any) -> str:
        return "".join(encode(o, 0))

    return dumps


_json_dumps = _json_encoder(ensure_ascii=False)
_json_dumps_ascii = _json_encoder(ensure_ascii=True)


def _dumps(o: Any) -> bytes | str:
    """A JSON record the scripts read with cjson (the ledger row, the lease-expired row): the
    bytes of json.dumps(o, separators=(",", ":"), ensure_ascii=False) in UTF-8, as they were
    always stored, written by orjson.

    Why orjson: the store writes three records per relayed call, and on Redis the client's CPU
    is the store's cost: orjson writes a ledger row in about a tenth of the json module's time
    (0.3 against 3-4 us), and gives the very same bytes for what a record holds, strings (every
    code point: orjson and json escape the same characters the same way), integers and None
    (tests/test_store_redis.py checks it against json.dumps). Where orjson refuses (an
    integer beyond 64 bits, a lone surrogate) the json module writes the record as before (a
    text the command packer then encodes, or refuses as it always did)."""
    try:
        return orjson.dumps(o)
    except TypeError:  # orjson.JSONEncodeError
        return _json_dumps(o)


def _dumps_ascii(o: Any) -> bytes | str:
    """``_dumps`` with json.dumps's default ensure_ascii=True (the holds record): orjson's
    bytes where they are ASCII but DEL (then the same as json's), else the json module's
    text. (json escapes DEL, 0x7f, with ensure_ascii; orjson writes it as it is.)"""
    try:
        out = orjson.dumps(o)
    except TypeError:  # orjson.JSONEncodeError
        return _json_dumps_ascii(o)
    # find, not `in`: `in` tries b"\x7f" as an integer first, raising and dropping a
    # TypeError (2.8 K instructions against 1.75 K; reference_relay.metering says more).
    return out if out.isascii() and out.find(b"\x7f") < 0 else _json_dumps_ascii(o)


def _row_tail(values: Sequence[Any]) -> bytes | str:
    """A ledger row without time and latency (which Lua prefixes when the lease expires): the
    JSON array of the other fields, less its leading '['."""
    return _dumps(values)[1:]


def _row(entry: LedgerEntry, reservation_id: str | None) -> bytes | str:
    """A ledger row as stored: the JSON array of its fields, time and latency first."""
    return _dumps((
        _exact(entry.time, "time"), entry.latency_ms, entry.token_id, entry.app, entry.provider,
        entry.model, entry.operation, entry.input_tokens, entry.output_tokens, entry.cost,
        entry.currency, entry.status, reservation_id, entry.request_body, entry.response_body,
        entry.chain_id,
    ))


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    """HGETALL's flat [field, value, ...] as {field: int}."""
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _glob(text: str) -> str:
    """``text`` matched literally in a SCAN pattern (its glob characters escaped)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _entry(row: str, count: int = 1) -> LedgerEntry:
    r = json.loads(row)
    return LedgerEntry(
        time=r[0], latency_ms=r[1], token_id=r[2], app=r[3], provider=r[4], model=r[5],
        operation=r[6], input_tokens=r[7], output_tokens=r[8], cost=r[9], currency=r[10],
        status=r[11], reservation_id=r[12], request_body=r[13], response_body=r[14],
        chain_id=r[15] if len(r) > 15 else "", count=count,
    )


def _close_pipe(pipe: Pipe) -> None:
    """Close ``pipe`` from whatever thread: its transport belongs to its loop, and touching a
    loop's transport from another thread while that loop runs is undefined (uvloop's libuv is
    not thread-safe: a relay or wallet closing its store from the main thread while the server
    thread still runs must not crash the process)."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if pipe.loop is current:
        pipe.close()
    elif pipe.loop.is_running():
        try:
            pipe.loop.call_soon_threadsafe(pipe.close)
        except RuntimeError:  # it closed meanwhile
            pass
    elif not pipe.loop.is_closed():  # stopped: nothing else touches it now
        try:
            pipe.close()
        except RuntimeError:
            pass
    # A closed loop cannot run anything: its futures are gone with it, and the socket is
    # closed when its transport is collected.


# RESP's array headers, b"*<n>\r\n", for _Script.command
_COUNT = tuple(b"*%d\r\n" % n for n in range(64))


class _Script:
    """A Lua script run by SHA; loaded when Redis does not know it (first use, restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._heads: dict[str, bytes] = {}  # key -> "EVALSHA <sha> 1 <key>" in RESP

    def command(self, key: str, args: tuple[Any, ...]) -> bytes:
        """``EVALSHA <sha> 1 <key> *args`` in RESP, as hiredis packs it (tests check), with
        the part before ``args`` packed once per key (a bucket's leases: 256 of them) and
        kept; raises what the packer raises for an argument it refuses (a lone surrogate).

        Why: hiredis formats each argument's header with sprintf, about 1.5 K instructions
        an argument, a third of a request-path command's client CPU; four of its eleven
        arguments are the same for every call in a bucket."""
        n = len(args) + 4
        if n >= len(_COUNT):  # more arguments than the counts made up front
            return pack(("EVALSHA", self.sha, 1, key, *args))
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= 4 * BUCKETS:  # keys of prefixes no longer used
                self._heads.clear()
            head = self._heads[key] = pack(("EVALSHA", self.sha, 1, key))[len(_COUNT[4]):]
        return b"".join((_COUNT[n], head, pack(args)[len(_COUNT[n - 4]):]))

    async def __call__(self, r: Client, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await r.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await r.script_load(self.source)
            return await r.evalsha(self.sha, len(keys), *keys, *args)


class _QueuedSettle:
    """The reply of a settle queued on the pipe (RedisStore.settle_soon): the pipe hands it
    over as to a future (``done``, ``set_result``, ``set_exception``), and this hands the
    outcome to the caller's Outcome: True or False, StoreUnavailable, or, for a failure
    settle would retry (NOSCRIPT: nothing ran; a connection error), a task of the store's
    that retries it as settle does (``_settle_slow``)."""

    __slots__ = ("argv", "finished", "keys", "outcome", "store")

    def __init__(self, store: RedisStore, outcome: Outcome, keys: tuple[str],
                 argv: tuple[Any, ...]) -> None:
        self.store = store
        self.outcome = outcome
        self.keys = keys
        self.argv = argv
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: Any, /) -> None:
        self.finished = True
        try:
            settled = bool(int(result))
        except Exception as exc:  # not a reply of the settle script
            self.outcome.set_exception(exc)
            return
        self.outcome.set_result(settled)

    def set_exception(self, exception: BaseException, /) -> None:
        self.finished = True
        if isinstance(exception, (NoScriptError, *_TRANSIENT)):
            retry = self.store._settle_slow(self.keys, self.argv, exception)
            try:
                self.store._soon_task(retry, self.outcome)
                return
            except RuntimeError:  # no running loop (a closed loop's pipe): nothing can retry
                retry.close()  # never awaited: closed, not left to warn
        self.outcome.set_exception(StoreUnavailable(
            f"Redis store failed: {type(exception).__name__}: {exception}"))


class RedisStore(Store):
    """Store on Redis or Redis Cluster (see the module docstring for the layout)."""

    def __init__(self, client: Client, *, prefix: str = "cw", url: str = "",
                 endpoint: Endpoint | None = None) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError("the Redis key prefix must be non-empty and have no braces")
        self._r = client
        # Asked on every script: isinstance on RedisCluster (a typing Protocol) costs ~2 us.
        self._cluster = isinstance(client, RedisCluster)
        self.prefix = prefix
        self.url = url
        self._closed = False
        self._chains_indexed = False  # the chains recorded before their expiry index: done
        self._buckets: OrderedDict[str, str] = OrderedDict()  # counter key -> bucket
        # token id -> (bucket, its key tag): a CRC-32 and two string builds fewer per script
        self._token_tags: dict[str, tuple[str, str]] = {}
        # reservation id -> its bucket's key tag, for its settle
        self._res_tags: OrderedDict[str, str] = OrderedDict()
        self._reserve = _Script(lua.RESERVE)
        self._settle = _Script(lua.SETTLE)
        self._expire = _Script(lua.EXPIRE)
        self._ledger = _Script(lua.LEDGER)
        self._append_ledger = _Script(lua.APPEND_LEDGER)
        self._prune = _Script(lua.PRUNE)
        self._usage = _Script(lua.USAGE)
        self._snapshot = _Script(lua.SNAPSHOT)
        self._add_pending = _Script(lua.ADD_PENDING)
        self._resolve_pending = _Script(lua.RESOLVE_PENDING)
        self._list_pending = _Script(lua.LIST_PENDING)
        self._note_chain = _Script(lua.NOTE_CHAIN)
        self._chains = _Script(lua.CHAINS)
        self._prune_chains = _Script(lua.PRUNE_CHAINS)
        # The request path's connection (_eval): None until the first script, or on a cluster.
        self._endpoint = None if self._cluster else endpoint
        self._pipe: Pipe | None = None
        self._opening: asyncio.Task[Pipe] | None = None
        self._queued = False  # a settle was queued on the pipe since the last drain

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"not a redis URL: {url!r} (write redis://host:port/db)")
        opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(opts) - {"prefix", "timeout", "cluster", "max_connections"}
        if unknown:
            raise ValueError(f"unknown redis store option(s): {', '.join(sorted(unknown))} "
                             "(known: prefix, timeout, cluster, max_connections)")
        try:
            timeout = float(opts.get("timeout", "2"))
        except ValueError:
            raise ValueError("redis store option timeout must be a number of seconds") from None
        if not 0 < timeout <= 600:
            raise ValueError("redis store option timeout must be in (0, 600] seconds")
        cluster = opts.get("cluster", "0").lower() in ("1", "true", "yes")
        max_conn_text = opts.get("max_connections", "16")
        if not max_conn_text.isdigit() or not 1 <= int(max_conn_text) <= 10_000:
            raise ValueError("redis store option max_connections must be 1..10000")
        max_conn = int(max_conn_text)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        # RESP2 and no client-info handshake: a new connection costs one round trip, not four
        # (it matters when a loaded relay opens its pool).
        common: dict[str, Any] = {
            "socket_timeout": timeout, "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0), "decode_responses": True, "protocol": 2,
        }
        try:  # newer redis-py calls the client-info handshake driver_info, older lib_name
            import redis.driver_info  # noqa: F401
            common["driver_info"] = None
        except ImportError:
            common.update(lib_name=None, lib_version=None)
        endpoint: Endpoint | None = None  # the request path's own connection (not on a cluster)
        try:
            if cluster:
                # The cluster client cannot queue for a connection (it fails at the cap), so
                # it gets headroom; a relay at the cap fails closed (503).
                client: Client = RedisCluster.from_url(base, max_connections=8 * max_conn,
                                                       **common)
            else:  # a command queues up to POOL_WAIT for a free connection, then fails closed
                pool = aioredis.BlockingConnectionPool.from_url(
                    base, max_connections=max_conn, timeout=POOL_WAIT, **common)
                client = aioredis.Redis(connection_pool=pool)
                kw = pool.connection_kwargs  # as redis-py read the URL
                endpoint = Endpoint(
                    host=str(kw["host"]), port=int(kw.get("port") or 6379),
                    db=int(kw.get("db") or 0), username=kw.get("username") or None,
                    password=kw.get("password"), tls=parts.scheme == "rediss", timeout=timeout)
        except (ValueError, RedisError) as exc:
            raise ValueError(f"bad redis URL: {exc}") from None
        safe = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port
                                                           else ""), parts.path, "", ""))
        return cls(client, prefix=opts.get("prefix", "cw"), url=safe, endpoint=endpoint)

    # -- plumbing ---------------------------------------------------------------------------

    def _tag(self, bucket: str) -> str:
        return "{" + self.prefix + ":" + bucket + "}:"

    def _token_tag(self, token_id: str) -> tuple[str, str]:
        """The token's bucket and that bucket's key tag (remembered; forgotten all at once
        past CACHE_SIZE tokens)."""
        got = self._token_tags.get(token_id)
        if got is None:
            b = bucket_of(token_id)
            got = (b, self._tag(b))
            if len(self._token_tags) >= CACHE_SIZE:
                self._token_tags.clear()
            self._token_tags[token_id] = got
        return got

    async def _run(self, op: Callable[[], Awaitable[T]], on_retry: Callable[[], None] | None = None,
                   *, retry: bool = True) -> T:
        """Run ``op``; on a connection error try once more (unless ``retry`` is False: an op
        that is not safe to run twice); any failure of the client becomes StoreUnavailable."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        try:
            try:
                return await op()
            except _TRANSIENT as exc:
                if not retry or "No connection available" in str(exc):
                    raise  # not safe to repeat, or queued POOL_WAIT s already: deny now
                # The client dropped the failed connection; pooled ones that the server closed
                # (a restart) are reconnected when next checked out.
                if on_retry is not None:
                    on_retry()
                return await op()
        except Exception as exc:  # whatever the client raises: deny
            raise StoreUnavailable(f"Redis store failed: {type(exc).__name__}: {exc}") from None

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script of the request path (snapshot, reserve, settle, a ledger row) on the
        store's pipe (capwallet.store.redis_pipe): the scripts that the calls of one event-loop
        turn send leave in one write, one round trip for all of them, and each reply goes to
        its caller, as the SQLite store groups its commits.

        Why: on Redis the store's cost is the client's CPU per command, not Redis's; under load
        a relay has many calls waiting at once, and one round trip for all of them costs about
        what one costs. A lone call goes at once, so concurrency 1 waits for nothing. Each
        script stays one atomic script: grouping changes how many travel together, never what
        one does. A connection that fails fails every call waiting on it, and each caller's
        ``_run`` decides alone whether to retry (append_ledger does not). A script Redis does
        not know (first use, a restarted Redis: NOSCRIPT, nothing ran) is sent once more with
        its source. Redis Cluster, and a second event loop while the first still runs, send the
        script alone through redis-py."""
        pipe = self._live_pipe()
        if pipe is None:
            pipe = await self._open_pipe()
            if pipe is None:
                return await script(self._r, keys, args)
        try:
            return await pipe.send(("EVALSHA", script.sha, len(keys), *keys, *args))
        except NoScriptError:
            return await pipe.send(("EVAL", script.source, len(keys), *keys, *args))

    def _live_pipe(self) -> Pipe | None:
        """This loop's pipe if it is open and unbroken, else None (``_open_pipe`` opens one).
        A thread runs one loop at a time, so the pipe is this loop's if its loop runs in this
        thread: two C calls, where asyncio.get_running_loop makes a getpid system call
        (CPython 3.11 checks the loop's process on each use)."""
        pipe = self._pipe
        if (pipe is None or pipe.broken is not None or pipe.thread != threading.get_ident()
                or not pipe.loop.is_running()):
            return None
        return pipe

    async def _open_pipe(self) -> Pipe | None:
        """This loop's pipe, opened once however many calls ask for it at the same time; None
        when scripts must go through redis-py (see ``_eval``)."""
        if self._endpoint is None:
            return None
        loop = asyncio.get_running_loop()
        pipe = self._pipe
        if pipe is not None and pipe.loop is not loop:
            if pipe.loop.is_running():  # another thread's loop uses it: leave it alone
                return None
            self._pipe = None  # its loop is over, and the connection with it
            _close_pipe(pipe)
        elif pipe is not None and pipe.broken is None:
            return pipe  # opened by another call while this one was on its way here
        opening = self._opening
        if opening is None or opening.get_loop() is not loop or (
                opening.done() and (opening.cancelled() or opening.exception() is not None
                                    or opening.result().broken is not None)):
            opening = self._opening = loop.create_task(Pipe.open(self._endpoint))
        pipe = await asyncio.shield(opening)
        if self._closed:
            pipe.close()
            raise StoreUnavailable("store is closed")
        self._pipe = pipe
        return pipe

    def _remember(self, cache: OrderedDict[str, str], key: str, bucket: str) -> None:
        cache[key] = bucket
        cache.move_to_end(key)
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    # -- reservations -----------------------------------------------------------------------

    def _send(self, script: _Script, keys: tuple[str, ...],
              args: tuple[Any, ...]) -> asyncio.Future[Any] | None:
        """The request path's fast lane (reserve, settle): ``script`` queued on this loop's
        open pipe, its reply coming to the future the caller awaits itself; None when there is
        no such pipe (the first call, a broken pipe, a cluster, another thread's loop, a closed
        store): the caller then goes through ``_run`` and ``_eval``, which open one or use
        redis-py. A failed reply goes to ``_again``, which does what ``_run`` and ``_eval`` do
        after a first attempt fails.

        Why: the reply resumes the caller through every coroutine between it and the future
        (reserve -> _run -> op -> _eval, each one built per call too), twice per relayed call;
        here it resumes only the caller."""
        pipe = self._live_pipe()
        if pipe is None or self._closed:
            return None
        fut = pipe.loop.create_future()
        try:
            payload = script.command(keys[0], args)
        except Exception as exc:  # an argument the packer refuses: this call fails alone
            fut.set_exception(exc)
            return fut
        pipe.send_packed(payload, fut)
        return fut

    async def _again(self, exc: Exception, op: Callable[[], Awaitable[T]],
                     on_retry: Callable[[], None] | None = None) -> T:
        """After a fast-lane command (``_send``) failed with ``exc``, what ``_run`` would do
        after its first attempt: a script Redis does not know (NOSCRIPT: nothing ran) is run
        by ``op`` as a first attempt (``_eval`` sends its source then); a connection error runs
        ``op`` once more (after ``on_retry``); anything else is StoreUnavailable."""
        if isinstance(exc, NoScriptError):
            return await self._run(op, on_retry)
        if isinstance(exc, _TRANSIENT):
            if on_retry is not None:
                on_retry()
            return await self._run(op, retry=False)
        raise StoreUnavailable(f"Redis store failed: {type(exc).__name__}: {exc}") from None

    async def reserve(self, reservation: Reservation) -> ReserveResult:
        r = reservation
        b, tag = self._token_tag(r.token_id)
        # The holds as the script reads and keeps them, [counter key, amount, limit, resets]
        # (-1: never), merged by counter key: amounts add, the smallest limit wins. (The
        # class tests stand before _exact: it is called only for what is not a plain int.)
        records: list[list[Any]] = []
        merged: dict[str, list[Any]] = {}
        record: list[Any]
        for key, amount, limit, resets in r.holds:
            if amount.__class__ is not int:
                amount = _exact(amount, "amount")
            if limit.__class__ is not int:
                limit = _exact(limit, "limit")
            if resets is None:
                resets = -1
            elif resets.__class__ is not int:
                resets = _exact(resets, "resets_at")
            same = merged.get(key)
            if same is None:
                merged[key] = record = [key, amount, limit, resets]
                records.append(record)
            else:
                same[1] += amount
                same[2] = min(same[2], limit)
                if same[3] < 0:
                    same[3] = resets
        buckets = self._buckets
        new_keys: list[str] | None = None  # counters this process has not indexed (_index)
        for record in records:
            if record[1] > MAX_EXACT:  # cannot fit any limit Lua can compare exactly
                if await self.is_revoked(r.token_id):
                    return _REVOKED
                key = record[0]
                return ReserveResult(False, failed_counter=key,
                                     used=(await self.counters([key]))[key])
            if record[2] > MAX_EXACT:
                record[2] = MAX_EXACT
            if buckets.get(record[0]) != b:
                if new_keys is None:
                    new_keys = []
                new_keys.append(record[0])
        get = r.meta.get
        expired_row = _row_tail((
            r.token_id, str(get("app", "")), str(get("provider", "")), str(get("model", "")),
            str(get("operation", "")), int(get("input_tokens", 0)), int(get("output_tokens", 0)),
            int(get("cost", 0)), str(get("currency", "")), "lease_expired", r.reservation_id,
            None, None, str(get("chain_id", "")),
        ))
        lease_until, created_at = r.lease_until, r.created_at
        if lease_until.__class__ is not int:
            lease_until = _exact(lease_until, "lease_until")
        if created_at.__class__ is not int:
            created_at = _exact(created_at, "created_at")
        keys = (tag + "leases",)
        argv = (r.reservation_id, lease_until, r.approval_id or "", _dumps_ascii(records),
                r.token_id, created_at, expired_row)
        sent = None if new_keys else self._send(self._reserve, keys, argv)
        if sent is None:
            out, retried = await self._reserve_slow(keys, argv, None, new_keys, b, merged)
            if new_keys:
                for k in new_keys:
                    self._remember(buckets, k, b)
        else:
            try:
                out, retried = await sent, False
            except Exception as exc:
                out, retried = await self._reserve_slow(keys, argv, exc)
        status = int(out[0])
        if status == 1:
            self._reserved(r.reservation_id, tag)
            return _OK
        if status == -1:
            if retried:  # our first attempt landed and only its reply was lost
                self._reserved(r.reservation_id, tag)
                return _OK
            raise ValueError(f"reservation id {r.reservation_id} already exists")
        if status == -2:
            return _REVOKED
        if int(out[3]):
            return ReserveResult(False, approval_used=True)
        i = int(out[1])
        return ReserveResult(False, failed_counter=records[i - 1][0] if i else None,
                             used=int(out[2]))

    async def _reserve_slow(self, keys: tuple[str], argv: tuple[Any, ...],
                            failed: Exception | None, new_keys: list[str] | None = None,
                            bucket: str = "", holds: Mapping[str, Sequence[Any]] | None = None,
                            ) -> tuple[list[Any], bool]:
        """The reserve script through ``_run`` (``failed`` None: the first attempt; new
        counters are indexed first) or, after the fast lane's attempt failed with ``failed``,
        through ``_again``. Returns the reply and whether the script was sent again after a
        connection error (then "duplicate id" means the first attempt landed)."""
        retried = False

        def mark_retry() -> None:
            nonlocal retried
            retried = True

        async def op() -> list[Any]:
            if new_keys and holds is not None:  # the index first: counters(keys) finds them
                await self._index(new_keys, bucket, holds)
            result: list[Any] = await self._eval(self._reserve, keys, argv)
            return result

        if failed is None:
            out = await self._run(op, mark_retry)
        else:
            out = await self._again(failed, op, mark_retry)
        return out, retried

    async def _index(self, counter_keys: list[str], bucket: str,
                     holds: Mapping[str, Sequence[Any]]) -> None:
        """Write each counter's bucket (``<prefix>:ck:<key>``), expiring with the counter
        (``holds``: key -> its record, [key, amount, limit, resets])."""
        pipe = self._r.pipeline(transaction=False)
        for k in counter_keys:
            resets = holds[k][3]
            name = f"{self.prefix}:ck:{k}"
            if resets >= 0:
                pipe.set(name, bucket, exat=max(resets, int(time.time())) + COUNTER_MARGIN)
            else:
                pipe.set(name, bucket)
        await pipe.execute()

    def _reserved(self, reservation_id: str, tag: str) -> None:
        """Remember a new reservation's bucket (its tag) for its settle (a new id: nothing to
        reorder)."""
        cache = self._res_tags
        cache[reservation_id] = tag
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    def _settle_command(self, reservation_id: str, actual: Mapping[str, int],
                        entry: LedgerEntry) -> tuple[tuple[str], tuple[Any, ...]]:
        """The settle script's keys and arguments (ValueError for a charge Lua cannot hold)."""
        tag = self._res_tags.pop(reservation_id, None) or self._token_tag(entry.token_id)[1]
        charges: list[Any] = []
        for k, v in actual.items():
            if v.__class__ is not int:
                v = _exact(v, "charge")
            if not -MAX_EXACT <= v <= MAX_EXACT:
                raise ValueError("charge too large")
            charges += (k, v)
        # The row carries the time and token id the script indexes it by: not sent apart.
        return (tag + "leases",), (reservation_id, _row(entry, reservation_id), *charges)

    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry
    ) -> bool:
        keys, argv = self._settle_command(reservation_id, actual, entry)
        sent = self._send(self._settle, keys, argv)
        if sent is None:
            return await self._settle_slow(keys, argv)
        try:
            out = await sent
        except Exception as exc:
            return await self._settle_slow(keys, argv, exc)
        return bool(int(out))

    async def _settle_slow(self, keys: tuple[str], argv: tuple[Any, ...],
                           failed: Exception | None = None) -> bool:
        """The settle script through ``_run`` (``failed`` None: no pipe to send it on) or,
        after the pipe's attempt failed with ``failed``, through ``_again``."""
        async def op() -> Any:
            return await self._eval(self._settle, keys, argv)

        return bool(int(await (self._run(op) if failed is None else self._again(failed, op))))

    def settle_soon(self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry,
                    outcome: Outcome) -> None:
        """``settle`` queued on the pipe with no task and no future: the reply goes to a
        _QueuedSettle, which hands the outcome over (a failure the store retries, NOSCRIPT or
        a connection error, goes to a task of the store's that retries it as settle would).
        With no open pipe of this loop's, settle runs in a task of the store's. ``drain``
        (and ``close``) wait for every one.

        Why: the relay queues every plain call's settlement once its answer is sent; a task
        per call (the default) costs a task, two coroutines and a loop turn more per call,
        where the pipe has the reply handed over in the read that carries it."""
        try:
            keys, argv = self._settle_command(reservation_id, actual, entry)
        except Exception as exc:  # what settle raises before it sends
            outcome.set_exception(exc)
            return
        pipe = self._live_pipe()
        if pipe is None or self._closed:
            self._soon_task(self._settle_slow(keys, argv), outcome)
            return
        self._queued = True
        reply = _QueuedSettle(self, outcome, keys, argv)
        try:
            payload = self._settle.command(keys[0], argv)
        except Exception as exc:  # an argument the packer refuses: StoreUnavailable
            reply.set_exception(exc)
            return
        pipe.send_packed(payload, reply)

    async def drain(self) -> None:
        """Wait for every settle queued so far: those on the pipe (a PING after them: Redis
        answers a connection's commands in order, so its reply comes after theirs, each
        handed over as it came), then the tasks (Store.drain), a retry among them."""
        pipe = self._live_pipe()
        if self._queued and pipe is not None:
            self._queued = False
            try:
                await pipe.send(("PING",))
            except Exception:  # noqa: S110 - the pipe failed: so did what it carried
                pass
        await super().drain()

    async def expire_leases(self, now: int) -> int:
        now = _exact(now, "now")
        total = 0
        buckets = [f"{i:02x}" for i in range(BUCKETS)]

        async def due() -> list[Any]:  # one round trip: which buckets have an expired lease
            pipe = self._r.pipeline(transaction=False)
            for b in buckets:
                pipe.zrangebyscore(self._tag(b) + "leases", "-inf", f"({now}", start=0, num=1)
            return list(await pipe.execute())

        pending = [b for b, hit in zip(buckets, await self._run(due), strict=True) if hit]
        while pending:
            results = await self._scripts(self._expire, [
                ([self._tag(b) + "leases", self._tag(b) + "seq", self._tag(b) + "rows",
                  self._tag(b) + "log"], [now, self._tag(b), SWEEP_BATCH]) for b in pending])
            again = []
            for b, (closed, seen) in zip(pending, results, strict=True):
                total += int(closed)
                if int(seen) >= SWEEP_BATCH:
                    again.append(b)
            pending = again
        return total

    async def _scripts(self, script: _Script,
                       calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run ``script`` once per (keys, args): pipelined (one round trip) on one Redis, 8 at a
        time on a cluster."""
        if not calls:
            return []

        async def execute() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute())

        async def on_cluster() -> list[Any]:  # cluster pipelines refuse EVALSHA
            sem = asyncio.Semaphore(8)

            async def one(keys: Sequence[str], args: Sequence[Any]) -> Any:
                async with sem:
                    return await script(self._r, keys, args)

            return list(await asyncio.gather(*(one(k, a) for k, a in calls)))

        async def op() -> list[Any]:
            if self._cluster:
                return await on_cluster()
            try:
                return await execute()
            except NoScriptError:
                await self._r.script_load(script.source)
                return await execute()

        return await self._run(op)

    async def counters(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(keys))
        result = dict.fromkeys(wanted, 0)
        if not wanted:
            return result

        async def op() -> dict[str, int]:
            unknown = [k for k in wanted if k not in self._buckets]
            if unknown:
                pipe = self._r.pipeline(transaction=False)
                for k in unknown:
                    pipe.get(f"{self.prefix}:ck:{k}")
                for k, b in zip(unknown, await pipe.execute(), strict=True):
                    if b is not None:
                        self._remember(self._buckets, k, str(b))
            groups: dict[str, list[str]] = {}  # bucket -> keys: one MGET per slot
            for k in wanted:
                if k in self._buckets:
                    groups.setdefault(self._buckets[k], []).append(k)
            for b, ks in groups.items():
                values = await self._r.mget([self._tag(b) + "c:" + k for k in ks])
                for k, v in zip(ks, values, strict=True):
                    result[k] = int(v) if v is not None else 0
            return result

        return await self._run(op)

    async def snapshot(self, token_id: str, keys: Sequence[str]) -> Snapshot:
        """One script in the token's bucket: its revocation and its counters (a counter lives
        in its token's bucket). A key this process knows to be in another bucket is read as
        ``counters`` reads it, in a second round trip."""
        wanted = list(dict.fromkeys(keys))
        b, tag = self._token_tag(token_id)
        own = [k for k in wanted if self._buckets.get(k, b) == b]
        script_keys = [tag + "revoked", *(tag + "c:" + k for k in own)]

        async def op() -> list[Any]:
            got: list[Any] = await self._eval(self._snapshot, script_keys, [token_id])
            return got

        out = await self._run(op)
        counters = dict.fromkeys(wanted, 0)
        for k, v in zip(own, out[1:], strict=True):
            counters[k] = int(v) if v is not None else 0
        if len(own) < len(wanted):
            counters.update(await self.counters([k for k in wanted if k not in own]))
        return Snapshot(bool(int(out[0])), counters)

    # -- revocation -------------------------------------------------------------------------

    async def revoke(self, token_id: str, now: int) -> None:
        name = self._tag(bucket_of(token_id)) + "revoked"

        async def op() -> Any:
            return await self._r.hsetnx(name, token_id, str(_exact(now, "now")))

        await self._run(op)

    async def is_revoked(self, token_id: str) -> bool:
        """The snapshot script with no counters: on the request path's own connection (the
        relay reads this before any refusal of a request it received), not a pooled one."""
        return (await self.snapshot(token_id, ())).revoked

    # -- ledger -----------------------------------------------------------------------------

    async def ledger(
        self, *, token_ids: Sequence[str] | None = None, since: int | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        limit = max(int(limit), 0)
        if limit == 0 or (token_ids is not None and not token_ids):
            return []
        low = "-inf" if since is None else str(_exact(since, "since"))
        if token_ids is None:
            sources = [(f"{i:02x}", "log") for i in range(BUCKETS)]
        else:
            sources = [(bucket_of(t), "log:" + t) for t in dict.fromkeys(token_ids)]
        results = await self._scripts(self._ledger, [
            ([self._tag(b) + name, self._tag(b) + "rows", self._tag(b) + "count"], [low, limit])
            for b, name in sources])
        rows: list[tuple[int, str, str, str, int]] = []
        for (b, _name), flat in zip(sources, results, strict=True):
            for i in range(0, len(flat), 3):
                row = flat[i + 1]
                rows.append((int(row[1:row.index(",")]), b, flat[i], row, int(flat[i + 2])))
        rows.sort(reverse=True)
        return [_entry(r[3], r[4]) for r in rows[:limit]]

    async def append_ledger(self, entry: LedgerEntry) -> None:
        """One script in the token's bucket. Not retried after a connection error (the row
        may have been written): a lost reply loses the call, never doubles the row."""
        tag = self._tag(bucket_of(entry.token_id))
        keys = [tag + "seq", tag + "rows", tag + "log"]
        t = _exact(entry.time, "time")
        compact = f"{entry.token_id}:{t // 60}:{entry.status}" if entry.refused else ""
        argv = [tag, entry.token_id, t, _row(entry, entry.reservation_id), compact]

        async def op() -> Any:
            return await self._eval(self._append_ledger, keys, argv)

        await self._run(op, retry=False)

    async def usage(self, *, since_day: int | None = None,
                    token_ids: Sequence[str] | None = None) -> list[UsageTotal]:
        if token_ids is not None and not token_ids:
            return []
        wanted = None if token_ids is None else set(token_ids)
        buckets = (sorted({bucket_of(t) for t in wanted}) if wanted is not None
                   else [f"{i:02x}" for i in range(BUCKETS)])
        results = await self._scripts(self._usage, [
            ([self._tag(b) + "agg:" + k for k in ("cost", "calls", "in", "out")], [])
            for b in buckets])
        out: list[UsageTotal] = []
        for cost, calls, tin, tout in results:
            values = [_pairs(h) for h in (calls, tin, tout)]
            for field, total in _pairs(cost).items():
                day, token, app, provider, model, currency = json.loads(field)
                if (wanted is not None and token not in wanted) or (
                        since_day is not None and int(day) < since_day):
                    continue
                out.append(UsageTotal(int(day), token, app, provider, model, currency, total,
                                      values[0].get(field, 0), values[1].get(field, 0),
                                      values[2].get(field, 0)))
        return out

    # -- chains -----------------------------------------------------------------------------

    def _chains_key(self, token_id: str) -> str:
        return self._tag(bucket_of(token_id)) + "chains:" + token_id

    async def note_chain(self, chain: Chain) -> bool:
        """One script in the token's bucket; safe to retry (first write wins)."""
        keys = [self._chains_key(chain.token_id),
                self._tag(bucket_of(chain.token_id)) + "chainexp"]
        record = json.dumps([_exact(chain.first_seen, "first_seen"), list(chain.caveats)],
                            separators=(",", ":"), ensure_ascii=False)
        expiry = chain_expiry(chain.caveats)
        args = [chain.chain_id, record, MAX_CHAINS, "" if expiry is None else expiry,
                chain.token_id]

        async def op() -> Any:
            return await self._note_chain(self._r, keys, args)

        return bool(int(await self._run(op)))

    async def chains(self, token_ids: Sequence[str]) -> list[Chain]:
        wanted = sorted(set(token_ids))
        results = await self._scripts(self._chains,
                                      [([self._chains_key(t)], []) for t in wanted])
        out: list[Chain] = []
        for token_id, flat in zip(wanted, results, strict=True):
            found = []
            for i in range(0, len(flat), 2):
                first_seen, caveats = json.loads(flat[i + 1])
                found.append(Chain(token_id, _text(flat[i]), tuple(caveats), int(first_seen)))
            out += sorted(found, key=lambda c: (c.first_seen, c.chain_id))
        return out

    async def prune_chains(self, expired_before: int) -> int:
        """Per bucket, from its index of chain expiries (written by note_chain; the chains
        recorded before the index existed are indexed first, once: _index_old_chains), a
        batch at a time as expire_leases."""
        before = _exact(expired_before, "expired_before")
        await self._index_old_chains()
        total = 0
        pending = [f"{i:02x}" for i in range(BUCKETS)]
        while pending:
            results = await self._scripts(self._prune_chains, [
                ([self._tag(b) + "chainexp"], [before, self._tag(b), SWEEP_BATCH])
                for b in pending])
            again = []
            for b, (deleted, seen) in zip(pending, results, strict=True):
                total += int(deleted)
                if int(seen) >= SWEEP_BATCH:
                    again.append(b)
            pending = again
        return total

    async def _index_old_chains(self) -> None:
        """Index the expiry of the chains recorded before note_chain indexed it (1bad818), as
        note_chain does, so that prune_chains sees them: once per store, by the first sweep
        that finds no marker (``<P>:chainexp:indexed``, set when a pass is complete; a pass
        cut by a failure is run again whole, ZADD being idempotent). The tokens' chain hashes
        are found by a SCAN of the keyspace (every node of a cluster), the only listing of
        them: a one-off cost. A chain recorded without its expiry after the marker (by a
        relay older than the index, still running) stays unindexed, and is kept: never
        deleted is the safe side, as for a chain without an expiry."""
        if self._chains_indexed:
            return
        marker = self.prefix + ":chainexp:indexed"
        if not await self._run(lambda: self._r.exists(marker)):
            pattern = _glob(self._tag("")[:-2]) + "??}:chains:*"
            tokens: list[str] = []
            try:
                async for key in self._r.scan_iter(match=pattern, count=1000):
                    tokens.append(_text(key).rsplit(":chains:", 1)[1])
                    if len(tokens) >= SWEEP_BATCH:
                        await self._index_chains(tokens)
                        tokens = []
            except StoreUnavailable:
                raise
            except Exception as exc:  # the SCAN's own failure, as _run says any other's:
                # the relay's sweep catches StoreUnavailable only (a client error ended it)
                raise StoreUnavailable(
                    f"Redis store failed: {type(exc).__name__}: {exc}") from None
            await self._index_chains(tokens)
            await self._run(lambda: self._r.set(marker, "1"))
        self._chains_indexed = True

    async def _index_chains(self, token_ids: list[str]) -> None:
        """Add the chains of ``token_ids`` that have an expiry to their buckets' index."""
        by_bucket: dict[str, dict[str, int]] = {}
        for c in await self.chains(token_ids) if token_ids else ():
            expiry = chain_expiry(c.caveats)
            if expiry is not None:
                by_bucket.setdefault(self._tag(bucket_of(c.token_id)) + "chainexp", {})[
                    c.token_id + " " + c.chain_id] = expiry
        for key, members in by_bucket.items():
            await self._run(partial(self._r.zadd, key, members))

    async def prune_counters(self, before: int) -> int:
        """Nothing to delete: a period's counter expires by itself at its period's end plus
        COUNTER_MARGIN (EXPIREAT, set as it is first written)."""
        return 0

    async def prune_token_counters(self, token_id: str, keys: Sequence[str]) -> int:
        """The counters in the token's bucket, and their ``ck`` entries (counters(keys) finds a
        counter's bucket by them), in one pipeline (on a cluster, one per slot)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return 0
        tag = self._tag(bucket_of(token_id))

        async def op() -> int:
            pipe = self._r.pipeline(transaction=False)
            for k in wanted:
                pipe.delete(tag + "c:" + k)
            for k in wanted:
                pipe.delete(f"{self.prefix}:ck:{k}")
            done = await pipe.execute()
            return sum(int(n) for n in done[:len(wanted)])

        return await self._run(op)

    async def prune_ledger(self, before: int) -> int:
        before = _exact(before, "before")
        total = 0
        pending = [f"{i:02x}" for i in range(BUCKETS)]
        while pending:
            results = await self._scripts(self._prune, [
                ([self._tag(b) + "log", self._tag(b) + "rows"], [self._tag(b), before,
                                                                SWEEP_BATCH])
                for b in pending])
            again = []
            for b, n in zip(pending, results, strict=True):
                total += int(n)
                if int(n) >= SWEEP_BATCH:
                    again.append(b)
            pending = again
        return total

    # -- pending approvals ------------------------------------------------------------------

    def _pending_keys(self, approval_request_id: str) -> list[str]:
        tag = self._tag("pending")
        return [tag + "p:" + approval_request_id, tag + "open"]

    async def add_pending(self, pending: PendingApproval) -> None:
        p = pending
        retried = False

        def mark_retry() -> None:
            nonlocal retried
            retried = True

        async def op() -> Any:
            return await self._add_pending(self._r, self._pending_keys(p.approval_request_id), [
                p.approval_request_id, p.token_id, p.digest, p.summary,
                _exact(p.created_at, "created_at"), _exact(p.expires_at, "expires_at"),
                p.status, p.approval or "", PENDING_KEEP, p.kind])

        if not int(await self._run(op, mark_retry)) and not retried:
            raise ValueError(f"approval request {p.approval_request_id} already exists")

    async def get_pending(self, approval_request_id: str) -> PendingApproval | None:
        name = self._pending_keys(approval_request_id)[0]

        async def op() -> dict[str, str]:
            got = await self._r.hgetall(name)
            return {str(k): str(v) for k, v in got.items()}

        h = await self._run(op)
        if not h:
            return None
        return PendingApproval(
            approval_request_id=approval_request_id, token_id=h["token"], digest=h["digest"],
            summary=h["summary"], created_at=int(h["created"]), expires_at=int(h["expires"]),
            status=h["status"], approval=h.get("approval") or None,
            kind=h.get("kind") or "model_call",
        )

    async def list_pending(self, now: int) -> list[PendingApproval]:
        """Requests still waiting for the user (status pending, not yet expired), oldest first."""
        async def op() -> list[str]:
            got: list[str] = await self._list_pending(
                self._r, [self._tag("pending") + "open"], [_exact(now, "now"),
                                                           self._tag("pending")])
            return got

        flat = await self._run(op)
        return [
            PendingApproval(
                approval_request_id=flat[i], token_id=flat[i + 1], digest=flat[i + 2],
                summary=flat[i + 3], created_at=int(flat[i + 4]), expires_at=int(flat[i + 5]),
                status=flat[i + 6], approval=flat[i + 7] or None,
                kind=flat[i + 8] or "model_call",
            )
            for i in range(0, len(flat), 9)
        ]

    async def resolve_pending(
        self, approval_request_id: str, status: str, approval: str | None
    ) -> bool:
        """Move a pending request to approved/denied/expired once; False if not pending."""
        if status not in ("approved", "denied", "expired"):
            raise ValueError(f"cannot resolve an approval request to {status!r}")

        async def op() -> Any:
            return await self._resolve_pending(
                self._r, self._pending_keys(approval_request_id),
                [approval_request_id, status, approval or ""])

        return bool(int(await self._run(op)))

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain()  # the settlements queued (settle_soon) go out first
        self._closed = True
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            _close_pipe(pipe)
        home = pipe.loop if pipe is not None else None
        if home is not None and home is not asyncio.get_running_loop() and home.is_running():
            # The pooled connections were opened on that loop too, in another thread: they
            # are closed there (see _close_pipe), waited for a few seconds at most.
            try:
                done = asyncio.run_coroutine_threadsafe(self._r.aclose(), home)
                await asyncio.wait_for(asyncio.wrap_future(done), 5)
            except Exception:  # noqa: S110 - closing: nothing is left to tell
                pass
            return
        try:
            await self._r.aclose()
        except (RedisError, *_TRANSIENT):
            pass
