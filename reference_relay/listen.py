"""The listening socket both servers here (the relay and the fake provider) run on."""

from __future__ import annotations

import socket


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
