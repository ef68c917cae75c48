"""A bound on the request bodies of the wallet's own endpoints: their size and their time.

Starlette reads a body whole (``request.body()``, ``request.form()``) with no bound on either.
A hosted wallet takes requests from anyone on the internet, and several of its endpoints read
the body before any check (POST /login, /signin/passkey, /resource/check, /token): a 200 MB
POST /login was held whole, and a body announced by its Content-Length and never sent held
its connection for ever (uvicorn bounds the head's time, reference_relay.http_limits, not the
body's). Every wallet body is small (a form, a passkey's answer, a sign-in secret), so here
each is read first, at most MAX_BODY bytes within ``timeout`` seconds, else refused (413
``request_too_large``, 408 ``request_timeout``, JSON) before the endpoint runs; the endpoint
then reads the body from memory.

The relay's routes (/v1/...) are passed through untouched: the relay bounds its own bodies
(max_body_bytes, body_timeout) as it reads them, and a model call's body may be far larger.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 256 * 1024  # bytes; a passkey's attestation with its certificates is a few KB
BODY_TIMEOUT = 30.0  # seconds for the whole body, from the end of the head
RELAY_PREFIX = "/v1/"


async def _refuse(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: the wallet's request bodies read whole, bounded (see the module doc)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY,
                 timeout: float = BODY_TIMEOUT) -> None:
        if max_bytes <= 0 or timeout <= 0:
            raise ValueError("the body limits must be positive")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(RELAY_PREFIX):
            await self.app(scope, receive, send)
            return
        too_large = (f"the request body is larger than the wallet's limit of "
                     f"{self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _refuse(send, 413, "request_too_large", too_large)
                return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away: no one to answer
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await _refuse(send, 413, "request_too_large", too_large)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(send, 408, "request_timeout", f"the request body did not arrive "
                          f"within {self.timeout:g} seconds")
            return
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks),
                                 "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)
