"""A bare forwarding proxy on the relay's own serving stack: the floor under bench/relay.py.

    python bench/passthrough.py --upstream http://127.0.0.1:PORT/v1 --key sk-... [--port N]

It is the relay with the capability work taken out: the same uvicorn server (uvloop, httptools,
reference_relay.http_limits.BoundedHttpToolsProtocol), the same Starlette app shape (the
relay's RequestGuard middleware, a router, a plain ASGI endpoint), the same body read under a
deadline and the same upstream pool (reference_relay.pool). A call is read, parsed as JSON (a
proxy routes by model), forwarded with the provider key and answered with the provider's body.
No token, no store, no pricing, no metering, no ledger.

A streamed call (``"stream": true``) is passed on as it arrives: the head once the provider's
has come, then each piece the pool reads, sent at once through the server's send_now
(reference_relay.coalesce), as the relay sends a stream; only the relay's metering, its pump
task and its settlement are missing. bench/relay.py's stream rounds time it as the floor of
the stream's first byte.

bench/relay.py runs it beside the relay, so each run shows how much of the relay's cost per
call is serving and forwarding on this stack (what any Python proxy here pays) and how much is
the capability logic on top: verification, one store read, reservation, settlement, ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import sys
from collections.abc import Callable
from contextlib import nullcontext
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from reference_relay.app import RequestGuard
from reference_relay.coalesce import SEND_NOW_SCOPE_KEY
from reference_relay.http_limits import BoundedHttpToolsProtocol
from reference_relay.listen import listen, serve_announced
from reference_relay.pool import Pool
from reference_relay.server_flags import body_here

BODY_TIMEOUT = 30.0
_NO_WAIT = nullcontext()
UPSTREAM_TIMEOUT = 60.0
_SSE_HEAD = [(b"cache-control", b"no-cache"),
             (b"content-type", b"text/event-stream; charset=utf-8")]


class Forward:
    """POST the request body to one upstream URL with the key, answer what it answers."""

    def __init__(self, upstream: str, key: str) -> None:
        parts = urlsplit(upstream)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = (parts.scheme, parts.hostname or "", port)
        self.head = (f"POST {parts.path}/chat/completions HTTP/1.1\r\nhost: {parts.netloc}\r\n"
                     f"content-type: application/json\r\naccept-encoding: identity\r\n"
                     f"authorization: Bearer {key}\r\n").encode("latin-1")
        self.pool = Pool(max_connections=256, connect_timeout=5.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        # As the relay reads it (reference_relay.app, Relay.handle): a body the server holds
        # whole already is read with no deadline to set.
        async with (_NO_WAIT if body_here(receive) else asyncio.timeout(BODY_TIMEOUT)):
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        raw = b"".join(chunks)
        body = json.loads(raw)
        if not isinstance(body.get("model"), str):
            response = Response(b'{"error":"no model"}', status_code=400)
            await response(scope, receive, send)
            return
        if body.get("stream") is True:
            await self.stream(scope, send, raw)
            return
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            upstream = await self.pool.request(
                self.origin, b"%scontent-length: %d\r\n\r\n%s" % (self.head, len(raw), raw))
            try:
                body = await upstream.read()
            finally:
                upstream.close()
        # The answer as raw ASGI messages, as the relay sends a provider's answer
        # (reference_relay.calls._SettleAfterSend), not through a Starlette Response.
        await send({"type": "http.response.start", "status": upstream.status, "headers": [
            (b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def stream(self, scope: Scope, send: Send, raw: bytes) -> None:
        """Pass a stream on as the relay does (reference_relay.calls._StreamPump), without
        metering: the head at once unless body bytes came with the provider's head (then
        with the first piece), each later piece as it comes."""
        send_now: Callable[[], None] | None = scope.get(SEND_NOW_SCOPE_KEY)
        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            upstream = await self.pool.request(
                self.origin, b"%scontent-length: %d\r\n\r\n%s" % (self.head, len(raw), raw))
            try:
                if upstream.status >= 300:
                    body = await upstream.read()
                    await send({"type": "http.response.start", "status": upstream.status,
                                "headers": [(b"content-length", b"%d" % len(body)),
                                            (b"content-type", b"application/json")]})
                    await send({"type": "http.response.body", "body": body})
                    return
                await send({"type": "http.response.start", "status": 200,
                            "headers": _SSE_HEAD})
                if send_now is not None and not upstream.buffered:
                    send_now()
                    send_now = None  # sent: every later write goes out as it is made
                async for chunk in upstream.iter_chunks():
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                    if send_now is not None:
                        send_now()
                        send_now = None
            finally:
                upstream.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://host:port/v1")
    parser.add_argument("--key", required=True, help="the provider API key to send")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = Starlette(
        routes=[Route("/v1/chat/completions", Forward(args.upstream, args.key),
                      methods=["POST"])],
        middleware=[Middleware(RequestGuard, allowed=("127.0.0.1", "localhost"))],
    )
    server = uvicorn.Server(uvicorn.Config(
        app, http=BoundedHttpToolsProtocol, loop="auto", lifespan="off", log_config=None,
        log_level="warning", access_log=False, server_header=False, proxy_headers=False))
    sock: socket.socket = listen("127.0.0.1", args.port)
    gc.freeze()  # as the relay does (reference_relay.__main__._tune_gc)
    gc.set_threshold(20_000, 50, 1000)
    with sock, asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_announced(server, sock, "passthrough"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
