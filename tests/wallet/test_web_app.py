"""The web example (examples/web_app/) in real Chromium: the page on one loopback origin, the
wallet and relay on another, the capwallet npm package and the official openai npm SDK
loaded by the page itself (import map, no build step).

Connect (consent in a popup), a streamed completion in the page, a reload that keeps the
token in sessionStorage (and nothing in localStorage), a sub-task token, a spent budget
shown in the page, a confirm-above approval round trip, revoke in the dashboard, a third
origin that cannot use the token, a blocked popup that falls back to a full-page redirect,
and bad input (a wrong state, a replayed code) as typed errors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from capwallet.wallet.example_site import PAGE_PATH, missing_files, running_example_site
from capwallet.wallet.runner import RunningWallet

from .browser_session import launch_chromium, sign_in_page

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
KEY = "blog-assistant.connection"


@pytest.fixture(scope="module", autouse=True)
def _npm_packages() -> None:
    """The page loads the capwallet and openai npm packages from node_modules."""
    assert missing_files() == [], "run `npm ci` at the repository root first"


@pytest.fixture
def site() -> Iterator[str]:
    with running_example_site() as origin:
        yield origin


def app_url(site: str, w: RunningWallet) -> str:
    return f"{site}{PAGE_PATH}?wallet={quote(w.base_url, safe=':/')}"


@contextlib.contextmanager
def signed_in_context(browser: Any, w: RunningWallet) -> Iterator[tuple[Any, Any]]:
    """A browser profile whose user is signed in to the wallet: (context, wallet page)."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    wallet_page = context.new_page()
    sign_in_page(wallet_page, w)
    try:
        yield context, wallet_page
    finally:
        context.close()


def open_app(context: Any, url: str) -> Any:
    page = context.new_page()
    page.on("pageerror", lambda e: print("page error:", e))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def connect_in_popup(context: Any, page: Any, *, budget: str | None = None) -> Any:
    """Click "Connect your AI wallet" and approve in the consent popup."""
    with context.expect_page() as info:
        page.click("#connect")
    popup = info.value
    popup.wait_for_selector("#approve")
    assert "Blog Assistant" in popup.inner_text("#consent-title")
    if budget is not None:
        popup.fill("#budget", budget)
    popup.click("#approve")
    popup.wait_for_event("close")
    page.wait_for_selector("#app-panel:not([hidden])")
    return popup


def stored(page: Any) -> dict[str, Any] | None:
    data: dict[str, Any] | None = json.loads(
        page.evaluate(f"sessionStorage.getItem('{KEY}')") or "null")
    return data


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def ask(page: Any, button: str = "#ask") -> None:
    page.click(button)
    page.wait_for_function(
        "() => !document.querySelector('#ask').disabled", timeout=30_000)


def approve_pending(wallet_page: Any, w: RunningWallet) -> None:
    wallet_page.goto(w.base_url + "/approvals")
    wallet_page.locator("button:has-text('Approve this once')").first.click()
    wallet_page.wait_for_load_state()


