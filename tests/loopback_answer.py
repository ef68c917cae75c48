"""A keep-alive HTTP/1.1 server on a loopback port that answers every request with one fixed
body: the bench tests' stand-in for the servers whose order of calls they check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    pass


async def answering(body: bytes, on_request: Callable[[], None] = _nothing) -> asyncio.Server:
    """Serve on 127.0.0.1 (a free port); ``on_request`` runs as each request's body is read."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            size = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(size)
            on_request()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)
