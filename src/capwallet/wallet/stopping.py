"""The wallet server's stop, in order: nothing closes a store that a request may still use.

The server's requests and the relay's background settlements use the stores until they end. A
store closed under them loses the settlement of a call the provider already answered (its
spend goes unrecorded, its reservation stays open until the lease ends), and a table closed
from another thread turns the next request into an error. So a stop goes:
  1. stop accepting; requests in flight get ``drain`` seconds (DRAIN_S) to finish;
  2. a request still running then is cut cleanly: 503 ``wallet_stopping`` in the OpenAI error
     shape (uvicorn's own cut is a 500 and a traceback), or its stream ends; its call still
     settles in the relay's task, which the relay's lifespan waits for (its own grace);
  3. on the server's own loop, whatever still runs gets up to SETTLE_S more to end; then the
     stores are closed there, by the loop and thread that used them;
  4. if something still runs then (or at once after a second Ctrl-C), the wallet says so and
     leaves the stores open: the process is ending anyway, and an SQLite file left open is
     safe (WAL), one closed under a write is not.
Once the server has begun serving, only it closes the stores; whoever waits for it (the
runner) leaves them alone if it does not end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capwallet.wallet.context import WalletContext

log = logging.getLogger("capwallet.wallet.stopping")

DRAIN_S = 30  # after a stop: requests in flight may finish (as the relay's settlements may)
SETTLE_S = 5.0  # then: what still runs, before the stores close or are left open

_STOPPING = json.dumps({"error": {
    "message": "the wallet is stopping: this request was still running when its grace ran out",
    "type": "server_error", "code": "wallet_stopping"}}).encode()


class CutAtStop:
    """Outermost ASGI layer: a request that the stop cancels before it answered gets a 503 with
    a stable reason code, not uvicorn's 500 (and no traceback in the log). Outside a stop a
    cancellation passes through unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.stopping or started or task is None:
                raise
            task.uncancel()
            log.warning("wallet stopping: cut %s %s, still running after the grace",
                        scope.get("method", ""), scope.get("path", ""))
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": _STOPPING})


class WalletServer(uvicorn.Server):
    """uvicorn's server plus the ordered stop (module docstring): when serving ends, the stores
    are closed on the server's own loop once no request or relay task still runs.

    Signals are the caller's (the runner's SIGINT/SIGTERM handlers call ``handle_exit``):
    uvicorn's own capture raised the signal again when serving ended, which ended the process
    (SIGTERM) or interrupted this stop (SIGINT) before the stores closed."""

    def __init__(self, config: uvicorn.Config, ctx: WalletContext, relay: ASGIApp | None,
                 cut: CutAtStop) -> None:
        super().__init__(config)
        self.ctx = ctx
        self.relay = getattr(getattr(relay, "state", None), "relay", None)
        self.cut = cut
        self.entered = False  # serve() began: from then on it alone closes the stores
        self.stores_closed = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.entered = True
        try:
            await super().serve(sockets)
        finally:
            await self._close_when_idle()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.cut.stopping = True
        if self.server_state.tasks and not self.force_exit:
            log.warning("wallet stopping: waiting up to %s s for %d request(s) in flight "
                        "(Ctrl-C again to stop now)", self.config.timeout_graceful_shutdown,
                        len(self.server_state.tasks))
        await super().shutdown(sockets)

    def _running(self) -> list[asyncio.Task[Any]]:
        """What may still use the stores: requests, the relay's settlements and its sweeper."""
        tasks = list(self.server_state.tasks)
        if self.relay is not None:
            tasks += list(self.relay.tasks)
            if self.relay.sweeper is not None:
                self.relay.sweeper.cancel()  # done already unless a forced exit skipped that
                tasks.append(self.relay.sweeper)
        return [t for t in tasks if not t.done()]

    async def _close_when_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        running = self._running()
        while running and not self.force_exit and loop.time() < deadline:
            await asyncio.wait(running, timeout=deadline - loop.time())
            running = self._running()  # a cancelled request may have started a settlement
        if running:
            log.error("wallet stopping: %d request(s) or settlement(s) still running; the "
                      "stores are left open (closing them under a call could lose its "
                      "settlement)", len(running))
            return
        await close_stores(self.ctx)
        self.stores_closed = True


async def close_stores(ctx: WalletContext) -> None:
    """Close the wallet's relay store (on the calling loop) and its tables."""
    try:
        await ctx.store.close()
    finally:
        ctx.grants.close()
        if ctx.signin is not None:
            ctx.signin.passkeys.close()
        ctx.sessions.store.close()
