"""The upstream connection pool behind the relay's httpx.AsyncClient.

Why not httpx's default transport: httpcore's AsyncConnectionPool re-scans every connection and
every queued request on each request and on each response close, and polls each idle socket
while doing so, so its cost per request grows with the number of open connections (profiled:
with 20 concurrent calls it took more CPU than all the relay's own work). This transport keeps
httpcore's HTTP/1.1 connections (the protocol handling, TLS, timeouts and streaming are
httpcore's) and replaces only the pool: idle connections wait in a per-origin stack, a request
takes the most recently used one in O(1), and a semaphore bounds the calls in flight.

It also sends each request's head and body in one write (the stream wrapper below holds writes
until the first read), saving a system call and a wake-up of the provider per request, and runs
connections on plain asyncio streams rather than through anyio.
"""

from __future__ import annotations

import asyncio
import ssl
import typing
from collections.abc import AsyncIterator

import httpcore
import httpx

_MAP = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout, httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout, httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError, httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError, httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
}


def _mapped(exc: Exception, request: httpx.Request) -> Exception:
    for core, ours in _MAP.items():
        if isinstance(exc, core):
            return ours(str(exc), request=request)
    if isinstance(exc, httpcore.TimeoutException):
        return httpx.TimeoutException(str(exc), request=request)
    if isinstance(exc, httpcore.NetworkError):
        return httpx.NetworkError(str(exc), request=request)
    if isinstance(exc, httpcore.ProtocolError):
        return httpx.ProtocolError(str(exc), request=request)
    return exc


class _CoalescingStream(httpcore.AsyncNetworkStream):
    """Holds writes until the next read (or 64 KiB), then sends them in one call."""

    LIMIT = 64 * 1024

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._held: list[bytes] = []
        self._size = 0

    async def _flush(self, timeout: float | None) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held, self._size = [], 0
            await self._inner.write(data, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._held.append(buffer)
            self._size += len(buffer)
            if self._size >= self.LIMIT:
                await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._held, self._size = [], 0
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        return _CoalescingStream(await self._inner.start_tls(ssl_context, server_hostname,
                                                             timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """A connection on plain asyncio streams (anyio's per-call cancel scopes and locks cost
    more than the rest of a read or write here)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out reading from the provider") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the provider") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # True when the provider closed the idle connection (EOF waiting in the buffer).
            return self._reader.at_eof() or self._writer.is_closing() or bool(
                self._reader._buffer)  # type: ignore[attr-defined]
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info in ("client_addr", "server_addr"):
            return self._writer.get_extra_info("sockname" if info == "client_addr" else
                                               "peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None,
                    limit=2**20)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _CoalescingStream(_AsyncioStream(reader, writer))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    """The response body; closing it hands the connection back to the pool."""

    def __init__(self, pool: Http1Pool, key: tuple[bytes, bytes, int],
                 conn: httpcore.AsyncHTTPConnection, resp: httpcore.Response,
                 request: httpx.Request) -> None:
        self._pool, self._key, self._conn, self._resp = pool, key, conn, resp
        self._request = request
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in typing.cast(typing.AsyncIterable[bytes], self._resp.stream):
                yield chunk
        except Exception as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._resp.aclose()
        finally:
            self._pool._checkin(self._key, self._conn)


class Http1Pool(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections per origin, O(1) per request (see the module doc)."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}
        self._max = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._backend = _Backend()

    def _checkout(self, key: tuple[bytes, bytes, int]) -> httpcore.AsyncHTTPConnection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.is_idle() and not conn.has_expired():
                return conn
            self._discard(conn)
        return None

    def _checkin(self, key: tuple[bytes, bytes, int], conn: httpcore.AsyncHTTPConnection) -> None:
        if self._slots is not None:
            self._slots.release()
        if conn.is_idle():
            self._idle.setdefault(key, []).append(conn)
        elif not conn.is_closed():
            self._discard(conn)

    @staticmethod
    def _discard(conn: httpcore.AsyncHTTPConnection) -> None:
        task = asyncio.get_running_loop().create_task(conn.aclose())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        timeouts = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free upstream connection", request=request) from None
        conn = self._checkout(key)
        if conn is None:
            ssl_context = self._ssl
            if scheme == b"https" and ssl_context is None:
                ssl_context = self._ssl = httpx.create_ssl_context()
            conn = httpcore.AsyncHTTPConnection(
                origin=httpcore.Origin(scheme, url.raw_host, port), ssl_context=ssl_context,
                keepalive_expiry=self._expiry, network_backend=self._backend)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=scheme, host=url.raw_host, port=port, target=url.raw_path),
            headers=request.headers.raw,
            content=typing.cast(typing.AsyncIterable[bytes], request.stream),
            extensions=request.extensions,
        )
        try:
            resp = await conn.handle_async_request(core_request)
        except BaseException as exc:
            self._slots.release()
            if not conn.is_closed():
                self._discard(conn)
            if isinstance(exc, Exception):
                raise _mapped(exc, request) from exc
            raise
        return httpx.Response(status_code=resp.status, headers=resp.headers,
                              stream=_Body(self, key, conn, resp, request),
                              extensions=resp.extensions)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()
