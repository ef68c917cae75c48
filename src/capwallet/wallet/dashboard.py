"""The dashboard: which apps use AI, what they spent, what they may do, and revoke in a click.

Everything on it needs the wallet session; the JSON twin (/api/usage) too, and neither sends
CORS headers, so another web page can neither show nor read it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from capwallet.money import format_micros, format_short
from capwallet.store.base import StoreUnavailable
from capwallet.wallet.chart import NARROW_WIDTH, spend_chart
from capwallet.wallet.context import WalletContext
from capwallet.wallet.grants import revoke_grant
from capwallet.wallet.pages import navigate
from capwallet.wallet.usage import snapshot

RECENT = 25


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


async def dashboard_page(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.sessions.session_id(request) is None:
        return ctx.pages.locked(request)
    now = ctx.now()
    try:
        snap = await snapshot(ctx.grants, ctx.store, now)
        pending = await ctx.store.list_pending(now)
    except StoreUnavailable:
        return ctx.pages.error(request, "The usage store is unavailable",
                               "Try again in a moment.", status=503)
    currency = snap.main_currency()
    # One chart per currency spent in: nothing is converted, nothing silently dropped.
    charts = [spend_chart(snap.spend_per_day(c), c)
              for c in (snap.currencies() or ([currency] if currency else []))]
    narrow = {c.currency: spend_chart(snap.spend_per_day(c.currency), c.currency,
                                      width=NARROW_WIDTH) for c in charts}
    active = [r for r in snap.apps if r.grant.is_live(now)]
    others = [r for r in snap.apps if not r.grant.is_live(now)]
    totals = snap.currencies()
    total = " + ".join(format_short(snap.total(c), c) for c in totals) or (
        format_micros(0, currency) if currency else "0"
    )
    return ctx.pages.render(
        request, "dashboard.html", nav="dashboard", snap=snap, charts=charts, narrow=narrow,
        now=now,
        per_day=snap.per_day()[:60],
        rows=active + others, active_count=len({r.app for r in active}), total=total,
        total_exact=" + ".join(format_micros(snap.total(c), c) for c in totals),
        call_count=snap.call_count(),
        per_app=snap.spend_by("app"), per_model=snap.spend_by("model"),
        recent=snap.calls[:RECENT], pending_count=len(pending),
        # the first steps, on a wallet no app has asked yet
        has_provider=bool(ctx.keystore.providers),
        wallet_url=ctx.deployment.public_origin or str(request.base_url).rstrip("/"),
    )


async def pending_json(request: Request) -> Response:
    """How many approvals wait: the dashboard's script polls it to notify the user."""
    ctx = _ctx(request)
    if ctx.sessions.session_id(request) is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    try:
        pending = await ctx.store.list_pending(ctx.now())
    except StoreUnavailable:
        return JSONResponse({"error": "store unavailable"}, status_code=503)
    return JSONResponse({"count": len(pending)}, headers={"cache-control": "no-store"})


async def usage_json(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.sessions.session_id(request) is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    now = ctx.now()
    try:
        snap = await snapshot(ctx.grants, ctx.store, now)
    except StoreUnavailable:
        return JSONResponse({"error": "store unavailable"}, status_code=503)
    # Spend figures from the store's usage aggregates (refusals and ledger retention cannot
    # evict them); "calls" is only the recent list.
    return JSONResponse({
        "apps": [r.to_json() for r in snap.apps],
        "spend": {
            "days": snap.days,
            "total": {c: snap.total(c) for c in snap.currencies()},
            "calls": snap.call_count(),
            "by_app": [{"app": n, "currency": c, "cost": v, "calls": k}
                       for n, c, v, k in snap.spend_by("app")],
            "by_model": [{"model": n, "currency": c, "cost": v, "calls": k}
                         for n, c, v, k in snap.spend_by("model")],
            "by_day": {c: dict(snap.spend_per_day(c)) for c in snap.currencies()},
        },
        "calls": [c.to_json() for c in snap.calls[:200]],
    })


async def revoke(request: Request) -> Response:
    ctx = _ctx(request)
    form = await request.form()
    csrf = form.get("csrf")
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return ctx.pages.forbidden(request)
    grant_id = request.path_params["grant_id"]
    if ctx.grants.get(grant_id) is None:
        return ctx.pages.error(request, "No such grant", "It may have been removed.", status=404)
    try:
        await revoke_grant(ctx.grants, ctx.store, grant_id, ctx.now())
    except StoreUnavailable:
        return ctx.pages.error(request, "Not revoked",
                               "The usage store is unavailable, so the revocation could not be "
                               "recorded. Try again.", status=503)
    return navigate("/")
