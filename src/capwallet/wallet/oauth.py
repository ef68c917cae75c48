"""Asking for permission: OAuth 2.0 authorization code with PKCE (RFC 6749, 7636, 8252, 9396).

GET /authorize shows the consent page for an app's permission request; POST /authorize is the
user's answer (approve, possibly narrowed, or deny); POST /token exchanges the one-time code
and its PKCE verifier for the token and the relay URL.

Parameters of /authorize: response_type=code, app_name, redirect_uri, state, code_challenge,
code_challenge_method=S256 (plain is refused), authorization_details (see permissions.py),
and optionally origin / client_id (the app's origin; must match the redirect URI's origin).
Redirect URIs are https on the app's origin, or loopback http on any port for native apps
(RFC 8252 section 7.3). A bad or missing redirect URI is shown to the user, never followed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from capwallet.store.base import StoreUnavailable
from capwallet.wallet.codes import CODE_TTL, CodeEntry, CodeError, valid_challenge
from capwallet.wallet.consents import CONSENT_TTL, Consent
from capwallet.wallet.context import WalletContext
from capwallet.wallet.grants import issue_grant, revoke_grant
from capwallet.wallet.permissions import Permission, PermissionRequestError

_APP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,80}")
_STATE_MAX = 512
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class AuthorizeError(Exception):
    """An error to send back to the app's redirect URI (RFC 6749 section 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class BadRedirect(Exception):
    """The redirect URI itself is unusable: tell the user, do not redirect."""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    app_name: str
    origin: str
    redirect_uri: str
    state: str
    code_challenge: str
    permission: Permission

    @property
    def is_native(self) -> bool:
        return urlsplit(self.redirect_uri).hostname in LOOPBACK

    @property
    def origin_label(self) -> str:
        return "an app on this computer" if self.is_native else self.origin


def check_redirect_uri(uri: str) -> str:
    """The origin of an acceptable redirect URI; raises BadRedirect."""
    if not uri or len(uri) > 2000:
        raise BadRedirect("the app sent no redirect_uri, or one that is too long")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise BadRedirect("the app's redirect_uri is not a valid URL") from None
    if parts.fragment or "#" in uri:
        raise BadRedirect("a redirect_uri must not have a fragment")
    if parts.username or parts.password:
        raise BadRedirect("a redirect_uri must not carry a user name or password")
    host = parts.hostname or ""
    if parts.scheme == "http" and host in LOOPBACK:
        netloc = f"[{host}]" if ":" in host else host
        return f"http://{netloc}" + (f":{port}" if port else "")
    if parts.scheme == "https" and host:
        return f"https://{parts.netloc.lower()}"
    raise BadRedirect(
        "a redirect_uri must be https, or http on a loopback address (127.0.0.1 or [::1])"
    )


def parse_authorization_request(params: dict[str, str]) -> AuthorizationRequest:
    """Raises BadRedirect (show to user) or AuthorizeError (send to the app)."""
    redirect_uri = params.get("redirect_uri", "")
    redirect_origin = check_redirect_uri(redirect_uri)
    if params.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", "response_type must be code")
    state = params.get("state", "")
    if not state or len(state) > _STATE_MAX:
        raise AuthorizeError("invalid_request", "state is required (at most 512 characters)")
    method = params.get("code_challenge_method", "")
    if method != "S256":
        raise AuthorizeError(
            "invalid_request", "code_challenge_method must be S256 (plain is not accepted)"
        )
    challenge = params.get("code_challenge", "")
    if not valid_challenge(challenge):
        raise AuthorizeError("invalid_request", "code_challenge must be base64url(SHA-256)")
    name = params.get("app_name", "").strip()
    if not _APP_NAME.fullmatch(name):
        raise AuthorizeError("invalid_request", "app_name is required (1-80 printable chars)")
    origin = params.get("origin") or params.get("client_id") or redirect_origin
    native = urlsplit(redirect_uri).hostname in LOOPBACK
    if not _same_origin(origin, redirect_origin, loopback_any_port=native):
        raise AuthorizeError("invalid_request", "origin does not match the redirect_uri")
    if params.get("client_id") and params.get("origin") and (
        params["client_id"] != params["origin"]
    ):
        raise AuthorizeError("invalid_request", "client_id and origin differ")
    try:
        permission = Permission.from_details(params.get("authorization_details", ""))
    except PermissionRequestError as exc:
        raise AuthorizeError("invalid_authorization_details", str(exc)) from None
    return AuthorizationRequest(name, origin.rstrip("/").lower(), redirect_uri, state,
                                challenge, permission)


