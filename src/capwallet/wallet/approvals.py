"""Confirmation of expensive calls and ask-first scopes: the user's yes to one exact request.

The relay (for a model call above ``confirm-above``) or the wallet itself (for an app's
resource server checking an ask-first scope, POST /resource/check) records a PendingApproval
bound to the token id, the kind of request and a digest of what the user is shown: for a model
call, the relay's request digest of the bytes it judges; for a resource access, the access
digest the wallet computes itself over the scopes, the summary it shows and the resource
server's request digest (an app never supplies the digest an approval carries). The user
approves or denies it on the Approvals page; approving issues a single-use approval
(capwallet.approval.issue) of that kind under the token's root key, valid for a few minutes.
The app polls GET /approvals/{id}/status with its token in Authorization and retries the
request with ``X-Capwallet-Approval``. The approval is bound to the token, the kind and the
digest, so it is useless for any other request, kind or token: the yes to "Publish the post"
is no yes to an expensive model call. Denied, expired and unknown requests fail closed.
"""

from __future__ import annotations

import hmac
import re
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from capwallet import approval as approvals
from capwallet.approval import access_digest
from capwallet.reasons import Reason, TokenError
from capwallet.store.base import LedgerEntry, PendingApproval, Reservation, StoreUnavailable
from capwallet.verify import Request as VerifyRequest
from capwallet.verify import VerifiedToken, evaluate
from capwallet.wallet import json_input
from capwallet.wallet.context import WalletContext
from capwallet.wallet.pages import navigate

APPROVAL_TTL = 5 * 60  # how long an approved request may wait for the app's retry
PENDING_TTL = 10 * 60  # how long a request waits for the user
_ID = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,99}")


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


def _json_error(reason: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": reason, "message": message}, status_code=status,
                        headers={"cache-control": "no-store"})


# --- the user's side --------------------------------------------------------------------------

