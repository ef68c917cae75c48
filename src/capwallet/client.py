"""Connect a Python app to the user's wallet: ``connect(...)`` does the whole OAuth exchange.

    conn = capwallet.client.connect("Blog Assistant", {
        "providers": ["openai"], "models": ["gpt-4o-mini"],
        "budget": {"amount": "5.00", "currency": "USD", "period": "month"},
    })
    client = openai.OpenAI(api_key=conn.token, base_url=conn.openai_base_url)

It finds the wallet's endpoints (``discover``: RFC 8414 metadata at the wallet, or RFC 9728
metadata at a relay naming its wallet), makes a PKCE verifier, listens on a loopback port
(RFC 8252: a native app, so the grant has no web origin), opens the consent page in the
browser, waits for the redirect, checks ``state`` and ``iss``, and exchanges the code for the
token and the relay URL. Also here: polling for a human approval, and the call an app's own
resource server makes to check a scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

DEFAULT_WALLET_URL = "http://127.0.0.1:8750"
ENV_WALLET_URL = "CAPWALLET_URL"
APPROVAL_HEADER = "X-Capwallet-Approval"
EXCHANGE_TIMEOUT = 30.0  # seconds for one request to the wallet (the user's wait has its own)


class ConnectError(Exception):
    """The wallet said no, or the exchange failed; ``error`` is the OAuth error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class ApprovalDenied(Exception):
    """The user denied the approval request, or it expired (fail closed)."""


@dataclass(frozen=True)
class Connection:
    token: str = field(repr=False)
    relay_url: str
    grant_id: str
    wallet_url: str
    granted: dict[str, Any]
    expires_in: int | None

    @property
    def openai_base_url(self) -> str:
        """base_url for the openai SDK."""
        return self.relay_url.rstrip("/") + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """base_url for the anthropic SDK."""
        return self.relay_url.rstrip("/")


