"""The wallet server: the wallet's pages and the relay, one ASGI app on 127.0.0.1.

Routes:
    GET  /                      dashboard (session)          GET  /login#secret  sign in
    GET  /authorize             consent page                 POST /authorize     the answer
    POST /token                 code + PKCE verifier -> token and relay URL (CORS: the
                                grant's own origin only)
    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata (public, any origin)
    GET  /.well-known/oauth-protected-resource     RFC 9728 metadata for the relay (public)
    POST /grants/{id}/revoke    revoke (session + CSRF)      GET  /api/usage     JSON (session)
    GET  /api/pending           approvals waiting, a count (session; the dashboard polls it)
    GET  /approvals             pending approvals (session)
    POST /approvals/{id}/approve|deny                        (session + CSRF)
    GET  /approvals/{id}/status the app polls (its token in Authorization; CORS: the origin of
                                the token's own grant)
    POST /resource/check        an app's resource server checks a scope (token in Authorization)
    POST /logout                sign out (session + CSRF)    GET  /api/sessions  JSON (session)
    POST /api/sessions/{id}/end end one session (session + CSRF)
    /v1/..., /healthz           the relay, with CORS for the origins of live grants only

"(session)" is the cookie AND the x-capwallet-session header (sessions.py); pages that show
data answer a navigation with a data-less shell whose script fetches them (pages.py).
Everything sits behind LocalOnlyMiddleware (Host and Origin checks, page security headers);
the wallet's own request bodies are read whole first, bounded in size and time (body_limit).
While it runs, it deletes the total counters of grants expired over 2 days ago, when it starts
and hourly (capwallet.wallet.expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from capwallet.wallet import approvals, dashboard, discovery, json_input, oauth, passkeys
from capwallet.wallet.body_limit import BODY_TIMEOUT, BodyLimit
from capwallet.wallet.context import WalletContext
from capwallet.wallet.cors import GrantedOriginsCors
from capwallet.wallet.deployment import client_address, wallet_origin
from capwallet.wallet.expired import prune_forever
from capwallet.wallet.pages import STATIC, behind_shell, navigate
from capwallet.wallet.security import LocalOnlyMiddleware, same_origin_request


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


async def login_page(request: Request) -> Response:
    """The sign-in link, /login#<secret>: a shell whose script posts the secret (the fragment
    never reaches a server log or another port) and keeps the session secret it gets back."""
    return _ctx(request).pages.shell(request)


async def login(request: Request) -> Response:
    """Trade the sign-in secret for a session: the cookie on the response, the origin secret
    in the JSON body for the page's script to keep in localStorage."""
    ctx = _ctx(request)
    try:
        doc = json_input.loads(await request.body())
    except ValueError:
        doc = None
    offered = doc.get("secret") if isinstance(doc, dict) else None
    ours = same_origin_request(request.headers, wallet_origin(request))
    if not ours or not isinstance(offered, str) or not ctx.sessions.check_login(offered):
        return ctx.pages.error(
            request, "This sign-in link is not valid",
            "Use the sign-in link printed most recently in the terminal of this command:",
            status=403, command=ctx.pages.started_by,
        )
    label = request.headers.get("user-agent", "")
    if ctx.deployment.public_origin is not None:
        # On a server the console's link is for set-up, and works once: it may sit in a
        # journal that others read. Later sign-ins use a passkey (or the passphrase).
        ctx.sessions.login_secret = secrets.token_urlsafe(24)
        label = f"console link · {client_address(request)} · {label[:80]}"
    new = ctx.sessions.start(label=label)
    response = JSONResponse({"location": "/", "session": new.header_value},
                            headers={"cache-control": "no-store"})
    ctx.sessions.set_cookie(response, new)
    return response


async def logout(request: Request) -> Response:
    ctx = _ctx(request)
    form = await request.form()
    csrf = form.get("csrf")
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return ctx.pages.forbidden(request)
    response = navigate("/", forget=True)
    ctx.sessions.end_current(request, response)
    return response


async def sessions_json(request: Request) -> Response:
    """The browsers signed in to this wallet, for a page that lets the user end them."""
    ctx = _ctx(request)
    auth = ctx.sessions.current(request)
    if auth is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    return JSONResponse({
        "current": auth.session_id,
        "sessions": [s.to_json() for s in ctx.sessions.store.list()],
    }, headers={"cache-control": "no-store"})


async def end_session(request: Request) -> Response:
    ctx = _ctx(request)
    try:
        form = await request.form()
    except HTTPException as exc:  # the form parser's refusal (too many fields, one too large)
        return JSONResponse({"error": "invalid_request",
                             "message": f"the form cannot be read: {exc.detail}"},
                            status_code=400)
    csrf = form.get("csrf")
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return JSONResponse({"error": "forbidden"}, status_code=403)
    sid = request.path_params["session_id"]
    auth = ctx.sessions.current(request)
    if auth is not None and sid == auth.session_id:
        response = navigate("/", forget=True)
        ctx.sessions.end_current(request, response)
        return response
    ended = ctx.sessions.store.end(sid)
    if form.get("next") == "/sessions":
        return navigate("/sessions")  # the Sessions page's own form: show the list again
    return JSONResponse({"ended": ended}, status_code=200 if ended else 404)