async def approvals_page(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.sessions.session_id(request) is None:
        return ctx.pages.locked(request)
    try:
        pending = await ctx.store.list_pending(ctx.now())
    except StoreUnavailable:
        return ctx.pages.error(request, "The usage store is unavailable", "Try again.", 503)
    focus = request.query_params.get("focus", "")
    rows = []
    for p in pending:
        g = ctx.grants.get(p.token_id)
        app = g.app if g is not None else "An app"
        summary = p.summary
        # The relay's summary starts with the app's name ("Blog Assistant wants to call ..."):
        # say the name once, in the heading.
        rest = summary[len(app):].lstrip() if summary.startswith(app + " ") else ""
        rows.append({
            "approval_request_id": p.approval_request_id, "summary": summary, "rest": rest,
            "app": app, "created_at": p.created_at, "expires_at": p.expires_at,
            "grant_id": p.token_id, "origin": g.origin if g is not None else "",
            "granted_at": g.created_at if g is not None else None,
            "focused": p.approval_request_id == focus,
        })
    done = request.query_params.get("done", "")
    return ctx.pages.render(request, "approvals.html", nav="approvals", pending=rows,
                            pending_count=len(rows),
                            done=done if done in ("approved", "denied") else "")


async def decide(request: Request) -> Response:
    ctx = _ctx(request)
    form = await request.form()
    csrf = form.get("csrf")
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return ctx.pages.forbidden(request)
    rid = request.path_params["request_id"]
    verb = request.path_params["verb"]
    now = ctx.now()
    try:
        pending = await ctx.store.get_pending(rid) if _ID.fullmatch(rid) else None
        if pending is None or pending.status != "pending":
            return ctx.pages.error(request, "Nothing to decide",
                                   "This request was already answered or does not exist.", 404)
        if now >= pending.expires_at:
            await ctx.store.resolve_pending(rid, "expired", None)
            return ctx.pages.error(request, "Too late",
                                   "This request expired before it was answered; the app must "
                                   "ask again.", 410)
        if verb == "deny":
            await ctx.store.resolve_pending(rid, "denied", None)
        else:
            grant = ctx.grants.get(pending.token_id)
            key = None
            if grant is not None:
                key = ctx.keystore.root_key(bytes.fromhex(grant.key_id))
            if key is None:
                key = ctx.keystore.current_root_key
            try:
                kind = approvals.Kind.of(pending.kind)
            except ValueError:
                return ctx.pages.error(request, "Cannot approve",
                                       "This request is of a kind this wallet does not know.",
                                       400)
            issued = approvals.issue(
                key, bytes.fromhex(pending.token_id), bytes.fromhex(pending.digest),
                now + APPROVAL_TTL, kind=kind,
            )
            await ctx.store.resolve_pending(rid, "approved", issued.serialize())
    except StoreUnavailable:
        return ctx.pages.error(request, "The usage store is unavailable", "Try again.", 503)
    # Back to the list, saying that the answer went through.
    return navigate("/approvals?done=" + ("denied" if verb == "deny" else "approved"))


# --- the app's side ---------------------------------------------------------------------------

def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _authenticated(request: Request) -> VerifiedToken | JSONResponse:
    ctx = _ctx(request)
    token = _bearer(request)
    if token is None:
        return _json_error("unauthorized", "send the app's token in Authorization: Bearer", 401)
    assert ctx.verifier is not None
    try:
        verified = ctx.verifier.check_token(token)
    except TokenError as exc:
        return _json_error(exc.reason.value, exc.message, 401)
    if await ctx.store.is_revoked(verified.token_id_hex):
        return _revoked()
    return verified


def _revoked() -> JSONResponse:
    """A revoked token's one answer, whether the wallet read the revocation before its work or
    the reservation found it (a revocation landing between the two)."""
    return _json_error(Reason.REVOKED.value, "this token has been revoked", 401)


async def approval_status(request: Request) -> Response:
    """The app polls its approval request. A web app polls from its page: the answer carries
    CORS for the origin of the token's own grant (errors before the token is known, for any
    origin with a live grant, so the page can read why), and for no other origin."""
    response, readers = await _approval_status(request)
    origin = request.headers.get("origin")
    if origin is not None and origin in readers:
        response.headers["access-control-allow-origin"] = origin
        response.headers["vary"] = "Origin"
    return response


async def status_preflight(request: Request) -> Response:
    """CORS preflight for GET /approvals/{id}/status: origins with a live grant only."""
    ctx = _ctx(request)
    origin = request.headers.get("origin")
    if (origin is None or "access-control-request-method" not in request.headers
            or origin not in ctx.grants.live_origins(ctx.now())):
        return Response(status_code=403)
    headers = {
        "access-control-allow-origin": origin, "access-control-allow-methods": "GET",
        "access-control-allow-headers": "authorization", "access-control-max-age": "600",
        "vary": "Origin",
    }
    if request.headers.get("access-control-request-private-network") == "true":
        headers["access-control-allow-private-network"] = "true"
    return Response(status_code=204, headers=headers)


async def _approval_status(request: Request) -> tuple[Response, frozenset[str]]:
    """The answer, and the origins that may read it."""
    ctx = _ctx(request)
    rid = request.path_params["request_id"]
    readers = ctx.grants.live_origins(ctx.now())
    try:
        auth = await _authenticated(request)
        if isinstance(auth, JSONResponse):
            return auth, readers
        grant = ctx.grants.get(auth.token_id_hex)
        readers = frozenset((grant.origin,)) if grant and grant.origin else frozenset()
        pending = await ctx.store.get_pending(rid) if _ID.fullmatch(rid) else None
    except StoreUnavailable:
        return _json_error("store_unavailable", "try again", 503), readers
    if pending is None or not hmac.compare_digest(pending.token_id.encode(),
                                                   auth.token_id_hex.encode()):
        # One answer for both: an id of another token's request tells nothing.
        return _json_error("not_found", "no approval request with this id for this token",
                           404), readers
    status = pending.status
    if status == "pending" and ctx.now() >= pending.expires_at:
        status = "expired"
    body: dict[str, object] = {"status": status, "expires_at": pending.expires_at}
    if status == "approved" and pending.approval:
        body["approval"] = pending.approval
    return JSONResponse(body, headers={"cache-control": "no-store"}), readers


async def resource_check(request: Request) -> Response:
    """An app's own server asks: may this token use these scopes for this exact request?

    JSON body: {"scopes": [...], "digest": <hex of capwallet.approval.request_digest of the
    resource server's own request>, "summary": <what the user is asked>, "approval": <cwa1_...,
    optional>}. The digest an approval carries is not the app's: the wallet computes the access
    digest over the scopes, the summary it shows the user and the app's request digest, and
    checks a resource-access approval against that. Answers the verifier's decision; for an
    ask-first scope without an approval it records a pending approval and returns its id and
    status URL. An approval is consumed on success.
    """
    ctx = _ctx(request)
    try:
        doc = json_input.loads(await request.body())
    except ValueError:
        return _json_error("invalid_request", "send a JSON object", 400)
    if not isinstance(doc, dict):
        return _json_error("invalid_request", "send a JSON object", 400)
    scopes = doc.get("scopes")
    digest = doc.get("digest")
    summary = doc.get("summary", "")
    approval = doc.get("approval")
    if (not isinstance(scopes, list) or not scopes or len(scopes) > 20
            or not all(isinstance(s, str) and _SCOPE.fullmatch(s) for s in scopes)):
        return _json_error("invalid_request", "scopes must be a list of scope names", 400)
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return _json_error("invalid_request", "digest must be 64 lowercase hex digits", 400)
    if not isinstance(summary, str) or len(summary) > 300:
        return _json_error("invalid_request", "summary must be text of at most 300 chars", 400)
    if approval is not None and not isinstance(approval, str):
        return _json_error("invalid_request", "approval must be a string", 400)
    what = summary.strip() or f"use {', '.join(sorted(set(scopes)))}"
    shown = access_digest(scopes, what, bytes.fromhex(digest))
    now = ctx.now()
    try:
        auth = await _authenticated(request)
        if isinstance(auth, JSONResponse):
            return auth
        decision = evaluate(
            auth, VerifyRequest(scopes=tuple(scopes), approval=approval, digest=shown),
            now, {}, ctx.keystore.keyring(),
        )
        if decision.allowed and decision.approval_id is not None:
            rid = secrets.token_hex(16)
            result = await ctx.store.reserve(Reservation(
                reservation_id=rid, token_id=auth.token_id_hex, holds=(), lease_until=now + 60,
                approval_id=decision.approval_id, created_at=now,
            ))
            if result.revoked:  # revoked after _authenticated read it: refused as revoked
                return _revoked()
            if not result.ok or result.approval_used:
                return JSONResponse({"allowed": False, "reason": Reason.APPROVAL_INVALID.value,
                                     "message": "this approval was already used"},
                                    status_code=403)
            grant = ctx.grants.get(auth.token_id_hex)
            await ctx.store.release(rid, LedgerEntry(
                time=now, token_id=auth.token_id_hex, app=grant.app if grant else "",
                provider="", model="", operation="scope:" + ",".join(scopes), input_tokens=0,
                output_tokens=0, cost=0, currency="", status="ok", latency_ms=0,
                reservation_id=rid,
            ))
        if decision.needs_approval:
            rid = secrets.token_hex(16)
            await ctx.store.add_pending(PendingApproval(
                approval_request_id=rid, token_id=auth.token_id_hex, digest=shown.hex(),
                summary=f"{what} (scope {', '.join(sorted(set(scopes)))})", created_at=now,
                expires_at=now + PENDING_TTL, kind=approvals.Kind.RESOURCE_ACCESS.label,
            ))
            return JSONResponse({
                "allowed": False, "reason": Reason.CONFIRMATION_REQUIRED.value,
                "message": decision.message, "approval_request_id": rid,
                "status_url": f"/approvals/{rid}/status",
            }, status_code=403)
    except StoreUnavailable:
        return _json_error("store_unavailable", "the wallet cannot check this now", 503)
    body = {"allowed": decision.allowed,
            "reason": None if decision.reason is None else decision.reason.value,
            "message": decision.message, "token_id": decision.token_id}
    return JSONResponse(body, status_code=200 if decision.allowed else 403)
