"""CORS for the relay inside the wallet server: only origins the user granted, nothing else.

A web app that the user granted (its origin is on an active, unexpired grant) may call the
relay from the browser with its token. Every other origin gets no CORS headers at all, so the
browser keeps the response from it. The allowed set is read per request, so a revoked grant
loses CORS at once.

A page on a public origin calling the relay on 127.0.0.1 triggers Chromium's Private (Local)
Network Access preflight, which carries ``Access-Control-Request-Private-Network: true``;
for a granted origin the answer says ``Access-Control-Allow-Private-Network: true``.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Any request header (the SDKs add their own x-stainless-*, anthropic-beta, ... and change
# them between versions); Authorization must be named, a "*" does not cover it. The token
# travels in a header and no cookie is involved, so this gives a granted page nothing more.
ALLOW_HEADERS = "*, authorization"
# What a page may read from the relay's answers: the same list the stand-alone relay exposes
# (reference_relay.app._CORS_EXPOSE; tests/wallet/test_web_origin.py keeps them equal).
EXPOSE_HEADERS = (
    "x-capwallet-reason, x-capwallet-approval-request, x-capwallet-fx, x-capwallet-output-cap, "
    "retry-after, x-request-id, request-id"
)


class GrantedOriginsCors:
    def __init__(self, app: ASGIApp, allowed: Callable[[], frozenset[str]]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        granted = origin is not None and origin in self.allowed()
        if (scope["method"] == "OPTIONS" and origin is not None
                and "access-control-request-method" in headers):
            if not granted:
                await Response(status_code=403)(scope, receive, send)
                return
            answer = {
                "access-control-allow-origin": origin or "",
                "access-control-allow-methods": "GET, POST, OPTIONS",
                "access-control-allow-headers": ALLOW_HEADERS,
                "access-control-max-age": "600",
                "vary": "Origin",
            }
            if headers.get("access-control-request-private-network") == "true":
                answer["access-control-allow-private-network"] = "true"
            await Response(status_code=204, headers=answer)(scope, receive, send)
            return
        if not granted:
            await self.app(scope, receive, send)
            return

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = [(k, v) for k, v in message.get("headers", [])
                       if not k.lower().startswith(b"access-control-")]
                raw += [
                    (b"access-control-allow-origin", (origin or "").encode("latin-1")),
                    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_cors)
