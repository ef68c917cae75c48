"""The relay's upstream HTTP/1.1 client: one pool of keep-alive connections per relay.

Why not httpx.AsyncClient: measured on the benchmark machine (uvloop, 20 calls in flight,
loopback provider), an httpx.AsyncClient call cost 385-440 us of CPU, 220-250 us even with
httpx's client layer bypassed (its Request/Response models and byte streams), against 42 us for
an asyncio Protocol; the relay's whole budget for its throughput target is about 500 us per
call. So the wire is an asyncio Protocol per connection and the parsing is httptools (llhttp,
the parser uvicorn serves with): this module only pools connections and hands bytes over.

Scope, what the relay needs and no more: requests whose whole body is known (sent with a
Content-Length, head and body in one write); responses framed by Content-Length, chunked
transfer coding (decoded by llhttp) or connection close; 1xx interim responses skipped;
keep-alive unless either side says close; a per-origin stack of idle connections taken in
O(1); a count of slots bounding the connections in use (``start`` sends on an idle connection
with no await when a slot is free: see its docstring); TLS through asyncio's ssl support with
certifi's roots. No HTTP/2, proxies, redirects, cookies or content decoding (requests say
``accept-encoding: identity``; a compressed answer is a protocol error, since the relay must
read its usage).

Timeouts: connecting has its own; everything else runs under the caller's deadline (the relay
puts one ``asyncio.timeout`` around each whole upstream call), so the pool sets none per read.
A reused idle connection that turns out closed before any byte of the answer (the server's
keep-alive timer fired as we reused it) is retried once on a new connection, as httpcore does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import certifi
import httptools

MAX_HEAD_BYTES = 64 * 1024  # a provider's response head, all header lines together
HIGH_WATER = 256 * 1024  # buffered body bytes at which reading from the socket pauses
Origin = tuple[str, str, int]  # scheme, host, port


class UpstreamError(Exception):
    """Base class: the exchange with the provider failed (no usable answer)."""


class ConnectFailed(UpstreamError):
    """The connection could not be made (refused, DNS, TLS handshake)."""


class ConnectTimeout(UpstreamError):
    """The connection was not made within the connect timeout."""


class ProtocolFailure(UpstreamError):
    """The provider closed the connection early or sent something that is not HTTP/1.1."""


class _Stale(UpstreamError):
    """A reused keep-alive connection was already closed: nothing was answered (the pool
    retries once on a new connection)."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; at most one exchange at a time."""

    __slots__ = ("_drain", "_paused", "idle_since", "loop", "origin", "parser", "pool",
                 "reading_paused", "response", "reused", "transport")

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool, self.origin = pool, origin
        # The loop it was made in (by create_connection), which alone runs its callbacks:
        # asyncio.get_running_loop costs a getpid system call on each use (Python 3.11).
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None
        self.response: Response | None = None
        self.idle_since = 0.0
        self.reused = False
        self.reading_paused = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None or resp.done:
            # Bytes on an idle connection (the server is closing it) or after a whole
            # answer: this connection cannot be trusted with another request.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            resp.fail(ProtocolFailure("the provider switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            resp.fail(ProtocolFailure(f"the provider's answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("connection lost"))
        resp = self.response
        if resp is not None:
            resp.connection_lost()
        self.pool._forget(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.response
        assert resp is not None
        resp.head_bytes += len(name) + len(value) + 4
        if resp.head_bytes > MAX_HEAD_BYTES:
            raise ProtocolFailure("the provider's response head is too large")
        resp.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        resp = self.response
        assert resp is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            resp.headers.clear()  # an interim answer: the real one follows
            resp.head_bytes = 0
            return
        resp.headers_done(status)

    def on_body(self, body: bytes) -> None:
        resp = self.response
        assert resp is not None
        resp.feed(body)

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is not None and resp.status:
            resp.complete(self.parser.should_keep_alive())

    # -- used by the pool and the response --------------------------------------------------

    def write(self, data: bytes, response: Response) -> None:
        """Write a whole request for ``response`` (no wait: Pool.start sends this way)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise _Stale
        self.response = response
        transport.write(data)
        # After the write: no answer can be read before the loop next turns, and the request
        # is then on its way a parser's making sooner.
        self.parser = httptools.HttpResponseParser(self)

    async def send(self, data: bytes, response: Response) -> None:
        """Write a whole request and wait until the transport has taken it."""
        self.write(data, response)
        if self._paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            except ConnectionResetError:
                raise ProtocolFailure("the provider closed the connection while the "
                                      "request was being sent") from None
            finally:
                self._drain = None

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None \
                and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def usable(self, now: float, expiry: float) -> bool:
        t = self.transport
        return t is not None and not t.is_closing() and now - self.idle_since < expiry

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Response:
    """A provider's answer: status and headers at once, the body read with ``read()`` or
    ``iter_chunks()``; ``close()`` (always, e.g. in ``finally``) gives the connection back."""

    __slots__ = ("_buf", "_closed", "_conn", "_done", "_error", "_keep_alive", "_pool",
                 "_size", "_waiter", "head_bytes", "headers", "status")

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool, self._conn = pool, conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self._buf: list[bytes] = []
        self._size = 0
        self._done = False
        self._keep_alive = False
        self._closed = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        """The whole answer has arrived."""
        return self._done

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), as text."""
        key = name.encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    # -- fed by the connection --------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def headers_done(self, status: int) -> None:
        self.status = status
        self._wake()

    def feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def complete(self, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._wake()

    def connection_lost(self) -> None:
        if self._done:
            return
        if self.status and not self._framed():
            self.complete(False)  # delimited by the connection closing: that is its end
        elif not self.status and not self.headers and self._conn.reused:
            self.fail(_Stale())
        else:
            self.fail(ProtocolFailure("the provider closed the connection mid-answer"
                                      if self.status else
                                      "the provider closed the connection without answering"))

    def _framed(self) -> bool:
        for k, v in self.headers:
            if k == b"content-length" or (k == b"transfer-encoding" and b"chunked" in v.lower()):
                return True
        return False

    # -- read by the caller -----------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def head(self) -> None:
        """Wait for the answer's status and headers; raises how the exchange failed. A
        cancelled wait (here or in ``read``) changes nothing else: another task may wait
        again (the relay's handler reads a plain answer, and a task of the relay's takes the
        call over if the handler is cancelled), and a failure is told again (``request``
        retries a stale connection)."""
        while not self.status and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    @property
    def buffered(self) -> bool:
        """Body bytes have arrived that no read has taken yet."""
        return bool(self._buf)

    def _take(self) -> bytes:
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._size = 0
        self._conn.resume_reading()  # if the buffer had paused it
        return data

    async def read(self) -> bytes:
        """The whole body."""
        while not self._done:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: everything received since the last piece, in one piece
        (a burst of small stream events comes out together)."""
        while True:
            if self._buf:
                yield self._take()
            elif self._done:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool._release(self._conn, self._done and self._keep_alive
                            and self._error is None)


class Pool:
    """Keep-alive connections per origin, O(1) per request (see the module docstring)."""

    def __init__(self, *, max_connections: int, connect_timeout: float,
                 keepalive_expiry: float = 5.0, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        # Connections in use are bounded by a count of free slots and a queue of requests
        # waiting for one (asyncio.Semaphore's logic, which Pool.start needs to take a slot
        # without awaiting); a released slot goes to the first waiter, in order.
        self._free = max_connections
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._connect_timeout = connect_timeout
        self._expiry = keepalive_expiry
        self._ssl = ssl_context

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        ctx = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin), host, port, ssl=ctx,
                    server_hostname=host if ctx else None)
        except TimeoutError:
            raise ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        self._open.add(conn)
        return conn

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = idle[-1].loop.time()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._expiry):
                return conn
            conn.close()
        return None

    def _take_slot(self) -> bool:
        """A free slot taken at once, if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def _slot(self) -> None:
        """Wait for a free slot (first come, first served)."""
        if self._take_slot():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()  # handed this slot as this task was cancelled: pass it on
            elif waiter in self._waiters:  # (a release may have dropped it already)
                self._waiters.remove(waiter)
            raise

    def _give_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it, still counted as taken
                return
        self._free += 1

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._give_slot()
        conn.response = None
        conn.resume_reading()
        if reusable and conn.usable(0.0, float("inf")):
            conn.idle_since = conn.loop.time()
            conn.reused = True
            self._idle.setdefault(conn.origin, []).append(conn)
        else:
            conn.close()

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def start(self, origin: Origin, data: bytes) -> Response | None:
        """Send ``data`` at once, with no await, if a slot is free and an idle connection to
        ``origin`` is open; None otherwise (``request`` then connects or waits). Pass what it
        returns to ``request``, which waits for the answer's head (and, as for any reused
        connection, sends once more on a new one if this one turns out closed).

        Why: the relay starts a call's exchange from the handler that reserved it, before
        the call's own task first runs, so no turn of the event loop lies between the
        reservation and the provider getting the request."""
        if not self._take_slot():
            return None
        conn = self._checkout(origin)
        if conn is None:
            self._give_slot()
            return None
        resp = Response(self, conn)
        try:
            conn.write(data, resp)
        except Exception:  # closing after all: the request path sends on a new connection
            conn.response = None
            conn.close()
            self._give_slot()
            return None
        return resp

    async def request(self, origin: Origin, data: bytes,
                      started: Response | None = None) -> Response:
        """Send ``data`` (a whole request: head and body) and wait for the answer's head;
        ``started``: ``start``'s answer for this request (sent already, its slot taken)."""
        if started is None:
            await self._slot()
            conn = self._checkout(origin)
        else:
            conn = started._conn
        try:
            if conn is not None:
                try:
                    if started is None:
                        return await self._exchange(conn, data)
                    await started.head()
                    return started
                except _Stale:
                    conn.close()  # the server closed it as we reused it: once more, new
            conn = await self._connect(origin)
            try:
                return await self._exchange(conn, data)
            except _Stale:
                raise ProtocolFailure("the provider closed the connection without "
                                      "answering") from None
        except BaseException:
            if conn is not None:
                conn.response = None
                conn.close()
            self._give_slot()
            raise

    async def _exchange(self, conn: _Connection, data: bytes) -> Response:
        resp = Response(self, conn)
        await conn.send(data, resp)
        await resp.head()
        return resp

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
