"""The listening socket both servers here (the relay and the fake provider) run on, its URL,
and serving on it with the "NAME listening on URL" line that tests and benchmarks wait for."""

from __future__ import annotations

import asyncio
import socket

import uvicorn


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket created with proto IPPROTO_TCP explicitly: asyncio only turns on
    TCP_NODELAY for sockets that say so, and without it every small response waits ~40 ms on
    Nagle's algorithm and delayed ACKs (uvicorn writes the head and the body separately)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_announced(server: uvicorn.Server, sock: socket.socket, name: str) -> None:
    """Serve on ``sock``; once the server accepts connections, print ``NAME listening on
    URL`` (the first line on stdout, read by whoever started the process)."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.002)
    if server.started:
        print(f"{name} listening on {url(sock)}", flush=True)
    await task