async def sessions_page(request: Request) -> Response:
    """The browsers signed in to this wallet, each with an End button."""
    ctx = _ctx(request)
    auth = ctx.sessions.current(request)
    if auth is None:
        return ctx.pages.locked(request)
    return ctx.pages.render(request, "sessions.html", nav="sessions",
                            sessions=ctx.sessions.store.list(), current=auth.session_id)


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return Response(_ctx(request).pages.static[name], media_type=STATIC[name],
                    headers={"cache-control": "max-age=300"})


async def health(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")


def create_wallet_app(ctx: WalletContext, relay: ASGIApp | None = None, *,
                      body_timeout: float = BODY_TIMEOUT) -> ASGIApp:
    """The wallet's ASGI app; ``relay`` (routes under /v1 and /healthz) is served alongside.
    The wallet's own request bodies are bounded (body_limit: MAX_BODY, ``body_timeout``)."""
    routes: list[BaseRoute] = [
        Route("/", behind_shell(dashboard.dashboard_page)),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/sessions", sessions_json),
        Route("/sessions", behind_shell(sessions_page)),
        Route("/passkeys", behind_shell(passkeys.passkeys_page)),
        Route("/passkeys/register/options", passkeys.register_options, methods=["POST"]),
        Route("/passkeys/register", passkeys.register, methods=["POST"]),
        Route("/passkeys/{credential_id:str}/remove", passkeys.remove, methods=["POST"]),
        Route("/signin/passkey/options", passkeys.signin_options, methods=["POST"]),
        Route("/signin/passkey", passkeys.signin_passkey, methods=["POST"]),
        Route("/signin/passphrase", passkeys.signin_passphrase, methods=["POST"]),
        Route("/api/sessions/{session_id:str}/end", end_session, methods=["POST"]),
        Route("/static/{name:str}", static_file),
        Route("/authorize", behind_shell(oauth.authorize_page), methods=["GET"]),
        Route("/authorize", oauth.authorize_answer, methods=["POST"]),
        Route("/token", oauth.token_endpoint, methods=["POST"]),
        Route("/token", oauth.token_preflight, methods=["OPTIONS"]),
        Route(discovery.AUTHORIZATION_SERVER, discovery.authorization_server, methods=["GET"]),
        Route(discovery.AUTHORIZATION_SERVER, discovery.preflight, methods=["OPTIONS"]),
        Route(discovery.PROTECTED_RESOURCE, discovery.protected_resource, methods=["GET"]),
        Route(discovery.PROTECTED_RESOURCE, discovery.preflight, methods=["OPTIONS"]),
        Route("/grants/{grant_id:str}/revoke", dashboard.revoke, methods=["POST"]),
        Route("/api/usage", dashboard.usage_json),
        Route("/api/pending", dashboard.pending_json),
        Route("/approvals", behind_shell(approvals.approvals_page)),
        Route("/approvals/{request_id:str}", _approval_link),
        Route("/approvals/{request_id:str}/status", approvals.status_preflight,
              methods=["OPTIONS"]),
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
            sweeper = asyncio.get_running_loop().create_task(
                prune_forever(ctx.grants, ctx.store, ctx.now))
            try:
                yield
            finally:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.wallet = ctx
    return LocalOnlyMiddleware(BodyLimit(app, timeout=body_timeout), deployment=ctx.deployment)


async def _approval_link(request: Request) -> Response:
    """The link the relay puts in a confirmation_required answer: {wallet}/approvals/{id}."""
    rid = request.path_params["request_id"]
    if not rid.isalnum():
        return Response("not found\n", status_code=404, media_type="text/plain")
    # focus= marks its card (the content arrives after the page, so :target cannot).
    return RedirectResponse(f"/approvals?focus={rid}#approval-{rid}", status_code=303)


async def _approval_verb(request: Request) -> Response:
    verb = request.path_params["verb"]
    if request.method == "GET" and verb == "status":
        return await approvals.approval_status(request)
    if request.method == "POST" and verb in ("approve", "deny"):
        return await approvals.decide(request)
    return Response("not found\n", status_code=404, media_type="text/plain")


def login_url(base_url: str, ctx: WalletContext) -> str:
    """The sign-in link: the secret is in the fragment, which the browser keeps to itself."""
    return f"{base_url.rstrip('/')}/login#{ctx.sessions.login_secret}"


__all__: list[Any] = ["create_wallet_app", "login_url"]
