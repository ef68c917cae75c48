"""The relay's upstream connection pool against a raw loopback HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from reference_relay.pool import ConnectFailed, Pool, ProtocolFailure, Response

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """Keep-alive HTTP/1.1 server: counts connections; can close each one after a reply,
    stall before replying, or stream a chunked body."""

    def __init__(self) -> None:
        self.connections = 0
        self.close_after_reply = False
        self.stall = 0.0
        self.drop_next = False  # close the connection on the next request, answering nothing
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                if self.drop_next:
                    self.drop_next = False
                    break
                if self.stall:
                    await asyncio.sleep(self.stall)
                if b"/trickle" in head:
                    raw = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                           b"5;ext=1\r\nhello\r\n1\r\n \r\n10\r\n" + b"w" * 16 +
                           b"\r\n0\r\nx-trailer: t\r\n\r\n")
                    for i in range(len(raw)):
                        writer.write(raw[i:i + 1])
                        await writer.drain()
                        if i % 7 == 0:
                            await asyncio.sleep(0.001)
                elif b"/close-delimited" in head:
                    writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
                    await writer.drain()
                    break
                elif b"/cut" in head:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                    await writer.drain()
                    break
                elif b"/garbage" in head:
                    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                    await writer.drain()
                    break
                elif b"/interim" in head:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                 b"content-length: 2\r\nx-id: 7\r\n\r\nok")
                elif b"/big" in head:
                    data = b"b" * 1_000_000
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(data), data))
                elif b"/chunked" in head:
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


POOL_MAX = 8


def request(url: str, path: str, body: bytes) -> tuple[tuple[str, str, int], bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    data = (b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (path.encode(), host.encode(), len(body), body))
    return ("http", host, int(port)), data


async def post(pool: Pool, url: str, path: str, body: bytes = b"") -> bytes:
    resp = await pool.request(*request(url, path, body))
    try:
        assert resp.status == 200
        return await resp.read()
    finally:
        resp.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool(max_connections=POOL_MAX, connect_timeout=5)
    yield p
    await p.aclose()


async def test_keep_alive_reuses_one_connection(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        for i in range(30):
            assert await post(pool, url, "/echo", b"x" * i) == b"x" * i
        assert srv.connections == 1
        # Head and body went out in one write: the server read them together.
        assert srv.heads[-1].startswith(b"POST /echo HTTP/1.1\r\n")


async def test_concurrency_is_bounded_and_connections_reused(pool: Pool) -> None:
    srv = Server()
    srv.stall = 0.02
    async with srv as url:
        got = await asyncio.gather(*(post(pool, url, "/echo", b"%d" % i) for i in range(40)))
        assert got == [b"%d" % i for i in range(40)]
        assert srv.connections <= POOL_MAX
        before = srv.connections
        await asyncio.gather(*(post(pool, url, "/echo", b"y") for _ in range(POOL_MAX)))
        assert srv.connections == before


async def test_server_closing_idle_connections(pool: Pool) -> None:
    srv = Server()
    srv.close_after_reply = True
    async with srv as url:
        for _ in range(5):
            assert await post(pool, url, "/echo", b"z") == b"z"
            await asyncio.sleep(0.01)  # the close reaches the idle connection
        assert srv.connections == 5


async def test_reused_connection_closed_by_the_server_is_retried_once(pool: Pool) -> None:
    """The server closes its side just as the pool reuses the idle connection: the request
    goes again on a new connection instead of failing."""
    srv = Server()
    srv.close_after_reply = True
    async with srv as url:
        for _ in range(5):
            assert await post(pool, url, "/echo", b"again") == b"again"  # no sleep: races
        assert srv.connections == 5


async def started(pool: Pool, url: str, path: str, body: bytes = b"") -> tuple[bool, bytes]:
    """(whether Pool.start sent the request at once, the answer's body)."""
    origin, data = request(url, path, body)
    sent = pool.start(origin, data)
    resp = await pool.request(origin, data, sent)
    try:
        assert resp.status == 200
        return sent is not None, await resp.read()
    finally:
        resp.close()


async def test_start_sends_at_once_on_an_idle_connection(pool: Pool) -> None:
    """Pool.start writes the request with no await when an idle connection is open, and
    request() then waits for that answer; with none it sends nothing (request() connects)."""
    srv = Server()
    async with srv as url:
        assert await started(pool, url, "/echo", b"first") == (False, b"first")  # no idle one
        for i in range(5):
            assert await started(pool, url, "/echo", b"n%d" % i) == (True, b"n%d" % i)
        assert srv.connections == 1
        # The request was on its way before anything was awaited: the server has it by the
        # time the loop next turns, without request() being called.
        origin, data = request(url, "/echo", b"early")
        sent = pool.start(origin, data)
        assert sent is not None
        for _ in range(100):
            if srv.heads[-1:] and b"content-length: 5" in srv.heads[-1]:
                break
            await asyncio.sleep(0.001)
        assert len(srv.heads) == 7
        resp = await pool.request(origin, data, sent)
        assert await resp.read() == b"early"
        resp.close()


async def test_start_takes_no_slot_from_a_waiting_request_and_gives_its_own_back() -> None:
    """start never jumps the queue for a connection slot, and a started request that fails
    gives its slot back like any other."""
    p = Pool(max_connections=1, connect_timeout=5)
    srv = Server()
    try:
        async with srv as url:
            origin, data = request(url, "/echo", b"x")
            assert await post(p, url, "/echo", b"warm") == b"warm"  # one idle connection
            srv.stall = 0.05
            busy = asyncio.ensure_future(post(p, url, "/echo", b"busy"))
            await asyncio.sleep(0.01)  # busy holds the only slot
            assert p.start(origin, data) is None
            waiting = asyncio.ensure_future(post(p, url, "/echo", b"waiting"))
            await asyncio.sleep(0)
            assert await busy == b"busy"
            # The slot went to the waiting request, not to a start in between.
            assert p.start(origin, data) is None
            assert await waiting == b"waiting"
            srv.stall = 0
            # A started request whose reused connection the server closes without answering
            # (the pool finds out only then) is sent once more on a new connection.
            connections = srv.connections
            srv.drop_next = True
            assert await started(p, url, "/echo", b"again") == (True, b"again")
            assert srv.connections == connections + 1
            # A started request abandoned by its caller's deadline gives the slot back.
            srv.stall = 1.0
            sent = p.start(origin, data)
            assert sent is not None
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await p.request(origin, data, sent)
            srv.stall = 0
            assert await post(p, url, "/echo", b"free") == b"free"
    finally:
        await p.aclose()


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    """A request cancelled while it waits for a slot, even one just handed the slot, leaves
    the slot to the next waiter: nothing is lost."""
    p = Pool(max_connections=1, connect_timeout=5)
    srv = Server()
    try:
        async with srv as url:
            busy = await p.request(*request(url, "/echo", b"busy"))
            doomed = asyncio.ensure_future(post(p, url, "/echo", b"doomed"))
            later = asyncio.ensure_future(post(p, url, "/echo", b"later"))
            await asyncio.sleep(0.01)  # both wait for the one slot
            assert await busy.read() == b"busy"
            busy.close()  # hands the slot to doomed...
            doomed.cancel()  # ...which is cancelled before it runs
            with pytest.raises(asyncio.CancelledError):
                await doomed
            async with asyncio.timeout(5):  # a lost slot would keep it waiting for ever
                assert await later == b"later"
            gone = asyncio.ensure_future(post(p, url, "/echo", b"gone"))
            gone.cancel()  # cancelled before it ever waits
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert await post(p, url, "/echo", b"still") == b"still"
    finally:
        await p.aclose()


async def test_streamed_chunked_body(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        resp = await pool.request(*request(url, "/chunked", b""))
        parts = [p async for p in resp.iter_chunks()]
        resp.close()
        assert b"".join(parts) == b"abcde"
        assert await post(pool, url, "/echo", b"after") == b"after"
        assert srv.connections == 1


async def test_chunked_body_in_any_pieces(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        for _ in range(2):
            resp = await pool.request(*request(url, "/trickle", b""))
            body = b"".join([p async for p in resp.iter_chunks()])
            resp.close()
            assert body == b"hello " + b"w" * 16
        assert srv.connections == 1  # trailers consumed, connection reused


async def test_interim_answer_skipped_and_headers_read(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        resp: Response = await pool.request(*request(url, "/interim", b""))
        assert resp.status == 200 and resp.header("x-id") == "7"
        assert await resp.read() == b"ok"
        resp.close()


async def test_body_delimited_by_close(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        assert await post(pool, url, "/close-delimited") == b"until the end"
        assert await post(pool, url, "/echo", b"next") == b"next"
        assert srv.connections == 2  # that connection could not be reused


async def test_large_body_with_backpressure(pool: Pool) -> None:
    """A body larger than the pool's buffer high-water mark: reading pauses and resumes."""
    srv = Server()
    async with srv as url:
        resp = await pool.request(*request(url, "/big", b""))
        total = 0
        async for part in resp.iter_chunks():
            total += len(part)
            await asyncio.sleep(0.001)  # a slow consumer
        resp.close()
        assert total == 1_000_000
        assert await post(pool, url, "/echo", b"still") == b"still"


async def test_failures_raise_pool_errors_and_give_the_slot_back(pool: Pool) -> None:
    with pytest.raises(ConnectFailed):
        await pool.request(("http", "127.0.0.1", 9), b"POST / HTTP/1.1\r\n\r\n")
    srv = Server()
    async with srv as url:
        for path in ("/cut", "/garbage"):
            with pytest.raises(ProtocolFailure):
                resp = await pool.request(*request(url, path, b""))
                try:
                    await resp.read()
                finally:
                    resp.close()
        srv.stall = 1.0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # the caller's deadline, as the relay sets it
                await post(pool, url, "/echo", b"")
        srv.stall = 0
        # Every slot was given back: as many calls at once as the pool allows still pass.
        got = await asyncio.gather(*(post(pool, url, "/echo", b"ok") for _ in range(POOL_MAX)))
        assert got == [b"ok"] * POOL_MAX


async def test_abandoned_stream_closes_its_connection(pool: Pool) -> None:
    srv = Server()
    async with srv as url:
        resp = await pool.request(*request(url, "/chunked", b""))
        assert resp.status == 200
        resp.close()  # without reading the body
        assert await post(pool, url, "/echo", b"next") == b"next"


async def test_https_with_keep_alive(tmp_path: object) -> None:
    """Providers are reached over TLS: a loopback TLS server with a self-signed certificate."""
    import pathlib
    import ssl
    import subprocess

    d = pathlib.Path(str(tmp_path))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    client_ctx = ssl.create_default_context(cafile=str(d / "cert.pem"))
    srv = Server()
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    origin = ("https", "127.0.0.1", port)
    try:
        p = Pool(max_connections=4, connect_timeout=5, ssl_context=client_ctx)
        for i in range(5):
            body = b"tls%d" % i
            resp = await p.request(origin, b"POST /echo HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                                   b"content-length: %d\r\n\r\n%s" % (len(body), body))
            assert await resp.read() == body
            resp.close()
        await p.aclose()
        assert srv.connections == 1
        # An untrusted certificate is refused (the default context: certifi's roots).
        p = Pool(max_connections=4, connect_timeout=5)
        with pytest.raises(ConnectFailed):
            await p.request(origin, b"POST /echo HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        await p.aclose()
    finally:
        server.close()
