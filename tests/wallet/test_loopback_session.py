"""Issue 13 F1: a process on another loopback port gets the wallet's cookie, and nothing else.

A real Chromium is signed in to the wallet. A listener on another 127.0.0.1 port gets the
browser to open its URL three ways: a bad /authorize request naming it as redirect URI (which
used to redirect at once), a plain navigation, and as a native app whose grant the user
approves. Browsers send the wallet's cookie to every port of 127.0.0.1, so the listener does
receive it. With it (and every header it can make up), it must not be able to read the consent
page's CSRF token, approve a grant of 9,000,000 USD a day, read usage or the dashboard, revoke
a grant, or approve a pending approval.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from capwallet import caveats as cav
from capwallet.client import pkce_pair
from capwallet.store.base import PendingApproval
from capwallet.token import Token
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet, run_async

from .browser_session import sign_in_page
from .loopback_site import LoopbackSite, loopback_site

GREEDY = {"type": "capwallet_ai", "providers": ["openai"], "models": ["gpt-4o"],
          "budget": {"amount": "9000000.00", "currency": "USD", "period": "day"},
          "expires_in": 365 * 86400}
MODEST = {"type": "capwallet_ai", "providers": ["openai"], "models": ["gpt-4o-mini"],
          "budget": {"amount": "1.00", "currency": "USD", "period": "month"},
          "expires_in": 86400}


@pytest.fixture
def listener() -> Iterator[LoopbackSite]:
    """Another program on this computer: it listens on a loopback port (127.0.0.1, as the
    wallet) and records what the browser sends it (the Cookie header above all)."""
    with loopback_site(fallback="<html><body><h1 id=got>thanks</h1></body></html>") as site:
        yield site


def _authorize_url(wallet: RunningWallet, redirect_uri: str, details: dict[str, Any],
                   **changes: str) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "app_name": "Helpful Tool", "redirect_uri": redirect_uri,
              "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
              "authorization_details": json.dumps([details]), **changes}
    return f"{wallet.base_url}/authorize?{urlencode(params)}", verifier


def _attack(wallet: RunningWallet, cookie: str, listener: LoopbackSite, victim: str,
            pending: str) -> list[str]:
    """Everything the listener tries with the cookie it got; returns what worked."""
    w = wallet.base_url
    forged = {"origin": w, "referer": w + "/", "cookie": cookie}
    sid = cookie.split("=", 1)[1].split(";")[0] if "=" in cookie else ""
    guesses: list[dict[str, str]] = [{}, {"x-capwallet-session": "-"},
                                     {"x-capwallet-session": sid}]
    worked: list[str] = []
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        for extra in guesses:
            h = {**forged, **extra}
            url, verifier = _authorize_url(wallet, listener.url + "/cb", GREEDY)
            page = http.get(url, headers=h)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            consent = re.search(r'name="consent" value="([^"]+)"', page.text)
            if csrf:
                worked.append(f"read the consent page's CSRF token with {extra}")
            form = {"csrf": csrf.group(1) if csrf else "0" * 40,
                    "consent": consent.group(1) if consent else "x", "decision": "approve",
                    "provider": "openai", "model": "gpt-4o", "budget": "9000000.00"}
            r = http.post(w + "/authorize", data=form, headers=h)
            where = r.headers.get("location", "")
            if r.headers.get("content-type", "").startswith("application/json"):
                where = str(r.json().get("location", ""))
            code = parse_qs(urlsplit(where).query).get("code")
            if code:
                worked.append(f"approved a 9,000,000 USD/day grant with {extra}")
                t = http.post(w + "/token", data={
                    "grant_type": "authorization_code", "code": code[0],
                    "redirect_uri": listener.url + "/cb", "code_verifier": verifier})
                if t.status_code == 200:
                    worked.append("got the token: " + Token.parse(
                        t.json()["access_token"]).token_id)
            usage = http.get(w + "/api/usage", headers=h)
            if usage.status_code == 200:
                worked.append(f"read /api/usage with {extra}")
            dash = http.get(w + "/", headers=h)
            if "Victim" in dash.text:
                worked.append(f"read the dashboard with {extra}")
            token = re.search(r'name="csrf" value="([^"]+)"', dash.text)
            csrf2 = token.group(1) if token else form["csrf"]
            http.post(f"{w}/grants/{victim}/revoke", data={"csrf": csrf2}, headers=h)
            http.post(f"{w}/approvals/{pending}/approve", data={"csrf": csrf2}, headers=h)
    g = wallet.ctx.grants.get(victim)
    if g is None or g.status != "active":
        worked.append("revoked the victim's grant")
    p = run_async(lambda: wallet.ctx.store.get_pending(pending))
    if p is None or p.status != "pending":
        worked.append("approved a pending approval")
    return worked


def test_a_leaked_cookie_is_worthless(browser: Any, wallet_relay: RunningWallet,
                                      listener: LoopbackSite) -> None:
    w = wallet_relay
    now = int(time.time())
    victim, victim_token = issue_grant(
        w.ctx.grants, w.ctx.keystore.current_root_key, app="Victim",
        caveats=[cav.Budget(500, "USD", "month")], source="cli", now=now)
    pending = "ab" * 16
    run_async(lambda: w.ctx.store.add_pending(PendingApproval(
        approval_request_id=pending, token_id=victim.grant_id, digest="cd" * 32,
        summary="gpt-4o call that may cost up to 3.00 USD", created_at=now,
        expires_at=now + 600)))

    context = browser.new_context()
    page = context.new_page()
    sign_in_page(page, w)  # the user signs in with the printed link

    # 1. A bad /authorize request naming the listener as redirect URI.
    bad, _ = _authorize_url(w, listener.url + "/bad", MODEST, response_type="nope")
    page.goto(bad)
    page.wait_for_load_state("networkidle")
    redirected_at_once = any(path.startswith("/bad") for path, _ in listener.seen)
    # 2. A plain navigation to the listener.
    page.goto(listener.url + "/hello")
    page.wait_for_selector("#got")
    # 3. A native app on the listener's port asks for a modest grant; the user approves.
    good, _ = _authorize_url(w, listener.url + "/cb", MODEST)
    page.goto(good)
    page.click("#approve")
    page.wait_for_url(listener.url + "/cb?**")
    page.wait_for_selector("#got")
    context.close()

    cookies = listener.cookies()
    assert any("capwallet_session=" in c for c in cookies), listener.seen  # it did leak
    worked: list[str] = []
    for cookie in cookies:
        worked += _attack(w, cookie, listener, victim.grant_id, pending)
    assert worked == []
    assert not redirected_at_once, "a bad request sent the browser to the app before sign-in"
    apps = sorted(g.app for g in w.ctx.grants.list(statuses=("pending", "active")))
    assert apps == ["Helpful Tool", "Victim"]  # only what the user approved
    (tool,) = [g for g in w.ctx.grants.list(statuses=("pending",)) if g.app == "Helpful Tool"]
    assert any(isinstance(c, cav.Budget) and c.amount == 100 for c in tool.caveats)
    assert victim_token  # the victim's own token is untouched (revocation checked above)


def test_sign_in_returns_to_the_waiting_consent_and_sign_out_locks(
        browser: Any, wallet_relay: RunningWallet, listener: LoopbackSite) -> None:
    w = wallet_relay
    context = browser.new_context()
    page = context.new_page()
    consent, _ = _authorize_url(w, listener.url + "/cb", MODEST)
    page.goto(consent)  # not signed in yet: the locked page, and no redirect to the app
    page.wait_for_selector("#wallet-shell", state="detached")
    assert page.locator("#approve").count() == 0 and listener.seen == []
    page.goto(w.login_url)  # sign in: back to the consent that was waiting
    page.wait_for_selector("#approve")
    assert page.url.startswith(w.base_url + "/authorize?")
    assert "#" not in page.url  # the sign-in secret left the address bar
    assert page.evaluate("localStorage.getItem('capwallet.session')")
    page.goto(w.base_url + "/")
    with page.expect_navigation():
        page.click("#signout button")
    page.wait_for_selector("#wallet-shell", state="detached")
    assert page.locator("#stat-calls").count() == 0
    assert page.evaluate("localStorage.getItem('capwallet.session')") is None
    assert w.ctx.sessions.store.list() == []
    context.close()
