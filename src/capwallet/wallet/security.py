"""Local security for pages served on 127.0.0.1: Host, Origin, session and CSRF checks.

Loopback is not a trust boundary for a browser: any web page can make the user's browser send
requests to 127.0.0.1. So, for the wallet's own endpoints:

* the Host header must name a loopback host (127.0.0.1, localhost, [::1]), or exactly the
  public host of a hosted wallet (``deployment.py``): a DNS-rebinding page reaches us under
  its own host name and is refused;
* a request that carries an Origin must come from the wallet's own origin, and wallet
  responses carry no CORS headers, so another origin can neither read nor change anything;
* pages need a session (``sessions.py``): a cookie is not enough, because browsers send it
  to every port of 127.0.0.1; the request must also carry the session's secret from the
  wallet origin's localStorage in a header, which only the wallet's own script can send;
* every state-changing form carries a CSRF token bound to the session, checked in constant
  time together with the Origin;
* pages forbid framing (clickjacking of the Approve button) and load nothing external.

The relay's /v1 endpoints get only the Host check here; their CORS is in ``cors.py``.
Some wallet paths are meant for web apps and carry their own CORS answer (``CROSS_ORIGIN``):
POST /token (for the origin of the code's own grant only, see oauth.py), the two public
discovery documents under /.well-known (any origin may read them, see discovery.py), and
GET /approvals/{id}/status, which a page polls with its token (for the origin of the token's
own grant only, see approvals.py).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capwallet.wallet.deployment import ORIGIN_SCOPE_KEY, Deployment

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_ORIGIN = frozenset({
    "/token", "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource",
})
APPROVAL_STATUS = re.compile(r"/approvals/[0-9a-f]{32}/status")
API_HEADERS: Mapping[str, str] = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}

PAGE_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the
    # page's own form posts, and the Origin check needs the real one.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
# The consent page opens in a popup from the app's page. With COOP same-origin the browser
# cuts the popup off from its opener, and the opener then reads popup.closed as true from the
# first moment: it cannot tell the user closing the consent window (popup_closed) from the
# consent page loading. unsafe-none keeps the link; what it gives the app is what window.open
# already gave it (navigate or close its own popup, read closed/length), nothing of the page:
# framing stays forbidden and the DOM stays cross-origin.
CONSENT_PAGE_HEADERS: Mapping[str, str] = {
    **PAGE_HEADERS, "cross-origin-opener-policy": "unsafe-none",
}


def split_host(host: str) -> tuple[str, str]:
    """'127.0.0.1:8750' -> ('127.0.0.1', '8750'); '[::1]:80' -> ('[::1]', '80')."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, ""
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else ""
    name, _, port = host.partition(":")
    return name, port


def is_loopback_host(host: str) -> bool:
    name, port = split_host(host.strip().lower())
    return name in LOOPBACK_HOSTS and (port == "" or port.isdigit())


def own_origin(headers: Headers) -> str:
    """The loopback origin a request came to (a hosted wallet's is its public URL: the
    middleware records it in the scope, and :func:`deployment.wallet_origin` reads it)."""
    return "http://" + headers.get("host", "").strip().lower()


def host_allowed(host: str, deployment: Deployment) -> bool:
    """Loopback names on a local wallet; exactly the public host on a hosted one."""
    public = deployment.public_host
    if public is None:
        return is_loopback_host(host)
    host = host.strip().lower()
    if hmac.compare_digest(host.encode(), public.encode()):
        return True
    default_port = ":443" if deployment.secure else ":80"
    return ":" not in public.rsplit("]", 1)[-1] and host == public + default_port


def same_origin_request(headers: Headers, mine: str | None = None) -> bool:
    """A state change must say where it came from, and that must be the wallet itself."""
    mine = own_origin(headers) if mine is None else mine
    origin = headers.get("origin")
    if origin is not None:
        return hmac.compare_digest(origin.lower().encode(), mine.encode())
    referer = headers.get("referer")
    if referer is not None:
        return referer.lower().startswith(mine + "/")
    return False


class LocalOnlyMiddleware:
    """Refuse requests whose Host is not loopback, and wallet requests from other origins.

    ``relay_prefixes`` are paths that belong to the relay: they get the Host check only (apps
    in a browser call the relay cross-origin, under ``cors.py``'s rules).
    """

    def __init__(self, app: ASGIApp, relay_prefixes: tuple[str, ...] = ("/v1/", "/healthz"),
                 deployment: Deployment | None = None):
        self.app = app
        self.relay_prefixes = relay_prefixes
        self.deployment = deployment or Deployment()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not host_allowed(headers.get("host", ""), self.deployment):
            why = ("this server answers only to 127.0.0.1/localhost"
                   if self.deployment.public_host is None
                   else f"this server answers only to {self.deployment.public_host}")
            await _refuse(scope, receive, send, why)
            return
        mine = self.deployment.public_origin or own_origin(headers)
        scope[ORIGIN_SCOPE_KEY] = mine
        path: str = scope.get("path", "")
        if path.startswith(self.relay_prefixes) or path == "/healthz":
            await self.app(scope, receive, send)
            return
        if path in CROSS_ORIGIN or APPROVAL_STATUS.fullmatch(path):
            await self.app(scope, receive, _with_headers(send, API_HEADERS, keep_cors=True))
            return
        origin = headers.get("origin")
        if origin is not None and origin.lower() != mine:
            await _refuse(scope, receive, send, "cross-origin requests to the wallet are refused")
            return

        page_headers = CONSENT_PAGE_HEADERS if path == "/authorize" else PAGE_HEADERS
        await self.app(scope, receive, _with_headers(send, page_headers, keep_cors=False))


def _with_headers(send: Send, extra: Mapping[str, str], *, keep_cors: bool) -> Send:
    """Add ``extra`` headers the response lacks; drop any CORS header unless ``keep_cors``."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = [
                (k, v) for k, v in message.get("headers", [])
                if keep_cors or not k.lower().startswith(b"access-control-")
            ]
            present = {k.lower() for k, _ in raw}
            for name, value in extra.items():
                if name.encode() not in present:
                    raw.append((name.encode(), value.encode()))
            message = {**message, "headers": raw}
        await send(message)

    return send_with_headers


async def _refuse(scope: Scope, receive: Receive, send: Send, why: str) -> None:
    response = PlainTextResponse(f"forbidden: {why}\n", status_code=403)
    await response(scope, receive, send)
