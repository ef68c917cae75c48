"""One Redis connection that carries the request path's scripts of every concurrent call.

The rule: the commands that the calls of one event-loop turn send leave in ONE socket write,
and their replies are matched to their callers in order as they arrive (Redis answers the
commands of one connection in the order it received them). This is what a relay under load
needs from its store: many calls waiting at once, one round trip for all of them, as the
SQLite store groups its commits. One exception, for a relay with one call at a time: when the
connection's last write carried a single command and nothing waits for a reply, a command
leaves at once instead of at the end of the turn (no loop turn and no wake-up spent waiting
for company that a lone caller does not have; a burst after such a lone command sends its
first command alone and the rest together).

The deadline check (a timer) is armed at a write when none is armed, and left to run out even
when every reply has come (it then re-arms only if a command still waits): arming and
cancelling a timer per round trip cost 1.2-1.6 us of the 13-15 us client CPU of a lone
round trip (the two changes together: 14.6 -> 11.8 us per PING, this machine).

Why a connection of our own, not redis-py's Pipeline or pooled connections: for these small
scripts, the client's CPU per command is the store's cost, not Redis's. redis-py spends about
10-14 us per reply (a pool checkout per round trip, a timeout context and four Python frames per
reply read); this protocol spends about 1 us (bench/store.py, and the figures in the commit
that added this module). The commands are packed by hiredis (C) and the replies parsed by its
Reader (C), fed straight from ``data_received``: no stream reader, no per-reply coroutine.

Failing closed: a reply that does not come within ``timeout`` seconds of its command's write, a
connection that fails or closes, or a failed handshake (AUTH, SELECT) aborts the connection and
fails every command waiting on it with a redis-py ConnectionError or TimeoutError; the store
turns those into StoreUnavailable (after its one retry, which opens a new connection). An
error reply (a ResponseError, NOSCRIPT among them) fails only its own command.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from capwallet.store.base import Outcome


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: what a ``redis://`` or ``rediss://`` URL names."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    timeout: float = 2.0  # seconds to connect, and for each reply


# One command in RESP, packed in C (``str`` as UTF-8, ``int`` in decimal, ``bytes`` as is).
pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


def _reply_error(message: str) -> RedisError:
    """The error a reply carries, as redis-py names it (what the store already handles)."""
    code = message.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScriptError(message)
    if code in ("LOADING", "MASTERDOWN"):  # this Redis cannot answer now: the call fails closed
        return RedisConnectionError(message)
    return ResponseError(message)


class Pipe(asyncio.Protocol):
    """The connection (see the module docstring). Belongs to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: Endpoint) -> None:
        self.loop = loop
        # The thread that runs ``loop`` (made on it): a running loop in this thread is this
        # one, a test without asyncio.get_running_loop's getpid system call (RedisStore._eval).
        self.thread = threading.get_ident()
        self.endpoint = endpoint
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(encoding="utf-8", replyError=_reply_error)
        # Written and waiting for their reply, oldest first, each with its deadline.
        self._waiting: deque[tuple[Outcome, float]] = deque()
        # Sent this loop turn, not yet written: one write for all of them.
        self._out: list[tuple[bytes, Outcome]] = []
        self._write_scheduled = False
        self._solo = True  # the last write carried one command (see send)
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken: RedisError | None = None  # set once; a broken pipe is never reused

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Pipe:
        """Connect (TLS for rediss) and authenticate; raise a redis-py ConnectionError or
        TimeoutError if Redis is unreachable or refuses the handshake."""
        loop = asyncio.get_running_loop()
        pipe = cls(loop, endpoint)
        e = endpoint
        context = ssl.create_default_context() if e.tls else None
        handshake: list[asyncio.Future[Any]] = []
        failure: RedisError
        try:
            async with asyncio.timeout(e.timeout):
                await loop.create_connection(lambda: pipe, e.host, e.port, ssl=context)
                if pipe._transport is None:  # connection_made failed (and was logged)
                    raise RedisConnectionError("the connection was not set up")
                if e.password is not None:
                    handshake.append(pipe.send(
                        ("AUTH", e.username, e.password) if e.username else ("AUTH", e.password)))
                if e.db:
                    handshake.append(pipe.send(("SELECT", e.db)))
                for reply in handshake:
                    await reply
        except TimeoutError:
            failure = RedisTimeoutError(f"Redis at {e.host}:{e.port} did not answer in time")
        except (OSError, RedisError) as exc:
            failure = RedisConnectionError(
                f"cannot connect to Redis at {e.host}:{e.port}: {type(exc).__name__}: {exc}")
        else:
            return pipe
        pipe.close(failure)
        for reply in handshake:  # retrieved here, so asyncio does not log them as lost
            if not reply.cancelled():
                reply.exception()
        raise failure

    # -- sending ----------------------------------------------------------------------------

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command for this loop turn's write; the future gets its reply (an error
        reply as its exception, as it gets an argument the packer refuses: a lone surrogate)."""
        fut = self.loop.create_future()
        try:
            payload = pack(args)
        except Exception as exc:  # this command cannot be sent; the others can
            fut.set_exception(exc)
            return fut
        self.send_packed(payload, fut)
        return fut

    def send_packed(self, payload: bytes, reply: Outcome) -> None:
        """``send`` for a command packed already (RESP), its reply handed to ``reply`` (a
        future, or an Outcome: the three methods the pipe calls on one, for a caller that
        does not await it). A reply whose ``done`` is True when it comes (a cancelled future)
        is dropped."""
        if self.broken is not None:
            reply.set_exception(self.broken)
            return
        self._out.append((payload, reply))
        if self._solo and not self._waiting and self._transport is not None:
            self._write()
        elif not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write)

    def _write(self) -> None:
        self._write_scheduled = False
        if self._transport is None and self.broken is None:
            return  # not connected yet: connection_made writes what waits
        out, self._out = self._out, []
        if self.broken is not None:
            for _, fut in out:
                if not fut.done():
                    fut.set_exception(self.broken)
            return
        assert self._transport is not None
        if len(out) == 1:  # a lone command (concurrency 1): no joins, no list built
            payload, reply = out[0]
            if reply.done():  # its caller was cancelled before it left: not run
                return
            self._transport.write(payload)
            self._solo = True
            deadline = self.loop.time() + self.endpoint.timeout
            self._waiting.append((reply, deadline))
        else:
            # A caller cancelled before its command left does not get it run.
            out = [item for item in out if not item[1].done()]
            if not out:
                return
            self._transport.write(b"".join([payload for payload, _ in out]))
            self._solo = len(out) == 1
            deadline = self.loop.time() + self.endpoint.timeout
            self._waiting.extend([(reply, deadline) for _, reply in out])
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        """The timer ran out: if the oldest command waiting is past its deadline, the
        connection is dead to us; else wait for that command's deadline (none waiting: stop)."""
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if self.loop.time() >= deadline:
            e = self.endpoint
            self.close(RedisTimeoutError(
                f"Redis at {e.host}:{e.port} did not answer within {e.timeout} s"))
        else:
            self._watchdog = self.loop.call_at(deadline, self._check)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._out and not self._write_scheduled:
            self._write()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        try:
            reader.feed(data)
            while waiting:
                reply = reader.gets()
                if reply is False:  # RESP2 has no booleans: False is "need more data"
                    break
                fut = waiting.popleft()[0]
                if fut.done():  # its caller was cancelled; the reply is dropped
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except Exception as exc:  # a malformed or undecodable reply: nothing after it is sure
            self.close(RedisConnectionError(f"Redis sent a reply the store cannot read: {exc}"))
            return

    def eof_received(self) -> bool:
        self.close(RedisConnectionError("Redis closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError(
            "lost the connection to Redis" + (f": {exc}" if exc else "")))

    # -- closing ----------------------------------------------------------------------------

    def close(self, why: RedisError | None = None) -> None:
        """Abort the connection and fail every command not answered yet with ``why``."""
        if self.broken is None:
            self.broken = why or RedisConnectionError("the store's Redis connection is closed")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting = [fut for fut, _ in self._waiting] + [fut for _, fut in self._out]
        self._waiting.clear()
        self._out = []
        for fut in waiting:
            if not fut.done():
                fut.set_exception(self.broken)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