def test_connect_stream_reload_subtask_approve_revoke(
        browser: Any, wallet_relay: RunningWallet, site: str) -> None:
    w = wallet_relay
    with signed_in_context(browser, w) as (context, wallet_page):
        page = open_app(context, app_url(site, w))
        assert page.inner_text("#connect") == "Connect your AI wallet"
        connect_in_popup(context, page)
        conn = stored(page)
        assert conn is not None
        assert conn["token"].startswith("cwt1_") and conn["relayUrl"] == w.base_url
        assert conn["walletUrl"] == w.base_url
        assert page.evaluate("localStorage.length") == 0
        grant = w.ctx.grants.get(conn["grantId"])
        assert grant is not None and grant.origin == site
        assert f"only from {site}" in page.inner_text("#limits")  # the token's origin caveat

        # A completion streamed into the page by the openai npm SDK, through the relay.
        ask(page)
        answer = page.inner_text("#answer")
        assert answer.strip(), "no streamed answer in the page"
        assert int(page.get_attribute("#answer", "data-chunks") or 0) > 1  # it came in pieces
        assert page.is_hidden("#error")
        shot(page, "web_app_answer")

        # A reload keeps the connection (sessionStorage), still nothing in localStorage.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.is_visible("#app-panel") and page.is_hidden("#connect-panel")
        assert stored(page) == conn
        assert page.evaluate("localStorage.length") == 0

        # A sub-task token: attenuated in the page, narrower, and it works.
        ask(page, "#subtask")
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert "models gpt-4o-mini" in page.inner_text("#subtask-limits")
        assert page.inner_text("#subtask-answer").strip()
        # The dashboard shows it under the app's grant by the chain id the page shows.
        chain = page.get_attribute("#subtask-limits", "data-chain") or ""
        assert f"Sub-task {chain[:8]}:" in page.inner_text("#subtask-limits")
        row = wallet_page.locator(f"#grant-{conn['grantId']} #subtask-{chain}")
        for _ in range(40):  # the relay records a chain off the request path
            wallet_page.goto(w.base_url + "/")
            if row.count():
                break
            wallet_page.wait_for_timeout(250)
        assert "typo fixer" in row.inner_text() and "of 0.01 USD in total" in row.inner_text()

        # Above confirm-above (0.01 USD): the page asks, the user approves in the wallet,
        # the page retries with the approval and shows the answer.
        page.fill("#prompt", "Draft the whole post.")
        page.click("#long")
        page.wait_for_selector("#approval:not([hidden])")
        assert "0.01 USD" in page.inner_text("#approval-text")
        link = page.get_attribute("#approval-link", "href")
        assert link is not None and link.startswith(w.base_url + "/approvals/")
        approve_pending(wallet_page, w)
        page.wait_for_selector("#approval", state="hidden", timeout=30_000)
        page.wait_for_function("() => !document.querySelector('#ask').disabled")
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert page.inner_text("#answer").strip()

        # Revoke in the dashboard: the page's next call is refused.
        wallet_page.goto(w.base_url + "/")
        wallet_page.locator(f"#grant-{conn['grantId']} button:has-text('Revoke')").click()
        wallet_page.wait_for_load_state()
        ask(page)
        assert page.is_visible("#error")
        assert page.get_attribute("#error", "data-code") == "connection_refused"
        assert page.inner_text("#answer") == ""


def test_a_spent_budget_is_shown_in_the_page(
        browser: Any, wallet_relay: RunningWallet, fake_provider: str, site: str) -> None:
    w = wallet_relay
    with signed_in_context(browser, w) as (context, _):
        page = open_app(context, app_url(site, w))
        connect_in_popup(context, page, budget="0.01")
        assert "budget 0.01 USD per month" in page.inner_text("#limits")
        # The relay caps the long draft at what the budget affords; the provider's answer
        # (6,200 tokens of gpt-4.1-mini, 0.00992 USD) spends nearly all of it.
        httpx.post(f"{fake_provider}/_fake/faults", json={"mode": "long:6200"}).raise_for_status()
        ask(page, "#long")
        assert page.is_hidden("#error"), page.inner_text("#error")
        ask(page)
        assert page.get_attribute("#error", "data-code") == "budget_exceeded"
        assert "budget you gave this app is used up" in page.inner_text("#error")
        assert "USD left" in page.inner_text("#error")  # the relay says how much is left
        assert page.inner_text("#answer") == ""
        assert page.is_hidden("#approval")
        shot(page, "web_app_budget")


