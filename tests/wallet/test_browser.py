"""The wallet's pages in a real browser (Playwright driving Debian's Chromium).

Approve, lower a limit, deny; the dashboard showing the spend after calls; revoke in one
click; a pending approval approved in the page; a hostile page that tries to read usage,
revoke a grant or frame the wallet. Screenshots of the consent page, the dashboard and the
approvals page are saved under artifacts/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest

from capwallet import caveats as cav
from capwallet.client import ConnectError, connect, wait_for_approval
from capwallet.token import Token
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet

from .browser_session import open_page, sign_in_page
from .loopback_site import loopback_site

playwright_sync = pytest.importorskip("playwright.sync_api")
if TYPE_CHECKING:
    from playwright.sync_api import Dialog
expect = playwright_sync.expect

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PERMISSIONS: dict[str, Any] = {
    "providers": ["openai"], "models": ["gpt-4o-mini", "gpt-4.1-mini"],
    "budget": {"amount": "5.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 50000, "max_output_tokens": 2000,
    "scopes": ["posts:read", "posts:publish"], "ask_first": ["posts:publish"],
    "expires_in": 30 * 86400, "confirm_above": {"amount": "0.50", "currency": "USD"},
    "logging": "metadata",
}


@pytest.fixture
def page(browser: Any, wallet_relay: RunningWallet) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    sign_in_page(pg, wallet_relay)
    yield pg
    context.close()


def token_id_of(token: str) -> str:
    return Token.parse(token).token_id


def shot(pg: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _connect(wallet: RunningWallet, act: Any) -> Any:
    def open_browser(url: str) -> None:
        act(url)
    return connect("Blog Assistant", PERMISSIONS, wallet_url=wallet.base_url,
                   open_browser=open_browser, timeout=20)


def test_approve_in_the_browser(page: Any, wallet_relay: RunningWallet) -> None:
    def act(url: str) -> None:
        page.goto(url)
        assert page.inner_text("#consent-title") == "Blog Assistant wants to use AI"
        shot(page, "consent")
        page.click("#approve")
        page.wait_for_selector("text=You're connected")

    conn = _connect(wallet_relay, act)
    caveats = Token.parse(conn.token).caveats()
    assert cav.Models(("gpt-4.1-mini", "gpt-4o-mini")) in caveats
    assert any(isinstance(c, cav.Budget) and c.amount == 500 for c in caveats)
    assert cav.AskFirst(("posts:publish",)) in caveats


def test_lower_a_limit_and_drop_a_model(page: Any, wallet_relay: RunningWallet) -> None:
    def act(url: str) -> None:
        page.goto(url)
        page.fill("#budget", "0.75")
        page.fill("#max_input_tokens", "1000")
        page.uncheck("input[name=model][value='gpt-4.1-mini']")
        page.uncheck("input[name=scope][value='posts:publish']")
        page.select_option("#expires_in", str(7 * 86400))
        page.click("#approve")
        page.wait_for_selector("text=You're connected")

    conn = _connect(wallet_relay, act)
    caveats = Token.parse(conn.token).caveats()
    assert cav.Models(("gpt-4o-mini",)) in caveats
    assert cav.Scopes(("posts:read",)) in caveats
    assert cav.MaxInputTokens(1000) in caveats
    assert any(isinstance(c, cav.Budget) and c.amount == 75 for c in caveats)
    assert conn.expires_in is not None and conn.expires_in <= 7 * 86400


def test_raising_a_limit_in_the_page_is_refused(page: Any, wallet_relay: RunningWallet) -> None:
    def act(url: str) -> None:
        page.goto(url)
        page.fill("#budget", "50.00")
        page.click("#approve")
        assert "above the 5.00 USD the app asked for" in page.inner_text("#consent-error")
        page.click("#deny")  # the page stays usable: deny instead
        page.wait_for_selector("text=Not connected")

    with pytest.raises(ConnectError) as exc:
        _connect(wallet_relay, act)
    assert exc.value.error == "access_denied"
    assert wallet_relay.ctx.grants.list(statuses=("pending", "active")) == []


def test_deny_in_the_browser(page: Any, wallet_relay: RunningWallet) -> None:
    def act(url: str) -> None:
        page.goto(url)
        page.click("#deny")
        page.wait_for_selector("text=Not connected")

    with pytest.raises(ConnectError) as exc:
        _connect(wallet_relay, act)
    assert exc.value.error == "access_denied"


def test_an_empty_dashboard_says_what_to_do_first(page: Any,
                                                  wallet_relay: RunningWallet) -> None:
    w = wallet_relay
    open_page(page, w.base_url + "/")
    steps = page.locator("#first-steps")
    expect(steps).to_be_visible()
    text = steps.inner_text()
    assert "No app has asked to use AI yet." in text
    # what to run, with this wallet's own address in it
    assert f"python examples/blog_assistant/assistant.py --wallet {w.base_url}" in text
    assert 'capwallet.client.connect("My app", {...})' in text and "capwallet demo" in text
    assert page.locator("#step-provider").count() == 0  # it has a provider key
    # A name with no space in it (base_url) is never cut in two; a long command wraps at its
    # spaces (the page's code style breaks anywhere, which cut base_url into "base_ur" + "l").
    cut = page.eval_on_selector_all(
        "#first-steps code", "els => els.filter(e => !e.textContent.includes(' ')"
        " && e.getClientRects().length > 1).map(e => e.textContent)")
    assert cut == []
    shot(page, "dashboard-empty")
    # On a phone the steps fit the width: no sideways scroll.
    page.set_viewport_size({"width": 390, "height": 800})
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, wide
    shot(page, "dashboard-empty-390")
    page.set_viewport_size({"width": 1100, "height": 900})
    # Without a provider key, adding one comes first.
    assert w.ctx.keystore.remove_provider("openai")  # in memory only: the file keeps it
    open_page(page, w.base_url + "/")
    expect(page.locator("#step-provider")).to_contain_text("capwallet provider add openai")
    # Once an app has asked, the steps give way to the apps.
    issue_grant(w.ctx.grants, w.ctx.keystore.current_root_key, app="First app",
                caveats=[cav.Budget(100, "USD", "day")], source="cli", now=int(time.time()))
    open_page(page, w.base_url + "/")
    expect(page.locator(".app-name")).to_have_text("First app")
    assert page.locator("#first-steps").count() == 0


def test_dashboard_shows_spend_and_revoke_works(page: Any, wallet_relay: RunningWallet) -> None:
    def act(url: str) -> None:
        page.goto(url)
        page.click("#approve")
        page.wait_for_selector("text=You're connected")

    conn = _connect(wallet_relay, act)
    client = openai.OpenAI(api_key=conn.token, base_url=conn.openai_base_url, max_retries=0)
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini"):
        client.chat.completions.create(model=model, max_tokens=40,
                                       messages=[{"role": "user", "content": "Write a title"}])
    # A second app with a hostile name, to see that the page escapes it.
    issue_grant(wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key,
                app="<img src=x onerror=alert(1)>", caveats=[cav.Budget(100, "USD", "day")],
                source="cli", now=int(time.time()))
    dialogs: list[str] = []

    def on_dialog(d: Dialog) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    open_page(page, wallet_relay.base_url + "/")
    grant = page.locator(f"#grant-{conn.grant_id}")
    assert "of 5.00 USD this month" in grant.inner_text()
    assert "gpt-4o-mini" in page.inner_text("#per-model")
    assert "gpt-4.1-mini" in page.inner_text("#per-model")
    assert page.inner_text("#stat-calls") == "3"
    assert page.locator("svg.chart-wide rect.bar").count() == 30
    assert page.locator("text=<img src=x onerror=alert(1)>").count() >= 1  # shown as text
    shot(page, "dashboard")
    assert dialogs == []
    grant.locator("button:has-text('Revoke')").click()
    expect(page.locator(f"#grant-{conn.grant_id}")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                       messages=[{"role": "user", "content": "again"}])


def test_pending_approval_approved_in_the_page(page: Any, wallet_relay: RunningWallet) -> None:
    _, token = issue_grant(
        wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key, app="Blog Assistant",
        caveats=[cav.App("Blog Assistant"), cav.Models(("gpt-4o-mini",)),
                 cav.Budget(500, "USD", "month"), cav.ConfirmAbove(0, "USD")], source="cli",
        now=int(time.time()))
    client = openai.OpenAI(api_key=token, base_url=f"{wallet_relay.base_url}/v1",
                           max_retries=0)
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "summarise my blog"}]}
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(**kwargs)
    assert isinstance(exc.value.body, dict)
    rid = exc.value.body["approval_request_id"]
    open_page(page, wallet_relay.base_url + "/")
    page.click("a.banner")  # "1 request waiting for your approval"
    card = page.locator(f"#approval-{rid}")
    assert "gpt-4o-mini" in card.inner_text()
    # The relay's link marks its card; the card says which grant asks, and the app's name
    # once; a second grant of the same app name would differ by its grant id.
    open_page(page, f"{wallet_relay.base_url}/approvals/{rid}")
    card = page.locator(f"#approval-{rid}")
    assert "focused" in (card.get_attribute("class") or "")
    text = card.inner_text()
    assert text.count("Blog Assistant") == 1, text
    assert f"Grant {token_id_of(token)[:12]}" in text
    page.set_viewport_size({"width": 1280, "height": 800})
    shot(page, "approvals")
    card.locator("button:has-text('Approve this once')").click()
    page.wait_for_url(wallet_relay.base_url + "/approvals?done=approved")
    page.wait_for_selector("#wallet-shell", state="detached")
    assert page.inner_text("#approval-done").startswith("Approved.")
    expect(page.locator(f"#approval-{rid}")).to_have_count(0)
    approval = wait_for_approval(wallet_relay.base_url, token, rid, timeout=5)
    ok = client.chat.completions.create(**kwargs,
                                        extra_headers={"X-Capwallet-Approval": approval})
    assert ok.choices[0].message.content


@pytest.fixture
def hostile_site() -> Iterator[tuple[str, dict[str, str]]]:
    """Another web origin on this machine, serving whatever page a test puts in `pages`."""
    with loopback_site("localhost") as site:
        yield site.url, site.pages


def test_hostile_page_cannot_read_revoke_or_frame(
    page: Any, wallet_relay: RunningWallet, hostile_site: tuple[str, dict[str, str]]
) -> None:
    site, pages = hostile_site
    grant, _ = issue_grant(wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key,
                           app="Victim", caveats=[], source="cli", now=int(time.time()))
    w = wallet_relay.base_url
    pages["/read"] = f"""<html><body><pre id=out>running</pre><script>
      fetch("{w}/api/usage", {{credentials: "include"}})
        .then(r => r.text()).then(t => out.textContent = "READ " + t)
        .catch(e => out.textContent = "BLOCKED " + e);
    </script></body></html>"""
    pages["/revoke"] = f"""<html><body>
      <form id=f method=post action="{w}/grants/{grant.grant_id}/revoke">
        <input name=csrf value=guess></form>
      <script>f.submit()</script></body></html>"""
    pages["/frame"] = f"""<html><body><iframe id=fr src="{w}/"></iframe></body></html>"""
    # The user is signed in to the wallet in this browser (the page fixture did that).
    page.goto(site + "/read")
    page.wait_for_function("document.getElementById('out').textContent !== 'running'")
    assert page.inner_text("#out").startswith("BLOCKED")
    page.goto(site + "/revoke")
    page.wait_for_load_state()
    assert "forbidden" in page.content() or "refused" in page.content().lower()
    g = wallet_relay.ctx.grants.get(grant.grant_id)
    assert g is not None and g.status == "active"
    page.goto(site + "/frame")
    page.wait_for_timeout(300)
    frame = page.frame_locator("#fr")
    assert frame.locator("text=Victim").count() == 0  # X-Frame-Options / frame-ancestors


def test_consent_prices_warnings_unlimited_and_layout(page: Any,
                                                      wallet_relay: RunningWallet) -> None:
    """The consent page prices each model from the relay's own table and says what the budget
    buys; warns about a provider without a key and a model without a price; shows limits the
    app did not ask for as "no limit" with a field to add one; scopes in the app's words
    beside the raw scope; Approve and Deny in view at 1280x800; no sideways scroll at 390 px."""
    perms = {
        "providers": ["openai", "anthropic"], "models": ["gpt-4o-mini", "mystery-1"],
        "budget": {"amount": "5.00", "currency": "USD", "period": "month"},
        "scopes": ["posts:read"], "scope_descriptions": {"posts:read": "Read your blog posts"},
    }

    def act(url: str) -> None:
        page.set_viewport_size({"width": 1280, "height": 800})
        open_page(page, url)
        price = page.inner_text(".price[data-model='gpt-4o-mini']")
        # 1,000 in + 500 out at 0.15 / 0.60 USD per million = 0.00045 USD; 5.00 USD / that:
        assert "0.15 / 0.60 USD per million tokens in / out" in price
        assert "about 11,111 calls of 1,000 in + 500 out tokens" in price
        warnings = page.inner_text("#consent-warnings")
        assert "no key for anthropic" in warnings and "mystery-1" in warnings
        for field in ("max_input_tokens", "max_output_tokens", "confirm_above"):
            assert "No limit asked" in page.inner_text(f"#unlimited-{field}")
            assert page.get_attribute(f"#{field}", "placeholder") == "no limit"
        assert "Read your blog posts posts:read" in " ".join(
            page.inner_text(".scope label").split())
        for button in ("#approve", "#deny"):
            box = page.locator(button).bounding_box()
            assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 800, box
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "consent-1280x800.png"))  # what the user sees first
        shot(page, "consent-prices")
        page.set_viewport_size({"width": 390, "height": 800})
        wide = page.evaluate("""[...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > 391)
            .map(e => e.tagName + '.' + e.className).slice(0, 8)""")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
        page.screenshot(path=str(SHOTS / "consent-390.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.fill("#max_input_tokens", "4000")  # add a limit the app did not ask for
        page.uncheck("input[name=model][value='mystery-1']")
        page.click("#approve")
        page.wait_for_selector("text=You're connected")

    conn = connect("Blog Assistant", perms, wallet_url=wallet_relay.base_url,
                   open_browser=act, timeout=30)
    caveats = Token.parse(conn.token).caveats()
    assert cav.MaxInputTokens(4000) in caveats
    assert cav.Models(("gpt-4o-mini",)) in caveats


def test_dashboard_every_currency_quota_words_and_mobile(page: Any,
                                                         wallet_relay: RunningWallet) -> None:
    """Spend in USD and EUR each get a chart (none dropped), whose axis labels fit; a grant
    with only a token quota shows the quota, not 'no limits'; a sub-task's token's calls show
    under its grant, marked, with its own limits; refusals are in words; amounts
    are short with the exact value in a tooltip; a per-day breakdown by app and model; at
    390 px the page does not scroll sideways."""
    ctx, now = wallet_relay.ctx, int(time.time())
    key = ctx.keystore.current_root_key
    _, usd = issue_grant(ctx.grants, key, app="Blog Assistant", source="cli", now=now,
                         caveats=[cav.App("Blog Assistant"), cav.Budget(500, "USD", "month")])
    _, eur = issue_grant(ctx.grants, key, app="Notes", source="cli", now=now,
                         caveats=[cav.App("Notes"), cav.Budget(300, "EUR", "month")])
    _, quota = issue_grant(ctx.grants, key, app="Quota Bot", source="cli", now=now,
                           caveats=[cav.App("Quota Bot"), cav.Models(("gpt-4o-mini",)),
                                    cav.TokenQuota(100_000, "day")])
    child = Token.parse(usd).attenuate([cav.App("proofreader"), cav.Models(("gpt-4o-mini",)),
                                        cav.Budget(5, "USD", "total")]).serialize()
    for token, model in ((usd, "gpt-4o-mini"), (usd, "gpt-4.1-mini"), (eur, "gpt-4o-mini"),
                         (quota, "gpt-4o-mini"), (child, "gpt-4o-mini")):
        client = openai.OpenAI(api_key=token, base_url=f"{wallet_relay.base_url}/v1",
                               max_retries=0)
        client.chat.completions.create(model=model, max_tokens=20,
                                       messages=[{"role": "user", "content": "hello"}])
    with pytest.raises(openai.APIStatusError):
        openai.OpenAI(api_key=quota, base_url=f"{wallet_relay.base_url}/v1",
                      max_retries=0).chat.completions.create(
            model="gpt-4.1-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    page.set_viewport_size({"width": 1280, "height": 800})
    open_page(page, wallet_relay.base_url + "/")
    for currency in ("USD", "EUR"):
        chart = page.locator(f"#chart-{currency}")
        assert chart.count() == 1, currency
        # every axis label starts inside the drawing: none is cut off at the left edge
        lefts = chart.evaluate("svg => [...svg.querySelectorAll('text.tick')]"
                               ".map(t => t.getBBox().x)")
        assert min(lefts) >= 0, (currency, lefts)
    # The sub-task's calls: under its grant, marked, with its own limits (issue 14).
    sub_id = Token.parse(child).chain_id
    sub = page.locator(f"#grant-{Token.parse(usd).token_id} #subtask-{sub_id}")
    expect(sub).to_have_count(1)
    text = sub.inner_text()
    assert "sub-task" in text and sub_id[:8] in text and "1 call" in text
    assert sub.locator(".subtask-label").inner_text() == "proofreader"
    assert "of 0.05 USD in total" in text and "models: gpt-4o-mini" in text
    assert sub.locator("svg.meter").count() == 1
    # Its budget's spend is short like every amount on the page, exact in its tooltip (it
    # was the exact micro amount, e.g. 0.00001095 USD of 0.05 USD in total)
    sub_spent = sub.locator(".subtask-limits .spend-text .amount")
    expect(sub_spent).to_have_count(1)
    sub_exact = (sub_spent.get_attribute("title") or "").split()[0]
    sub_digits = sub_spent.inner_text().split()[0].replace(".", "").lstrip("0")
    assert len(sub_digits) <= 3 and sub_exact.startswith("0.0000"), (sub_spent, sub_exact)
    assert sub_exact not in text, text  # the exact amount only in the tooltip
    assert page.locator(f"#grant-{Token.parse(eur).token_id} .subtask").count() == 0
    marked = page.locator("#recent tr.subtask-call")
    assert marked.count() == 1 and f"sub-task {sub_id[:8]}" in marked.inner_text()
    sub.locator("xpath=..").screenshot(path=str(SHOTS / "dashboard-subtask.png"))
    # A grant's spend is short like every amount (3 significant digits), exact in its tooltip
    spent = page.locator(f"#grant-{Token.parse(usd).token_id} > .spend-text .amount")
    exact = (spent.get_attribute("title") or "").split()[0]
    digits = spent.inner_text().split()[0].replace(".", "").lstrip("0")
    assert len(digits) <= 3 and exact.startswith("0.0000") and len(exact) > 2, (spent, exact)
    quota_card = page.locator(f"#grant-{Token.parse(quota).token_id}")
    assert "at most 100,000 model tokens per day" in quota_card.inner_text()
    assert "no spending limit" not in quota_card.inner_text()
    recent = page.inner_text("#recent")
    assert "refused: model not allowed" in recent and "denied:" not in recent
    title = page.locator("#recent .amount").first.get_attribute("title") or ""
    assert title.endswith(" USD") or title.endswith(" EUR")
    per_day = page.inner_text("#per-day")
    assert "Notes" in per_day and "Quota Bot" in per_day and "gpt-4.1-mini" in per_day
    shot(page, "dashboard-currencies")
    page.set_viewport_size({"width": 800, "height": 800})  # a small laptop window
    lines = page.evaluate("""[...document.querySelectorAll('#recent tbody td:nth-child(3)')]
        .map(td => { const r = document.createRange(); r.selectNodeContents(td);
                     return r.getClientRects().length; })""")
    assert lines and max(lines) == 1, lines  # a model name is not broken at its hyphens
    page.set_viewport_size({"width": 390, "height": 800})
    wide = page.evaluate("""[...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > 391 && !e.closest('.scroll'))
        .map(e => e.tagName + '.' + e.className).slice(0, 8)""")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
    for currency in ("USD", "EUR"):  # the phone's chart: labels a person can read
        expect(page.locator(f"#chart-{currency}")).to_be_hidden()
        narrow = page.locator(f"#chart-{currency}-narrow")
        expect(narrow).to_be_visible()
        sizes = narrow.evaluate("svg => [...svg.querySelectorAll('text.tick')].map(t => "
                                "[t.getBoundingClientRect().height, t.getBBox().x])")
        assert all(h >= 9 and x >= 0 for h, x in sizes), (currency, sizes)
    page.screenshot(path=str(SHOTS / "dashboard-390.png"), full_page=True)


def test_dashboard_notifies_when_an_approval_waits(page: Any,
                                                   wallet_relay: RunningWallet) -> None:
    """While the dashboard is open and notifications are allowed, a new pending approval
    shows a browser notification (Notification stands in for the browser's own here)."""
    page.context.add_init_script("""
        window.__notes = [];
        window.Notification = class {
          constructor(title, options) { window.__notes.push([title, options.body]); }
          static get permission() { return "granted"; }
          static requestPermission() { return Promise.resolve("granted"); }
        };""")
    open_page(page, wallet_relay.base_url + "/")
    page.wait_for_selector("#approval-watch")
    # "Notify me" looks like a link to click, not like the muted sentence around it
    look = page.eval_on_selector("#approval-notify", """b => [getComputedStyle(b).color,
        getComputedStyle(b).textDecorationLine, getComputedStyle(b.parentElement).color]""")
    assert look[1] == "underline" and look[0] != look[2], look
    page.wait_for_timeout(1000)  # the first poll records that nothing waits
    assert page.evaluate("window.__notes") == []
    _, token = issue_grant(
        wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key, app="Blog Assistant",
        caveats=[cav.App("Blog Assistant"), cav.Budget(500, "USD", "month"),
                 cav.ConfirmAbove(0, "USD")], source="cli", now=int(time.time()))
    client = openai.OpenAI(api_key=token, base_url=f"{wallet_relay.base_url}/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                       messages=[{"role": "user", "content": "expensive"}])
    deadline = time.monotonic() + 20  # (wait_for_function would eval under the page's CSP)
    while not page.evaluate("window.__notes.length") and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    [[title, body]] = page.evaluate("window.__notes")
    assert title == "capwallet: an app is waiting for your approval" and body.startswith("1 ")
    assert "Notifications are on" in page.inner_text("#approval-watch")
