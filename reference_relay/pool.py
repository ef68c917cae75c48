"""The transport behind the relay's one pooled httpx.AsyncClient: lean HTTP/1.1 keep-alive.

Why not httpx's default transport (httpcore + h11 + anyio): profiled on the relay's hot path it
cost about 1.1-1.7 ms of CPU per upstream call on the benchmark machine, most of the relay's own
budget, and its pool re-scans every connection on every request and response close (with 20
concurrent calls that scan alone cost more than the relay's own work). This transport keeps the
httpx.AsyncClient API (requests, responses, streaming, timeouts, content decoding, errors are
httpx's) and implements only the wire: HTTP/1.1 over asyncio streams (TLS through asyncio's
ssl support), a per-origin stack of idle connections taken in O(1), a semaphore bounding the
calls in flight, and the request head and body sent in one write.

Supported: request bodies of known length (what the relay sends), responses framed by
Content-Length, chunked transfer coding or connection close; keep-alive unless either side says
close. Not supported (not needed upstream): HTTP/2, proxies, 1xx interim responses other than
being skipped, request bodies streamed without a length.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx

MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
_SIZE, _DATA, _CRLF, _TRAILER = range(4)  # chunked decoding states
Key = tuple[str, str, int]


class _Conn:
    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0
        self.reused = False

    def usable(self, now: float, expiry: float) -> bool:
        """Still open and silent: a byte or EOF on an idle connection means the server is
        closing it (it cannot be the answer to anything)."""
        return (now - self.idle_since < expiry and not self.writer.is_closing()
                and not self.reader.at_eof() and not self.reader._buffer)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.writer.close()


def _timeout(request: httpx.Request, kind: str) -> float | None:
    value = request.extensions.get("timeout", {}).get(kind)
    return None if value is None else float(value)


class _Body(httpx.AsyncByteStream):
    """A response body read off the connection; at its end the connection goes back to the
    pool (keep-alive) or is closed; closed early, the connection is closed."""

    def __init__(self, pool: Http1Pool, key: Key, conn: _Conn, request: httpx.Request,
                 length: int | None, chunked: bool, keep_alive: bool) -> None:
        self._pool, self._key, self._conn, self._request = pool, key, conn, request
        self._length, self._chunked, self._keep_alive = length, chunked, keep_alive
        self._done = False
        self._closed = False

    async def _read(self, n: int, exact: bool) -> bytes:
        reader = self._conn.reader
        try:
            async with asyncio.timeout(_timeout(self._request, "read")):
                return await (reader.readexactly(n) if exact else reader.read(n))
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the provider's answer",
                                    request=self._request) from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("the provider closed the connection mid-answer",
                                            request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__,
                                  request=self._request) from None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunked:
            async for data in self._dechunk():
                yield data
        elif self._length is not None:
            left = self._length
            while left:
                data = await self._read(min(left, READ_CHUNK), exact=False)
                if not data:
                    raise httpx.RemoteProtocolError("the provider closed the connection "
                                                    "mid-answer", request=self._request)
                left -= len(data)
                yield data
        else:  # delimited by the connection closing
            self._keep_alive = False
            while data := await self._read(READ_CHUNK, exact=False):
                yield data
        self._done = True

    async def _dechunk(self) -> AsyncIterator[bytes]:
        """Chunked transfer coding, decoded per socket read rather than per chunk: a stream
        of small events that arrive together comes out as one piece."""
        buf = bytearray()
        state, remaining = _SIZE, 0
        while True:
            out: list[bytes] = []
            pos = 0
            while True:
                if state == _SIZE or state == _TRAILER:
                    i = buf.find(b"\r\n", pos)
                    if i < 0:
                        if len(buf) - pos > MAX_HEAD_BYTES:
                            raise self._bad("chunk size line too long")
                        break
                    line, pos = bytes(buf[pos:i]), i + 2
                    if state == _TRAILER:
                        if line:
                            continue  # a trailer field: ignored
                        if pos != len(buf):
                            self._keep_alive = False  # bytes after the answer: do not reuse
                        if out:
                            yield b"".join(out)
                        return
                    try:
                        remaining = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise self._bad("bad chunk size") from None
                    state = _TRAILER if remaining == 0 else _DATA
                elif state == _DATA:
                    take = min(remaining, len(buf) - pos)
                    if not take:
                        break
                    out.append(bytes(buf[pos:pos + take]))
                    pos += take
                    remaining -= take
                    if not remaining:
                        state = _CRLF
                else:  # _CRLF after a chunk's data
                    if len(buf) - pos < 2:
                        break
                    if buf[pos:pos + 2] != b"\r\n":
                        raise self._bad("chunk not followed by CRLF")
                    pos += 2
                    state = _SIZE
            del buf[:pos]
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            data = await self._read(READ_CHUNK, exact=False)
            if not data:
                raise self._bad("the provider closed the connection mid-answer")
            buf += data

    def _bad(self, why: str) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(why, request=self._request)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool._release(self._key, self._conn, self._done and self._keep_alive)


class Http1Pool(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections per origin, O(1) per request (see the module doc)."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Key, list[_Conn]] = {}
        self._max = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._expiry = keepalive_expiry
        self._ssl = ssl_context

    def _release(self, key: Key, conn: _Conn, reusable: bool) -> None:
        if self._slots is not None:
            self._slots.release()
        if reusable and not conn.writer.is_closing():
            conn.idle_since = asyncio.get_running_loop().time()
            conn.reused = True
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()

    def _checkout(self, key: Key) -> _Conn | None:
        idle = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self, key: Key, request: httpx.Request) -> _Conn:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            ctx = self._ssl = self._ssl or httpx.create_ssl_context()
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=host if ctx else None,
                    limit=MAX_HEAD_BYTES)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}",
                                       request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Conn(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        try:
            async with asyncio.timeout(_timeout(request, "pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free upstream connection", request=request) from None
        try:
            body = await request.aread()
            head = self._head(request, body)
            conn = self._checkout(key)
            if conn is not None:
                try:
                    return await self._exchange(key, conn, request, head, body)
                except _Stale:
                    pass  # the server closed the idle connection as we reused it: retry once
            conn = await self._connect(key, request)
            try:
                return await self._exchange(key, conn, request, head, body)
            except _Stale:
                raise httpx.RemoteProtocolError("the provider closed the connection without "
                                                "answering", request=request) from None
        except BaseException:
            self._slots.release()
            raise

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
        has_length = False
        for name, value in request.headers.raw:
            low = name.lower()
            if low == b"content-length":
                has_length = True
            elif low == b"transfer-encoding":
                continue  # the whole body is known: always sent with a length
            lines.append(name + b": " + value)
        if not has_length and (body or request.method not in ("GET", "HEAD")):
            lines.append(b"content-length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _exchange(self, key: Key, conn: _Conn, request: httpx.Request, head: bytes,
                        body: bytes) -> httpx.Response:
        try:
            return await self._exchange_on(key, conn, request, head, body)
        except BaseException:
            conn.close()
            raise

    async def _exchange_on(self, key: Key, conn: _Conn, request: httpx.Request, head: bytes,
                           body: bytes) -> httpx.Response:
        try:
            conn.writer.write(head + body if len(body) < READ_CHUNK else head)
            if len(body) >= READ_CHUNK:
                conn.writer.write(body)
            async with asyncio.timeout(_timeout(request, "write")):
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending to the provider",
                                     request=request) from None
        except OSError as exc:
            if conn.reused:
                raise _Stale from None
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
        reader = conn.reader
        while True:
            try:
                async with asyncio.timeout(_timeout(request, "read")):
                    raw = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                raise httpx.ReadTimeout("timed out waiting for the provider's answer",
                                        request=request) from None
            except asyncio.IncompleteReadError as exc:
                if conn.reused and not exc.partial:
                    raise _Stale from None
                raise httpx.RemoteProtocolError("the provider closed the connection without "
                                                "answering", request=request) from None
            except asyncio.LimitOverrunError:
                raise httpx.RemoteProtocolError("the provider's response head is too large",
                                                request=request) from None
            except OSError as exc:
                if conn.reused:
                    raise _Stale from None
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
            status, reason, headers = self._parse_head(raw, request)
            if not 100 <= status < 200:
                break
        length: int | None = None
        chunked = False
        keep_alive = True
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError("bad content-length from the provider",
                                                    request=request) from None
            elif low == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif low == b"connection" and b"close" in value.lower():
                keep_alive = False
        if chunked:
            length = None
        if request.method == "HEAD" or status in (204, 304):
            length, chunked = 0, False
        stream = _Body(self, key, conn, request, length, chunked, keep_alive)
        return httpx.Response(status_code=status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    @staticmethod
    def _parse_head(raw: bytes, request: httpx.Request
                    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            if not parts[0].startswith(b"HTTP/1."):
                raise ValueError
            status = int(parts[1])
        except (ValueError, IndexError):
            raise httpx.RemoteProtocolError("the provider did not answer in HTTP/1.1",
                                            request=request) from None
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("bad header line from the provider",
                                                request=request)
            headers.append((name.strip(), value.strip()))
        return status, parts[2] if len(parts) > 2 else b"", headers

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Stale(Exception):
    """A reused keep-alive connection turned out to be closed before any answer."""
