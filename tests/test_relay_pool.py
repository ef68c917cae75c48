"""The relay's upstream connection pool against a raw loopback HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from reference_relay.pool import Http1Pool

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


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Http1Pool(max_connections=8),
                                 timeout=httpx.Timeout(5)) as c:
        yield c


async def test_keep_alive_reuses_one_connection(client: httpx.AsyncClient) -> None:
    srv = Server()
    async with srv as url:
        for i in range(30):
            r = await client.post(url + "/echo", content=b"x" * i)
            assert r.status_code == 200 and r.content == b"x" * i
        assert srv.connections == 1
        # Head and body went out in one write: the server read them together.
        assert srv.heads[-1].startswith(b"POST /echo HTTP/1.1\r\n")


async def test_concurrency_is_bounded_and_connections_reused(
        client: httpx.AsyncClient) -> None:
    srv = Server()
    srv.stall = 0.02
    async with srv as url:
        rs = await asyncio.gather(*(client.post(url + "/echo", content=b"%d" % i)
                                    for i in range(40)))
        assert [r.content for r in rs] == [b"%d" % i for i in range(40)]
        assert srv.connections <= 8
        before = srv.connections
        await asyncio.gather(*(client.post(url + "/echo", content=b"y") for _ in range(8)))
        assert srv.connections == before


async def test_server_closing_idle_connections(client: httpx.AsyncClient) -> None:
    srv = Server()
    srv.close_after_reply = True
    async with srv as url:
        for _ in range(5):
            r = await client.post(url + "/echo", content=b"z")
            assert r.content == b"z"
            await asyncio.sleep(0.01)  # the close reaches the idle connection
        assert srv.connections == 5


async def test_streamed_chunked_body(client: httpx.AsyncClient) -> None:
    srv = Server()
    async with srv as url:
        async with client.stream("POST", url + "/chunked", content=b"") as r:
            parts = [p async for p in r.aiter_bytes()]
        assert b"".join(parts) == b"abcde"
        r2 = await client.post(url + "/echo", content=b"after")
        assert r2.content == b"after" and srv.connections == 1


async def test_chunked_body_in_any_pieces(client: httpx.AsyncClient) -> None:
    srv = Server()
    async with srv as url:
        for _ in range(2):
            async with client.stream("POST", url + "/trickle", content=b"") as r:
                body = b"".join([p async for p in r.aiter_bytes()])
            assert body == b"hello " + b"w" * 16
        assert srv.connections == 1  # trailers consumed, connection reused


async def test_errors_are_httpx_errors(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.post("http://127.0.0.1:9/echo", content=b"")
    srv = Server()
    srv.stall = 1.0
    async with srv as url:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url + "/echo", content=b"", timeout=httpx.Timeout(5, read=0.1))
        srv.stall = 0
        r = await client.post(url + "/echo", content=b"ok")  # the slot was given back
        assert r.content == b"ok"


async def test_abandoned_stream_closes_its_connection(client: httpx.AsyncClient) -> None:
    srv = Server()
    async with srv as url:
        async with client.stream("POST", url + "/chunked", content=b"") as r:
            assert r.status_code == 200  # closed without reading the body
        r2 = await client.post(url + "/echo", content=b"next")
        assert r2.content == b"next"


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
    try:
        async with httpx.AsyncClient(transport=Http1Pool(max_connections=4,
                                                         ssl_context=client_ctx)) as c:
            for i in range(5):
                r = await c.post(f"https://127.0.0.1:{port}/echo", content=b"tls%d" % i)
                assert r.content == b"tls%d" % i
        assert srv.connections == 1
        # An untrusted certificate is refused.
        async with httpx.AsyncClient(transport=Http1Pool(max_connections=4)) as c:
            with pytest.raises(httpx.ConnectError):
                await c.post(f"https://127.0.0.1:{port}/echo", content=b"x")
    finally:
        server.close()