def _same_origin(a: str, b: str, *, loopback_any_port: bool) -> bool:
    try:
        pa, pb = urlsplit(a.rstrip("/").lower()), urlsplit(b.lower())
        if pa.path or pa.query or pa.fragment:
            return False
        if loopback_any_port:
            return pa.scheme == pb.scheme and pa.hostname in LOOPBACK
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:
        return False


def redirect_with(uri: str, params: dict[str, str]) -> RedirectResponse:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=303)


# --- handlers ---------------------------------------------------------------------------------

def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


def _issuer(request: Request) -> str:
    return "http://" + request.headers.get("host", "127.0.0.1")


async def authorize_page(request: Request) -> Response:
    ctx = _ctx(request)
    params = dict(request.query_params)
    try:
        areq = parse_authorization_request(params)
    except BadRedirect as exc:
        return ctx.pages.error(request, "This link cannot be used", str(exc), status=400)
    except AuthorizeError as exc:
        return redirect_with(params["redirect_uri"], {
            "error": exc.error, "error_description": exc.description,
            "state": params.get("state", ""), "iss": _issuer(request),
        })
    sid = ctx.sessions.session_id(request)
    if sid is None:
        return ctx.pages.locked(request)
    consent = Consent(sid, areq, ctx.now() + CONSENT_TTL)
    cid = ctx.consents.add(consent)
    return ctx.pages.consent(request, areq, cid, error=None)


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
        return redirect_with(areq.redirect_uri, {
            "error": "access_denied", "error_description": "the user denied the request",
            "state": areq.state, "iss": _issuer(request),
        })
    if decision != "approve":
        return ctx.pages.error(request, "Unknown answer", "Choose Approve or Deny.", status=400)
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    try:
        granted = areq.permission.narrow(fields)
    except PermissionRequestError as exc:
        return ctx.pages.consent(request, areq, cid, error=str(exc), status=400)
    ctx.consents.take(cid)
    now = ctx.now()
    # Approvals whose code was never exchanged: their token never left the wallet.
    ctx.grants.delete_pending_before(now - 2 * CODE_TTL)
    grant, token = issue_grant(
        ctx.grants, ctx.keystore.current_root_key, app=areq.app_name,
        caveats=granted.caveats(areq.app_name, now), source="oauth", now=now,
        origin="" if areq.is_native else areq.origin, redirect_uri=areq.redirect_uri,
        status="pending",
    )
    code = ctx.codes.issue(CodeEntry(
        grant_id=grant.grant_id, token=token, redirect_uri=areq.redirect_uri,
        challenge=areq.code_challenge, expires_at=now + CODE_TTL, details=granted.details(),
    ))
    return redirect_with(areq.redirect_uri, {
        "code": code, "state": areq.state, "iss": _issuer(request),
    })


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status,
        headers={"cache-control": "no-store", "pragma": "no-cache"},
    )


async def token_endpoint(request: Request) -> Response:
    ctx = _ctx(request)
    if not request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        return _oauth_error("invalid_request", "send application/x-www-form-urlencoded")
    form = await request.form()
    if _str(form.get("grant_type")) != "authorization_code":
        return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code")
    code = _str(form.get("code"))
    redirect_uri = _str(form.get("redirect_uri"))
    verifier = _str(form.get("code_verifier"))
    if not code or not redirect_uri or not verifier:
        return _oauth_error("invalid_request", "code, redirect_uri and code_verifier are required")
    now = ctx.now()
    try:
        entry = ctx.codes.redeem(code, redirect_uri, verifier, now)
    except CodeError as exc:
        if exc.replayed_grant is not None:
            try:
                await revoke_grant(ctx.grants, ctx.store, exc.replayed_grant, now)
            except StoreUnavailable:
                pass  # the relay fails closed while its store is down
        return _oauth_error(exc.error, exc.description)
    if not ctx.grants.activate(entry.grant_id):
        return _oauth_error("invalid_grant", "the grant is no longer pending")
    grant = ctx.grants.get(entry.grant_id)
    expires_in = None if grant is None or grant.expires_at is None else grant.expires_at - now
    return JSONResponse(
        {
            "access_token": entry.token, "token_type": "Bearer", "expires_in": expires_in,
            "grant_id": entry.grant_id, "relay_url": ctx.relay_url or _issuer(request),
            "authorization_details": json.loads(entry.details),
        },
        headers={"cache-control": "no-store", "pragma": "no-cache"},
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