def test_a_third_origin_cannot_use_the_token(
        browser: Any, wallet_relay: RunningWallet, site: str) -> None:
    w = wallet_relay
    with signed_in_context(browser, w) as (context, _), running_example_site() as third:
        page = open_app(context, app_url(site, w))
        connect_in_popup(context, page)
        kept = stored(page)
        assert kept is not None
        token = kept["token"]
        other = open_app(context, app_url(third, w))
        # The token, stolen into a page on another origin: the browser refuses the call
        # (the relay answers CORS only for the granted origin).
        result = other.evaluate("""async ([relay, token]) => {
            try {
              const r = await fetch(relay + '/v1/chat/completions', {method: 'POST',
                headers: {authorization: 'Bearer ' + token, 'content-type': 'application/json'},
                body: JSON.stringify({model: 'gpt-4o-mini', max_tokens: 5,
                                      messages: [{role: 'user', content: 'hi'}]})});
              return 'status ' + r.status;
            } catch (err) { return 'refused: ' + err.message; }
        }""", [w.base_url, token])
        assert result.startswith("refused"), result
        # The preflight itself is refused for that origin, and allowed for the granted one.
        pre = {o: httpx.options(f"{w.base_url}/v1/chat/completions", headers={
            "origin": o, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type"}) for o in (site, third)}
        assert pre[site].headers.get("access-control-allow-origin") == site
        assert "access-control-allow-origin" not in pre[third].headers
        assert pre[third].status_code == 403
        # Past the browser (a client that sends any Origin it likes), the relay itself refuses
        # the token from the third origin: it carries an origin caveat for the granted one.
        body = {"model": "gpt-4o-mini", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]}
        auth = {"authorization": f"Bearer {token}"}
        r = httpx.post(f"{w.base_url}/v1/chat/completions", json=body,
                       headers={**auth, "origin": third})
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_mismatch", r.text
        ok = httpx.post(f"{w.base_url}/v1/chat/completions", json=body,
                        headers={**auth, "origin": site})
        assert ok.status_code == 200, ok.text
        # Polling an approval's status: readable by the token's own origin, not by the third.
        status = f"{w.base_url}/approvals/{'0' * 32}/status"
        got = {o: httpx.get(status, headers={"origin": o, "authorization": f"Bearer {token}"})
               for o in (site, third)}
        assert got[site].status_code == 404 and got[site].json()["error"] == "not_found"
        assert got[site].headers.get("access-control-allow-origin") == site
        assert got[third].status_code == 404
        assert "access-control-allow-origin" not in got[third].headers
        status_pre = {o: httpx.options(status, headers={
            "origin": o, "access-control-request-method": "GET",
            "access-control-request-headers": "authorization"}) for o in (site, third)}
        assert status_pre[site].headers.get("access-control-allow-origin") == site
        assert status_pre[third].status_code == 403


def test_a_blocked_popup_falls_back_to_a_redirect(
        playwright: Any, wallet_relay: RunningWallet, site: str) -> None:
    w = wallet_relay
    # Playwright turns Chromium's popup blocker off by default; keep it on here, and click
    # from a script with no user gesture (an init script: page.evaluate would count as one),
    # as a page that connects on load would.
    b = launch_chromium(playwright, ignore_default_args=["--disable-popup-blocking"])
    try:
        with signed_in_context(b, w) as (context, _):
            context.add_init_script(
                "if (location.search.includes('autoconnect')) addEventListener('load', () =>"
                " setTimeout(() => document.getElementById('connect').click(), 300));")
            page = context.new_page()
            codes: list[str] = []
            page.on("framenavigated", lambda f: codes.extend(
                parse_qs(urlsplit(f.url).query).get("code", [])) if f == page.main_frame else None)
            page.goto(app_url(site, w) + "&autoconnect")
            page.wait_for_url(f"{w.base_url}/authorize?*")  # the same tab, not a popup
            assert len(context.pages) == 2
            page.click("#approve")
            page.wait_for_url(f"{site}{PAGE_PATH}*")
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_selector("#app-panel:not([hidden])")
            assert "code=" not in page.url  # handleRedirect took the code out of the URL
            conn = stored(page)
            assert conn is not None and conn["token"].startswith("cwt1_")
            ask(page)
            assert page.inner_text("#answer").strip()

            # Bad input: the same code again is refused by the wallet (typed, invalid_grant).
            assert len(codes) == 1
            replay = page.evaluate("""async ([code, wallet, redirect]) => {
                const m = await import('capwallet');
                try {
                  await m.exchangeCode({tokenEndpoint: wallet + '/token', issuer: wallet, code,
                    verifier: 'x'.repeat(43), redirectUri: redirect});
                  return 'accepted';
                } catch (err) { return [err.name, err.code]; }
            }""", [codes[0], w.base_url, site + PAGE_PATH])
            assert replay == ["OAuthError", "invalid_grant"]
    finally:
        b.close()


def test_closing_the_consent_popup_is_popup_closed(
        browser: Any, wallet_relay: RunningWallet, site: str) -> None:
    w = wallet_relay
    with signed_in_context(browser, w) as (context, _):
        page = open_app(context, app_url(site, w))
        with context.expect_page() as info:
            page.click("#connect")
        popup = info.value
        popup.wait_for_selector("#approve")  # the consent page is up; the user reads it,
        popup.wait_for_timeout(1000)          # then closes the window
        popup.close()
        page.bring_to_front()
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        assert page.get_attribute("#error", "data-code") == "popup_closed"
        assert page.is_visible("#connect-panel")
        assert w.ctx.grants.list(statuses=("active", "revoked", "pending")) == []


def test_an_answer_with_a_wrong_state_is_a_typed_error(
        browser: Any, wallet_relay: RunningWallet, site: str) -> None:
    w = wallet_relay
    with signed_in_context(browser, w) as (context, _):
        page = open_app(context, app_url(site, w) + "&code=forged&state=not-ours")
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        assert page.get_attribute("#error", "data-code") == "state_mismatch"
        assert page.is_visible("#connect-panel")
        assert stored(page) is None
        assert w.ctx.grants.list(statuses=("active", "revoked", "pending")) == []


README = Path(__file__).resolve().parents[2] / "README.md"
REPO = README.parent


def readme_web_snippet() -> str:
    """The js block of the README's "Web apps" section."""
    text = README.read_text()
    section = text.split("\n## Web apps\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```js\n", 1)[1].split("```", 1)[0]


def test_the_readme_web_snippet_runs(
        browser: Any, wallet_relay: RunningWallet, tmp_path: Path) -> None:
    """The README's snippet, verbatim but for the wallet's port, in a page on its own origin."""
    w = wallet_relay
    snippet = readme_web_snippet()
    assert "'http://127.0.0.1:8750'" in snippet and len(snippet.splitlines()) <= 16
    page_dir = tmp_path / "examples" / "web_app"
    page_dir.mkdir(parents=True)
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "src").symlink_to(REPO / "js" / "src")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "openai").symlink_to(REPO / "node_modules" / "openai")
    (page_dir / "index.html").write_text(f"""<!doctype html><meta charset="utf-8">
<script type="importmap">{{"imports": {{"capwallet": "../../js/src/index.js",
  "openai": "../../node_modules/openai/index.mjs"}}}}</script>
<button id="connectButton">Connect your AI wallet</button><pre id="output"></pre>
<script type="module">
{snippet.replace("'http://127.0.0.1:8750'", repr(w.base_url))}
document.body.dataset.ready = 'true';
</script>""")
    with running_example_site(repo=tmp_path) as origin, \
            signed_in_context(browser, w) as (context, _):
        page = open_app(context, f"{origin}{PAGE_PATH}")
        with context.expect_page() as info:
            page.click("#connectButton")
        popup = info.value
        popup.wait_for_selector("#approve")
        assert "My Notes" in popup.inner_text("#consent-title")
        popup.click("#approve")
        page.wait_for_function("() => document.querySelector('#output').textContent.length > 0",
                               timeout=30_000)
        assert page.inner_text("#output").strip()