AS_METADATA = "/.well-known/oauth-authorization-server"
PR_METADATA = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class WalletEndpoints:
    """Where a wallet takes requests: from its metadata, or the conventional paths."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    relay_url: str | None = None  # the capwallet_relay_url extension, when published
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


def discover(url: str, *, timeout: float = 10.0) -> WalletEndpoints:
    """The wallet behind ``url``, a wallet's or a relay's URL.

    Tries the wallet's RFC 8414 metadata at ``url``; if there is none, the relay's RFC 9728
    metadata, whose ``authorization_servers`` names the wallet. A wallet without metadata
    (an older one) gets the conventional /authorize and /token. Raises ConnectError
    ("wallet_unreachable" naming the URL tried, or "invalid_metadata")."""
    base = url.rstrip("/")
    doc = _metadata(f"{base}{AS_METADATA}", timeout)
    if doc is not None:
        return _endpoints(base, doc, f"{base}{AS_METADATA}")
    resource = _metadata(f"{base}{PR_METADATA}", timeout)
    if resource is None:
        return WalletEndpoints(base, f"{base}/authorize", f"{base}/token")
    servers = resource.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise ConnectError("invalid_metadata",
                           f"{base}{PR_METADATA} names no authorization server")
    wallet = servers[0].rstrip("/")
    doc = _metadata(f"{wallet}{AS_METADATA}", timeout)
    if doc is None:
        return WalletEndpoints(wallet, f"{wallet}/authorize", f"{wallet}/token", base)
    found = _endpoints(wallet, doc, f"{wallet}{AS_METADATA}")
    return WalletEndpoints(found.issuer, found.authorization_endpoint, found.token_endpoint,
                           found.relay_url or base, found.metadata)


def _metadata(url: str, timeout: float) -> dict[str, Any] | None:
    try:
        r = httpx.get(url, headers={"accept": "application/json"}, timeout=timeout,
                      follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ConnectError("wallet_unreachable",
                           f"cannot reach {url} ({type(exc).__name__}): is the wallet "
                           "running? (capwallet serve)") from None
    if r.status_code == 404:
        return None
    body = _json_body(r)
    if r.status_code != 200 or not body:
        raise ConnectError("wallet_unreachable",
                           f"{url} answered HTTP {r.status_code}, not JSON metadata")
    return body


def _endpoints(base: str, doc: dict[str, Any], url: str) -> WalletEndpoints:
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != base:
        raise ConnectError("invalid_metadata",
                           f"{url} names issuer {issuer!r}, not {base} (RFC 8414 section 3.3)")
    auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
    if not isinstance(auth, str) or not isinstance(token, str):
        raise ConnectError("invalid_metadata", f"{url} lacks the authorization or token "
                           "endpoint")
    relay = doc.get("capwallet_relay_url")
    return WalletEndpoints(base, auth, token, relay if isinstance(relay, str) else None, doc)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) as RFC 7636 section 4 describes."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Callback:
    """A one-shot loopback HTTP listener for the authorization response."""

    def __init__(self, app_name: str, host: str = "127.0.0.1") -> None:
        self.params: dict[str, str] | None = None
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/callback" or outer.done.is_set():
                    self.send_error(404)
                    return
                query = parse_qs(parts.query, keep_blank_values=True)
                outer.params = {k: v[0] for k, v in query.items() if v}
                ok = "code" in outer.params
                body = _PAGE.format(
                    title="You're connected" if ok else "Not connected",
                    text=(f"{html.escape(app_name)} can now use AI within the limits you set. "
                          if ok else "The request was not approved. ")
                    + "You can close this tab.",
                ).encode("utf-8")
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)
                outer.done.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query holds the code: keep it out of logs

        self.server = HTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def redirect_uri(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/callback"

    def __enter__(self) -> _Callback:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;background:#f5f6f8;color:#111827;display:flex;
justify-content:center;padding-top:15vh}}div{{background:#fff;border:1px solid #e5e7eb;
border-radius:12px;padding:2rem 2.5rem;max-width:28rem}}</style></head>
<body><div><h1>{title}</h1><p>{text}</p></div></body></html>"""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def connect(
    app_name: str,
    permissions: Mapping[str, Any],
    *,
    wallet_url: str | None = None,
    open_browser: Callable[[str], object] | None = webbrowser.open,
    timeout: float = 300.0,
    say: Callable[[str], object] = _stderr,
) -> Connection:
    """Ask the user's wallet for permission to use AI; returns the token and relay URL.

    ``permissions`` is the authorization_details object (see capwallet.wallet.permissions);
    its "type" may be omitted. ``wallet_url`` is the wallet's or a relay's URL (default
    $CAPWALLET_URL, else the local wallet); the rest is discovered. The consent link is
    printed at once (``say``, standard error by default) before ``open_browser`` opens it, so
    the user can open it anywhere if no browser appears; ``open_browser=None`` only prints it.
    Waits ``timeout`` seconds for the answer, and says when it stops waiting. Raises
    ConnectError if the wallet cannot be reached, the user denies, the wait ends, or the
    exchange fails.
    """
    wallet = discover(wallet_url or os.environ.get(ENV_WALLET_URL) or DEFAULT_WALLET_URL)
    base = wallet.issuer
    details = {"type": "capwallet_ai", **permissions}
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    with _Callback(app_name) as cb:
        query = {
            "response_type": "code", "app_name": app_name, "redirect_uri": cb.redirect_uri,
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
            "authorization_details": _json([details]),
        }
        url = f"{wallet.authorization_endpoint}?{urlencode(query)}"
        say(f"Open this link to approve: {url}")
        wport = urlsplit(url).port or 80
        cport = urlsplit(cb.redirect_uri).port
        say(f"Waiting up to {_seconds(timeout)} for your answer. No browser opens? Paste the link "
            "into a browser on this computer that is signed in to your wallet. From another "
            f"device, forward both ports first: ssh -L {wport}:127.0.0.1:{wport} "
            f"-L {cport}:127.0.0.1:{cport} <this computer>")
        opened = open_browser(url) if open_browser is not None else False
        if open_browser is not None and opened is False:
            say("No browser opened here: open the link above yourself.")
        if not cb.done.wait(timeout):
            say(f"Stopped waiting: no answer from the wallet in {_seconds(timeout)}. "
                "Run again for a new link.")
            raise ConnectError("timeout", f"no answer from the wallet in {_seconds(timeout)}")
        params = cb.params or {}
    if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
        raise ConnectError("invalid_state", "the answer does not match this request")
    if params.get("iss") and params["iss"].rstrip("/") != base:
        raise ConnectError("invalid_issuer", "the answer came from another wallet")
    if "error" in params:
        raise ConnectError(params["error"], params.get("error_description", ""))
    try:
        r = httpx.post(wallet.token_endpoint, data={
            "grant_type": "authorization_code", "code": params.get("code", ""),
            "redirect_uri": cb.redirect_uri, "code_verifier": verifier,
        }, timeout=EXCHANGE_TIMEOUT)
    except httpx.HTTPError as exc:
        raise ConnectError("wallet_unreachable",
                           f"approved, but cannot reach {wallet.token_endpoint} to collect the "
                           f"token ({type(exc).__name__}): is the wallet still running? "
                           "Run again for a new link.") from None
    body = _json_body(r)
    if r.status_code != 200:
        raise ConnectError(str(body.get("error", "token_error")),
                           str(body.get("error_description", f"HTTP {r.status_code}")))
    granted = body.get("authorization_details") or [{}]
    return Connection(
        token=str(body["access_token"]), relay_url=str(body["relay_url"]),
        grant_id=str(body["grant_id"]), wallet_url=base, granted=dict(granted[0]),
        expires_in=body.get("expires_in"),
    )


