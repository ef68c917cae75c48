"""Two edges of the wallet's pages, in a real browser (Playwright driving Debian's Chromium).

An expired grant is over: the dashboard offers no Revoke button for it (a grant a relay still
takes, in the verifier's clock allowance after its expiry, keeps its button), and a revocation
posted for it anyway (an old page, a script) stays harmless and idempotent. On a phone the
dashboard's wide tables (each day's spend, the recent calls) stack their rows instead of
running columns off the card's edge, and a long origin wraps on the dashboard and the
approvals page; a desktop window keeps the tables as they were. The consent page, where the
user reads who asks and where the answer goes, fits a phone with a long origin and a long
redirect URI, and a desktop shows the redirect URI on one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import openai
import pytest

from capwallet import caveats as cav
from capwallet.keys import Keyring
from capwallet.reasons import Reason
from capwallet.store import open_store
from capwallet.verify import CLOCK_SKEW, Request, verify
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet

from .browser_session import open_page, sign_in_page
from .conftest import csrf_of, navigated_to, signed_in
from .oauth_helpers import authorize_params

pytest.importorskip("playwright.sync_api")

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# An origin with no break opportunity but its punctuation (an app chooses its own).
LONG_ORIGIN = "https://assistantquarterlyresearchnotebooks.examplecompanyworldwide.com"


@pytest.fixture
def page(browser: Any, wallet_relay: RunningWallet) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    pg = context.new_page()
    sign_in_page(pg, wallet_relay)
    yield pg
    context.close()



def call(w: RunningWallet, token: str, model: str = "gpt-4o-mini") -> None:
    client = openai.OpenAI(api_key=token, base_url=f"{w.base_url}/v1", max_retries=0)
    client.chat.completions.create(model=model, max_tokens=20,
                                   messages=[{"role": "user", "content": "hello"}])


async def _is_revoked(store_url: str, token_id: str) -> bool:
    store = open_store(store_url)
    try:
        return await store.is_revoked(token_id)
    finally:
        await store.close()


def test_an_expired_grant_offers_no_revoke(page: Any, wallet_relay: RunningWallet) -> None:
    w, now = wallet_relay, int(time.time())
    ctx, key = w.ctx, w.ctx.keystore.current_root_key

    def grant(app: str, issued: int, expires: int) -> tuple[str, str]:
        g, token = issue_grant(ctx.grants, key, app=app, source="cli", now=issued,
                               caveats=[cav.App(app), cav.Budget(100, "USD", "month"),
                                        cav.Expires(expires)])
        return g.grant_id, token

    live, live_token = grant("Live App", now, now + 30 * 86400)
    old, old_token = grant("Old App", now - 10 * 86400, now - 86400)
    # expired 5 s ago: past its expiry, but a relay takes it for CLOCK_SKEW more seconds
    just, just_token = grant("Just Expired", now - 3600, now - 5)
    call(w, live_token)
    call(w, just_token)  # still taken: revoking it still stops something
    with pytest.raises(openai.AuthenticationError):
        call(w, old_token)  # over: nothing left to revoke
    open_page(page, w.base_url + "/")
    revoke = "button:has-text('Revoke')"
    assert page.locator(f"#grant-{live} {revoke}").count() == 1
    assert "expired" in page.inner_text(f"#grant-{old}")
    assert page.locator(f"#grant-{old} {revoke}").count() == 0
    assert time.time() < now - 5 + CLOCK_SKEW  # (the page was read in the allowance)
    assert page.locator(f"#grant-{just} {revoke}").count() == 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(f"#grant-{old}").screenshot(path=str(SHOTS / "dashboard-expired-grant.png"))
    # A revocation posted for the expired grant anyway (a page loaded before it expired):
    # it goes through, twice, and only marks it revoked.
    with signed_in(w) as client:
        csrf = csrf_of(client.get("/").text)
        for _ in range(2):
            r = client.post(f"/grants/{old}/revoke", data={"csrf": csrf},
                            headers={"origin": w.base_url})
            assert navigated_to(r) == "/"
    after = ctx.grants.get(old)
    assert after is not None and after.status == "revoked"
    with ThreadPoolExecutor(1) as pool:  # (Playwright's loop runs in this thread)
        assert pool.submit(asyncio.run, _is_revoked(ctx.home.store_url, old)).result()
    live_grant = ctx.grants.get(live)
    assert live_grant is not None and live_grant.status == "active"


def test_revoke_stays_while_a_relay_with_a_slower_clock_takes_the_token(
        wallet: RunningWallet) -> None:
    # The verifier's 60 s leeway absorbs a difference between the minter's clock and the
    # verifier's (spec/security.md): a relay whose clock is up to CLOCK_SKEW behind the
    # wallet's takes a token until the wallet's expires + 2 * CLOCK_SKEW. Until then the
    # dashboard keeps Revoke (review11: with expires + CLOCK_SKEW it hid the button while such
    # a relay still took the token; seen failing on 7280660); after that it offers none.
    now = int(time.time())
    key = wallet.ctx.keystore.current_root_key
    call = Request(provider="openai", model="gpt-4o-mini", operation="chat")

    def grant(app: str, expires: int) -> tuple[str, str]:
        g, token = issue_grant(wallet.ctx.grants, key, app=app, source="cli", now=now - 3600,
                               caveats=[cav.App(app), cav.Expires(expires)])
        return g.grant_id, token

    skewed, skewed_token = grant("Skewed", now - CLOCK_SKEW - 30)
    over, over_token = grant("Over", now - 2 * CLOCK_SKEW - 30)
    behind = now - (CLOCK_SKEW - 1)  # a relay's clock, 59 s behind the wallet's
    assert verify(skewed_token, Keyring([key]), call, behind).allowed
    refused = verify(over_token, Keyring([key]), call, behind)
    assert not refused.allowed and refused.reason is Reason.EXPIRED
    with signed_in(wallet) as client:
        page = client.get("/").text
    assert time.time() < now + 25  # (the page was read before the first grant's time is up)
    assert f'action="/grants/{skewed}/revoke"' in page
    assert f'action="/grants/{over}/revoke"' not in page
    assert f'id="grant-{skewed}"' in page and f'id="grant-{over}"' in page


# Every element of a wide table's card that runs past the card's content box, or a table
# wider than its scrolling wrapper (its last columns hidden behind a scroll).
OVERRUN = """sel => { const t = document.querySelector(sel), box = t.closest('.scroll');
  const right = box.getBoundingClientRect().right + 0.5;
  const out = [...t.querySelectorAll('td, td *')].filter(e => e.getClientRects().length
      && e.getBoundingClientRect().right > right).map(e => e.tagName + ' ' + e.textContent);
  return [box.scrollWidth - box.clientWidth, out.slice(0, 6)]; }"""


def test_the_dashboard_fits_a_phone(page: Any, wallet_relay: RunningWallet) -> None:
    w, now = wallet_relay, int(time.time())
    ctx, key = w.ctx, w.ctx.keystore.current_root_key
    long_app = "Quarterly Research Notebook Summariser"
    _, blog = issue_grant(ctx.grants, key, app="Blog Assistant", source="cli", now=now,
                          caveats=[cav.App("Blog Assistant"), cav.Models(("gpt-4o-mini",)),
                                   cav.Budget(500, "USD", "month")])
    _, notes = issue_grant(ctx.grants, key, app=long_app, source="oauth", now=now,
                           origin=LONG_ORIGIN,
                           caveats=[cav.App(long_app), cav.Budget(300, "USD", "month"),
                                    cav.ConfirmAbove(0, "USD")])
    call(w, blog)
    with pytest.raises(openai.APIStatusError):
        call(w, blog, "gpt-4.1-mini")  # refused: model not allowed (a long result)
    with pytest.raises(openai.PermissionDeniedError):
        call(w, notes, "gpt-4.1-mini")  # waits for approval: the approvals page has a card
    open_page(page, w.base_url + "/")
    per_day = page.inner_text("#per-day")
    assert "Blog Assistant" in per_day and " call" not in per_day  # a table: "Calls" heads it
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "dashboard-1280x900.png"), full_page=True)

    page.set_viewport_size(PHONE)
    wide = page.evaluate("""[...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
        .map(e => e.tagName + '.' + e.className).slice(0, 8)""")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], wide
    for table in ("#per-day", "#recent"):
        hidden, out = page.evaluate(OVERRUN, table)
        assert hidden <= 0 and out == [], (table, hidden, out)
    # Each row still says all it said as a table: the headings' words move into the rows.
    rows = page.locator("#per-day tbody tr")
    assert rows.count() == 1
    cost = page.inner_text("#per-day tbody td:last-child")
    assert cost.endswith(" USD")
    assert rows.first.inner_text().split("\n") == [  # in the page's order, not the eye's
        time.strftime("%Y-%m-%d", time.gmtime(now)), "Blog Assistant", "gpt-4o-mini (openai)",
        "1 call", cost]
    refused = page.locator("#recent tbody tr", has_text="model not allowed")
    assert "model not allowed" in refused.inner_text()
    assert "0 / 0 tokens in / out" in refused.inner_text()
    page.screenshot(path=str(SHOTS / "dashboard-390x844.png"), full_page=True)

    open_page(page, w.base_url + "/approvals")
    card = page.locator(".approval")
    assert card.count() == 1 and LONG_ORIGIN in card.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(SHOTS / "approvals-390x844.png"), full_page=True)

    # Back on a desktop: the tables are tables again, one line per row.
    page.set_viewport_size(DESKTOP)
    open_page(page, w.base_url + "/")
    for table in ("#per-day", "#recent"):
        assert page.locator(f"{table} thead").is_visible()
        tops = page.eval_on_selector_all(
            f"{table} tbody tr:first-child td", "tds => tds.map(td => td.offsetTop)")
        assert len(tops) >= 5 and len(set(tops)) == 1, (table, tops)


def test_the_consent_page_fits_a_phone_with_a_long_origin(
        page: Any, wallet_relay: RunningWallet) -> None:
    # Who asks and where the answer goes are what the user must read before approving: they
    # wrap inside the card, on a phone and on a desktop (review11: the redirect URI, kept on
    # one line by white-space: nowrap, and a long origin pushed a web app's consent page to
    # 848 px at 390 and its header past the card's edge at 1280; a native app's long callback
    # path, to 665 px; seen failing on 721e199). A redirect URI that fits a line still reads
    # whole on one.
    app = "Quarterly Research Notebook Summariser"
    native = "http://127.0.0.1:53682/callback/notebooksummarisercallbackpath0123456789"
    cases = [(LONG_ORIGIN, LONG_ORIGIN + "/oauth/callbackforthenotebookapp", "web"),
             ("", native, "native"), ("", "http://127.0.0.1:53682/callback", "short")]
    past_card = """() => { const right = document.querySelector('.consent')
            .getBoundingClientRect().right + 0.5;
        return [...document.querySelectorAll('.who *')]
            .filter(e => e.getBoundingClientRect().right > right)
            .map(e => e.tagName + '.' + e.className); }"""
    lines = """() => { const r = document.createRange();
        r.selectNodeContents(document.querySelector('#consent-origin code'));
        return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }"""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for client_id, redirect, name in cases:
        params, _ = authorize_params(app_name=app, redirect_uri=redirect,
                                     **({"client_id": client_id} if client_id else {}))
        url = wallet_relay.base_url + "/authorize?" + urlencode(params)
        for size in (PHONE, DESKTOP):
            page.set_viewport_size(size)
            open_page(page, url)
            origin = page.inner_text("#consent-origin")
            assert redirect in origin and client_id in origin
            assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], (
                name, size)
            assert page.evaluate(past_card) == [], (name, size)
            if name == "short":
                assert page.evaluate(lines) == 1, size
            page.screenshot(path=str(SHOTS / f"consent-{name}-{size['width']}.png"),
                            full_page=True)
