"""Signing in to a hosted wallet, over HTTPS through Caddy: a passkey registered and used in
Chromium (its virtual authenticator, over CDP), the sessions page, and the hostile cases:
no session gets nothing, an ended session is refused, the passphrase fallback is throttled,
and forwarded headers from an untrusted address do not pick the client's address."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from capwallet.wallet.deployment import Deployment
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, ServeOptions, running_wallet
from capwallet.wallet.sessions import SESSION_HEADER
from scripts.hosted_up import HostedStack

from .conftest import PASSPHRASE
from .hosted_fixtures import (
    hosted_stack_fixture,  # noqa: F401  (the `stack` fixture)
    launch_chromium,
    wallet_sign_in,
)

playwright_sync = pytest.importorskip("playwright.sync_api")
COOKIE = "__Host-capwallet_session"


def _authenticator(context: Any, page: Any) -> tuple[Any, str]:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})
    return cdp, made["authenticatorId"]


def test_passkey_registration_sign_in_sessions_and_removal(stack: HostedStack) -> None:
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p, stack)
        context = browser.new_context()
        page = context.new_page()
        cdp, auth_id = _authenticator(context, page)
        # The owner signs in once with the console's link, then registers a passkey.
        wallet_sign_in(page, stack)
        cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.goto(stack.wallet_url + "/passkeys")
        page.wait_for_selector("#add-passkey")
        assert page.locator("#no-passkeys").count() == 1
        page.fill("#add-passkey input[name=name]", "laptop")
        page.click("#add-passkey button")
        page.wait_for_selector(".passkey-name:has-text('laptop')")
        creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth_id})["credentials"]
        assert len(creds) == 1 and creds[0]["rpId"] == "wallet.capwallet.test"
        # Sign out; the locked page offers the passkey; sign in with it.
        page.click("#signout button")
        page.wait_for_selector("#passkey-signin")
        page.click("#passkey-signin")
        page.wait_for_selector("#stat-apps")
        assert page.url.rstrip("/") == stack.wallet_url
        # The sessions page lists this browser's passkey session (the link's one has ended).
        page.goto(stack.wallet_url + "/sessions")
        page.wait_for_selector("#session-list")
        rows = page.locator(".session")
        assert rows.count() == 1
        assert "passkey laptop" in rows.first.inner_text()
        assert "this browser" in rows.first.inner_text()
        # Remove the passkey: it no longer signs in.
        page.goto(stack.wallet_url + "/passkeys")
        page.wait_for_selector(".passkey-name")
        page.click(".passkey button:has-text('Remove')")
        page.wait_for_selector("#no-passkeys")
        page.click("#signout button")
        page.wait_for_selector("#passkey-signin")
        page.click("#passkey-signin")
        page.wait_for_selector("#passkey-status:has-text('Not signed in')")
        assert page.locator("#stat-apps").count() == 0
        browser.close()


def _passphrase_session(c: httpx.Client, base: str) -> str:
    r = c.post(base + "/signin/passphrase", data={"passphrase": PASSPHRASE},
               headers={"origin": base})
    assert r.status_code == 200, r.text
    assert COOKIE in c.cookies
    header: str = r.json()["session"]
    return header


def test_no_session_gets_nothing_and_an_ended_session_is_refused(stack: HostedStack) -> None:
    base = stack.wallet_url
    with stack.client(timeout=30) as c:
        for path in ("/api/usage", "/api/sessions"):
            assert c.get(base + path).status_code == 401, path
        for path in ("/", "/passkeys", "/sessions", "/approvals"):
            r = c.get(base + path, headers={SESSION_HEADER: "-"})
            assert r.status_code == 401 and "Sign in to your wallet" in r.text, path
        r = c.post(base + "/passkeys/register/options", json={"csrf": "x"},
                   headers={"origin": base})
        assert r.status_code == 403
        # The console's sign-in link works once on a server (the passkey test used it, or
        # this first try does); a second use is refused.
        secret = stack.login_url.split("#", 1)[1]
        c.post(base + "/login", json={"secret": secret}, headers={"origin": base})
        c.cookies.clear()
        again = c.post(base + "/login", json={"secret": secret}, headers={"origin": base})
        assert again.status_code == 403 and COOKIE not in c.cookies
        # Sign in with the passphrase: the session works with both the cookie and the header.
        header = _passphrase_session(c, base)
        assert c.get(base + "/api/sessions", headers={SESSION_HEADER: header}).status_code == 200
        assert c.get(base + "/api/sessions").status_code == 401  # the cookie alone: nothing
        page = c.get(base + "/sessions", headers={SESSION_HEADER: header}).text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf
        sid = header.split(".", 1)[0]
        # End it from a second session (as from another device), then it is refused.
        other = stack.client(timeout=30)
        other_header = _passphrase_session(other, base)
        other_page = other.get(base + "/sessions", headers={SESSION_HEADER: other_header}).text
        assert f"session-{sid}" in other_page
        other_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', other_page)
        assert other_csrf
        r = other.post(base + f"/api/sessions/{sid}/end",
                       data={"csrf": other_csrf.group(1), "next": "/sessions"},
                       headers={SESSION_HEADER: other_header, "origin": base})
        assert r.status_code == 200 and r.json()["location"] == "/sessions"
        other.close()
        assert c.get(base + "/api/sessions", headers={SESSION_HEADER: header}).status_code == 401
        r = c.get(base + "/", headers={SESSION_HEADER: header})
        assert r.status_code == 401 and "Sign in to your wallet" in r.text


@pytest.fixture
def hosted_wallet(home: WalletHome, keystore: Keystore,
                  request: pytest.FixtureRequest) -> Iterator[RunningWallet]:
    proxies: tuple[str, ...] = request.param
    options = ServeOptions(port=0, deployment=Deployment("https://wallet.capwallet.test",
                                                         proxies))
    with running_wallet(home, keystore, with_relay=False, options=options) as w:
        yield w


def _wrong(w: RunningWallet, forwarded_for: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{w.local_port}/signin/passphrase",
                      data={"passphrase": "not it"}, timeout=30,
                      headers={"host": "wallet.capwallet.test",
                               "origin": "https://wallet.capwallet.test",
                               "x-forwarded-for": forwarded_for,
                               "x-forwarded-proto": "https"})


@pytest.mark.parametrize("hosted_wallet", [("10.9.9.9/32",)], indirect=True)
def test_passphrase_throttled_and_untrusted_forwarded_for_ignored(
    hosted_wallet: RunningWallet, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="capwallet.signin")
    # Our address (127.0.0.1) is not a trusted proxy: each request claims another client,
    # and every claim is ignored. Three failures are free, then the delay starts.
    codes = [_wrong(hosted_wallet, f"203.0.113.{i}").status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    r = _wrong(hosted_wallet, "198.51.100.7")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "from this address" in r.text
    failures = [rec.getMessage() for rec in caplog.records if "failed" in rec.getMessage()]
    assert len(failures) == 3
    assert all("from 127.0.0.1 " in m for m in failures), failures
    assert not any("203.0.113" in rec.getMessage() for rec in caplog.records)
    assert not any("not it" in rec.getMessage() for rec in caplog.records)
    # The delay runs out; the next try is judged again (and, wrong, doubles the delay).
    time.sleep(int(r.headers["retry-after"]) + 0.2)
    assert _wrong(hosted_wallet, "x").status_code == 401
    again = _wrong(hosted_wallet, "x")
    assert again.status_code == 429 and int(again.headers["retry-after"]) >= 2


@pytest.mark.parametrize("hosted_wallet", [("127.0.0.1/32",)], indirect=True)
def test_trusted_proxy_forwarded_for_names_the_client(
    hosted_wallet: RunningWallet, caplog: pytest.LogCaptureFixture,
) -> None:
    """The control for the test above: from a trusted proxy, X-Forwarded-For is the client,
    so four different clients each get their free tries."""
    caplog.set_level(logging.INFO, logger="capwallet.signin")
    codes = [_wrong(hosted_wallet, f"203.0.113.{i}").status_code for i in range(4)]
    assert codes == [401, 401, 401, 401]
    assert any("from 203.0.113.3 " in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("hosted_wallet", [()], indirect=True)
def test_overall_throttle_meets_many_addresses(hosted_wallet: RunningWallet) -> None:
    signin = hosted_wallet.ctx.signin
    assert signin is not None
    for i in range(signin.throttle.overall_free):
        signin.throttle.failure(f"192.0.2.{i}")  # failures from many addresses
    r = _wrong(hosted_wallet, "")
    assert r.status_code == 429 and "at this wallet" in r.text
