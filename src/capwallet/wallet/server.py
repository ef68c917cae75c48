"""The wallet server: the wallet's pages and the relay, one ASGI app on 127.0.0.1.

Routes:
    GET  /                      dashboard (session)          GET  /login?token=  sign in
    GET  /authorize             consent page                 POST /authorize     the answer
    POST /token                 code + PKCE verifier -> token and relay URL (CORS: the
                                grant's own origin only)
    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata (public, any origin)
    GET  /.well-known/oauth-protected-resource     RFC 9728 metadata for the relay (public)
    POST /grants/{id}/revoke    revoke (session + CSRF)      GET  /api/usage     JSON (session)
    GET  /approvals             pending approvals (session)
    POST /approvals/{id}/approve|deny                        (session + CSRF)
    GET  /approvals/{id}/status the app polls (its token in Authorization)
    POST /resource/check        an app's resource server checks a scope (token in Authorization)
    /v1/..., /healthz           the relay, with CORS for the origins of live grants only

Everything sits behind LocalOnlyMiddleware (Host and Origin checks, page security headers).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from capwallet.wallet import approvals, dashboard, discovery, oauth
from capwallet.wallet.context import WalletContext
from capwallet.wallet.cors import GrantedOriginsCors
from capwallet.wallet.security import SESSION_COOKIE, SESSION_MAX_AGE, LocalOnlyMiddleware


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


async def login(request: Request) -> Response:
    """Trade the login link's secret for a session cookie, then drop the secret from the URL."""
    ctx = _ctx(request)
    offered = request.query_params.get("token", "")
    if not offered or not ctx.sessions.check_login(offered):
        return ctx.pages.error(
            request, "This sign-in link is not valid",
            "Use the link that `capwallet serve` printed most recently.", status=403,
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, ctx.sessions.new_cookie(), max_age=SESSION_MAX_AGE, httponly=True,
        samesite="strict", path="/",
    )
    return response


async def stylesheet(request: Request) -> Response:
    return Response(_ctx(request).pages.css, media_type="text/css",
                    headers={"cache-control": "max-age=300"})


async def health(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")


def create_wallet_app(ctx: WalletContext, relay: ASGIApp | None = None) -> ASGIApp:
    """The wallet's ASGI app; ``relay`` (routes under /v1 and /healthz) is served alongside."""
    routes: list[BaseRoute] = [
        Route("/", dashboard.dashboard_page),
        Route("/login", login),
        Route("/static/wallet.css", stylesheet),
        Route("/authorize", oauth.authorize_page, methods=["GET"]),
        Route("/authorize", oauth.authorize_answer, methods=["POST"]),
        Route("/token", oauth.token_endpoint, methods=["POST"]),
        Route("/token", oauth.token_preflight, methods=["OPTIONS"]),
        Route(discovery.AUTHORIZATION_SERVER, discovery.authorization_server, methods=["GET"]),
        Route(discovery.AUTHORIZATION_SERVER, discovery.preflight, methods=["OPTIONS"]),
        Route(discovery.PROTECTED_RESOURCE, discovery.protected_resource, methods=["GET"]),
        Route(discovery.PROTECTED_RESOURCE, discovery.preflight, methods=["OPTIONS"]),
        Route("/grants/{grant_id:str}/revoke", dashboard.revoke, methods=["POST"]),
        Route("/api/usage", dashboard.usage_json),
        Route("/approvals", approvals.approvals_page),
        Route("/approvals/{request_id:str}", _approval_link),
        Route("/approvals/{request_id:str}/{verb:str}", _approval_verb, methods=["GET", "POST"]),
        Route("/resource/check", approvals.resource_check, methods=["POST"]),
    ]
    if relay is not None:
        origins = GrantedOriginsCors(relay, lambda: ctx.grants.live_origins(ctx.now()))
        routes.append(Mount("/", app=origins))
    else:
        routes.append(Route("/healthz", health))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            inner = getattr(getattr(relay, "router", None), "lifespan_context", None)
            if inner is not None:
                await stack.enter_async_context(inner(relay))
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.wallet = ctx
    return LocalOnlyMiddleware(app, deployment=ctx.deployment)


async def _approval_link(request: Request) -> Response:
    """The link the relay puts in a confirmation_required answer: {wallet}/approvals/{id}."""
    rid = request.path_params["request_id"]
    if not rid.isalnum():
        return Response("not found\n", status_code=404, media_type="text/plain")
    return RedirectResponse(f"/approvals#approval-{rid}", status_code=303)


async def _approval_verb(request: Request) -> Response:
    verb = request.path_params["verb"]
    if request.method == "GET" and verb == "status":
        return await approvals.approval_status(request)
    if request.method == "POST" and verb in ("approve", "deny"):
        return await approvals.decide(request)
    return Response("not found\n", status_code=404, media_type="text/plain")


def login_url(base_url: str, ctx: WalletContext) -> str:
    return f"{base_url.rstrip('/')}/login?token={ctx.sessions.login_secret}"


def new_login_secret() -> str:
    return secrets.token_urlsafe(24)


__all__: list[Any] = ["create_wallet_app", "login_url"]
