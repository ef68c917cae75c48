"""Asking for permission: OAuth 2.0 authorization code with PKCE (RFC 6749, 7636, 8252, 9396).

GET /authorize shows the consent page for an app's permission request; POST /authorize is the
user's answer (approve, possibly narrowed, or deny); POST /token exchanges the one-time code
and its PKCE verifier for the token and the relay URL.

The request's parameters and their checks are in authorization.py; a client_id that is a
metadata document URL is fetched (client_metadata.py) before the consent page is shown.

CORS: /token is the one wallet endpoint a web page may call cross-origin. A preflight is
answered for origins that have a grant waiting for its code exchange; the exchange itself is
answered (Access-Control-Allow-Origin) only for the origin of the code's own grant, and a code
presented from any other origin is refused without being burnt.

Nothing goes to the redirect URI before the user is signed in and acts (spec/security.md,
"Loopback ports share cookies"): a loopback redirect URI is another port of the wallet's host,
and the browser hands it the wallet's cookies. So an error in the request (RFC 6749 section
4.1.2.1) is shown on a signed-in page with a link that takes it back to the app, and the
answers to the consent form are JSON for the page's script (pages.navigate), which then sends
the browser to the app.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from capwallet import caveats as cav
from capwallet.store.base import StoreUnavailable
from capwallet.wallet import pricing
from capwallet.wallet.authorization import (
    AuthorizationRequest,
    AuthorizeError,
    BadRedirect,
    parse_authorization_request,
    repeated_names,
)
from capwallet.wallet.client_metadata import ClientMetadata, ClientMetadataError, is_metadata_url
from capwallet.wallet.codes import CODE_TTL, CodeEntry, CodeError
from capwallet.wallet.consents import CONSENT_TTL, Consent
from capwallet.wallet.context import WalletContext
from capwallet.wallet.deployment import wallet_origin
from capwallet.wallet.grants import issue_grant, revoke_grant
from capwallet.wallet.pages import navigate
from capwallet.wallet.permissions import PermissionRequestError


def with_query(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` added to its query (RFC 6749 section 4.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- handlers ---------------------------------------------------------------------------------

def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


def _issuer(request: Request) -> str:
    return wallet_origin(request)


async def authorize_page(request: Request) -> Response:
    ctx = _ctx(request)
    params = dict(request.query_params)
    repeated = repeated_names(request.query_params.multi_items())
    metadata: ClientMetadata | None = None
    client_id = params.get("client_id", "")
    if client_id and is_metadata_url(client_id) and "client_id" not in repeated:
        # Only a signed-in user's visit makes the wallet fetch anything: a page cannot use a
        # locked wallet to probe URLs.
        if ctx.sessions.session_id(request) is None:
            return ctx.pages.locked(request)
        try:
            metadata = await ctx.client_metadata.fetch(client_id)
        except ClientMetadataError as exc:
            return ctx.pages.error(
                request, "This app's identity could not be checked",
                f"{exc.message}. Nothing was changed in your wallet. (reason: {exc.reason})",
                status=400,
            )
    try:
        areq = parse_authorization_request(params, metadata, repeated)
    except BadRedirect as exc:
        return ctx.pages.error(
            request, "This link cannot be used",
            f"{exc.message}. Nothing was changed in your wallet. (reason: {exc.reason})",
            status=400,
        )
    except AuthorizeError as exc:
        if ctx.sessions.session_id(request) is None:
            return ctx.pages.locked(request)
        back = with_query(params["redirect_uri"], {
            "error": exc.error, "error_description": exc.description,
            "state": params.get("state", ""), "iss": _issuer(request),
        })
        return ctx.pages.render(
            request, "message.html", 400, title="This request cannot be used",
            message=f"The app asked in a way the wallet does not accept ({exc.error}: "
                    f"{exc.description}). Nothing was granted.", tone="error",
            action_url=back, action_label="Tell the app and go back",
        )
    sid = ctx.sessions.session_id(request)
    if sid is None:
        return ctx.pages.locked(request)
    consent = Consent(sid, areq, ctx.now() + CONSENT_TTL)
    cid = ctx.consents.add(consent)
    return ctx.pages.consent(request, areq, cid, error=None, quote=_quote(ctx, areq))


async def authorize_answer(request: Request) -> Response:
    ctx = _ctx(request)
    form = await request.form()
    if not ctx.sessions.check_csrf(request, _str(form.get("csrf"))):
        return ctx.pages.forbidden(request)
    sid = ctx.sessions.session_id(request)
    assert sid is not None  # check_csrf requires a session
    cid = _str(form.get("consent")) or ""
    consent = ctx.consents.get(cid, sid, ctx.now())
    if consent is None:
        return ctx.pages.error(
            request, "This request has expired",
            "Go back to the app and ask again: the request is valid for 15 minutes.", status=400,
        )
    areq = consent.request
    decision = _str(form.get("decision"))
    if decision == "deny":
        ctx.consents.take(cid)
        return navigate(with_query(areq.redirect_uri, {
            "error": "access_denied", "error_description": "the user denied the request",
            "state": areq.state, "iss": _issuer(request),
        }))
    if decision != "approve":
        return ctx.pages.error(request, "Unknown answer", "Choose Approve or Deny.", status=400)
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    try:
        granted = areq.permission.narrow(fields)
    except PermissionRequestError as exc:
        return ctx.pages.consent(request, areq, cid, error=str(exc), quote=_quote(ctx, areq),
                                 status=400)
    ctx.consents.take(cid)
    now = ctx.now()
    # Approvals whose code was never exchanged: their token never left the wallet.
    ctx.grants.delete_pending_before(now - 2 * CODE_TTL)
    grant, token = issue_grant(
        ctx.grants, ctx.keystore.current_root_key, app=areq.app_name,
        caveats=web_caveats(granted.caveats(areq.app_name, now), areq.origin),
        source="oauth", now=now,
        origin=areq.origin, redirect_uri=areq.redirect_uri, status="pending",
    )
    code = ctx.codes.issue(CodeEntry(
        grant_id=grant.grant_id, token=token, redirect_uri=areq.redirect_uri,
        challenge=areq.code_challenge, expires_at=now + CODE_TTL, details=granted.details(),
        origin=areq.origin,
    ))
    return navigate(with_query(areq.redirect_uri, {
        "code": code, "state": areq.state, "iss": _issuer(request),
    }))


def web_caveats(caveats: list[cav.Caveat], origin: str) -> list[cav.Caveat]:
    """A web app's grant carries its origin as a caveat: a browser presenting the token from
    any other origin is refused by every verifier (origin_mismatch), CORS or not."""
    return [*caveats, cav.Origin(origin)] if origin else caveats


def _quote(ctx: WalletContext, areq: AuthorizationRequest) -> pricing.Quote:
    """Prices and warnings for the consent page, from the relay this wallet runs."""
    return pricing.quote(areq.permission, pricing.relay_config(ctx),
                         set(ctx.keystore.providers))


def _oauth_error(error: str, description: str, status: int = 400,
                 cors: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status,
        headers=_token_headers(cors),
    )


def _token_headers(cors: str | None) -> dict[str, str]:
    headers = {"cache-control": "no-store", "pragma": "no-cache"}
    if cors:
        headers.update({"access-control-allow-origin": cors, "vary": "Origin"})
    return headers


def _cross_origin(request: Request) -> str | None:
    """The Origin of a cross-origin call (None for a server-side call or the wallet's own)."""
    origin = request.headers.get("origin")
    if origin is None or origin.lower() == wallet_origin(request):
        return None
    return origin


async def token_preflight(request: Request) -> Response:
    """CORS preflight for POST /token: only origins whose grant awaits its code exchange."""
    ctx = _ctx(request)
    origin = request.headers.get("origin")
    if (origin is None or "access-control-request-method" not in request.headers
            or origin not in ctx.grants.pending_origins(ctx.now())):
        return Response(status_code=403)
    headers = {
        "access-control-allow-origin": origin, "access-control-allow-methods": "POST",
        "access-control-allow-headers": "accept, content-type",
        "access-control-max-age": "60", "vary": "Origin",
    }
    if request.headers.get("access-control-request-private-network") == "true":
        headers["access-control-allow-private-network"] = "true"
    return Response(status_code=204, headers=headers)


async def token_endpoint(request: Request) -> Response:
    ctx = _ctx(request)
    origin = _cross_origin(request)
    if not request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        return _oauth_error("invalid_request", "send application/x-www-form-urlencoded")
    try:
        form = await request.form()
    except HTTPException as exc:  # the form parser's refusal (too many fields, one too large)
        return _oauth_error("invalid_request", f"the form cannot be read: {exc.detail}")
    repeated = repeated_names(form.multi_items())
    if repeated:  # RFC 6749 3.2: each parameter once; which value would count? (code kept)
        return _oauth_error("invalid_request", f"{min(repeated)} was sent more than once")
    if _str(form.get("grant_type")) != "authorization_code":
        return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code")
    code = _str(form.get("code"))
    redirect_uri = _str(form.get("redirect_uri"))
    verifier = _str(form.get("code_verifier"))
    if not code or not redirect_uri or not verifier:
        return _oauth_error("invalid_request", "code, redirect_uri and code_verifier are required")
    now = ctx.now()
    try:
        entry = ctx.codes.redeem(code, redirect_uri, verifier, now, origin=origin)
    except CodeError as exc:
        if exc.replayed_grant is not None:
            try:
                await revoke_grant(ctx.grants, ctx.store, exc.replayed_grant, now)
            except StoreUnavailable:
                pass  # the relay fails closed while its store is down
        readable = origin if origin is not None and origin == exc.origin else None
        return _oauth_error(exc.error, exc.description, cors=readable)
    readable = origin  # redeem checked it is the grant's own origin
    if not ctx.grants.activate(entry.grant_id):
        return _oauth_error("invalid_grant", "the grant is no longer pending", cors=readable)
    grant = ctx.grants.get(entry.grant_id)
    expires_in = None if grant is None or grant.expires_at is None else grant.expires_at - now
    return JSONResponse(
        {
            "access_token": entry.token, "token_type": "Bearer", "expires_in": expires_in,
            "grant_id": entry.grant_id, "relay_url": ctx.relay_url or _issuer(request),
            "authorization_details": json.loads(entry.details),
        },
        headers=_token_headers(readable),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