def _seconds(t: float) -> str:
    t = round(t)
    return f"{t // 60} minutes" if t >= 120 and t % 60 == 0 else f"{t} s"


def wait_for_approval(
    wallet_url: str, token: str, approval_request_id: str, *, timeout: float = 300.0,
    poll: float = 1.0,
) -> str:
    """Poll the wallet until the user answers; return the cwa1_ approval, or raise."""
    url = f"{wallet_url.rstrip('/')}/approvals/{approval_request_id}/status"
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(url, headers={"authorization": f"Bearer {token}"},
                          timeout=EXCHANGE_TIMEOUT)
        except httpx.HTTPError as exc:  # fail closed, and say where it failed
            raise ApprovalDenied(f"cannot reach the wallet at {url} ({type(exc).__name__}); "
                                 "no approval") from None
        body = _json_body(r)
        if r.status_code != 200:
            raise ApprovalDenied(str(body.get("message", f"HTTP {r.status_code}")))
        status = body.get("status")
        if status == "approved" and isinstance(body.get("approval"), str):
            return str(body["approval"])
        if status != "pending":
            raise ApprovalDenied(f"the approval request was {status}")
        if time.monotonic() >= deadline:
            raise ApprovalDenied("no answer from the user in time")
        time.sleep(poll)


def check_scope(
    wallet_url: str, token: str, scopes: list[str], digest: bytes, *, summary: str = "",
    approval: str | None = None,
) -> dict[str, Any]:
    """For an app's resource server: may ``token`` use ``scopes`` for this exact request?

    ``digest`` is capwallet.approval.request_digest(method, path, body) of the request, and
    ``summary`` the words the user is shown. The wallet binds an approval to both (and to the
    scopes), so the retry with ``approval`` must send the same scopes, digest and summary. The
    answer has "allowed", "reason", and for an ask-first scope "approval_request_id".
    """
    url = f"{wallet_url.rstrip('/')}/resource/check"
    try:
        r = httpx.post(
            url, headers={"authorization": f"Bearer {token}"},
            json={"scopes": scopes, "digest": digest.hex(), "summary": summary,
                  **({"approval": approval} if approval else {})},
            timeout=EXCHANGE_TIMEOUT,
        )
    except httpx.HTTPError as exc:  # fail closed: no answer is no permission
        return {"allowed": False, "reason": "wallet_unreachable",
                "message": f"cannot reach the wallet at {url} ({type(exc).__name__})"}
    body = _json_body(r)
    body.setdefault("allowed", False)
    return body


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_body(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
