"""examples/web_server_app against the hosted wallet, all over HTTPS through Caddy:
a user signs in to the app, connects the wallet through its consent page in Chromium, the
app's backend answers with the openai SDK, the scheduled summary runs with no browser open,
the user revokes in the wallet's dashboard, and the backend's next call is refused (401 ->
the app asks the user to connect again). The token is never stored in the clear or logged."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from examples.web_server_app.app import Settings, create_app, summarize_all
from scripts.hosted_up import HostedStack

from .hosted_fixtures import (
    hosted_stack_fixture,  # noqa: F401  (the `stack` fixture)
    launch_chromium,
    wallet_sign_in,
)

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def notebook(stack: HostedStack, tmp_path: Path) -> Iterator[Any]:
    """The example app on the loopback port Caddy proxies app.capwallet.test to."""
    settings = Settings(app_url=stack.app_url, wallet_url=stack.wallet_url,
                        db_path=str(tmp_path / "notebook.db"),
                        secret_key=secrets.token_bytes(32), summary_every=0.5)
    app = create_app(settings, http=lambda: stack.async_client(timeout=30))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=stack.app_port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the example app did not start"
        time.sleep(0.02)
    yield app
    server.should_exit = True
    thread.join(10)


def _summaries(stack: HostedStack, cookie: str) -> dict[str, Any]:
    with stack.client(timeout=10, cookies={"__Host-notebook": cookie}) as c:
        r = c.get(stack.app_url + "/api/summaries")
        assert r.status_code == 200
        doc: dict[str, Any] = r.json()
        return doc


def test_server_side_app_connects_calls_and_is_refused_after_revoke(
    stack: HostedStack, notebook: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p, stack)
        context = browser.new_context()
        page = context.new_page()
        wallet_sign_in(page, stack)
        # The app: sign in, write a note, connect the wallet.
        page.goto(stack.app_url + "/")
        page.fill("input[name=name]", "ada")
        page.fill("input[name=password]", "pw-ada-1234")
        page.click("text=Sign in")
        page.fill("input[name=text]", "buy flour")
        page.click("text=Add note")
        assert "buy flour" in page.inner_text("#notes")
        page.click("#connect")
        page.wait_for_url(stack.wallet_url + "/authorize?*")
        page.wait_for_selector("#approve")  # the consent's content (fetched by the page)
        assert "Notebook" in page.content()
        assert stack.app_url.split("://")[1].split(":")[0] in page.content()
        page.click("#approve")
        page.wait_for_url(stack.app_url + "/")
        assert page.inner_text("#wallet") == "Wallet connected."
        # A backend call with the user's grant.
        page.fill("input[name=question]", "what do I need?")
        page.click("text=Ask")
        answer = page.inner_text("#answer")
        assert answer
        cookie = next(c["value"] for c in context.cookies() if c["name"] == "__Host-notebook")
        app_cookie_flags = next(c for c in context.cookies() if c["name"] == "__Host-notebook")
        assert app_cookie_flags["secure"] and app_cookie_flags["httpOnly"]
        page.goto(stack.wallet_url + "/")  # no page of the app is open from here on

        # The scheduled job writes a summary with no browser on the app.
        deadline = time.monotonic() + 20
        while not _summaries(stack, cookie)["summaries"]:
            assert time.monotonic() < deadline, "no background summary"
            time.sleep(0.2)

        # Revoke in the wallet's dashboard.
        page.goto(stack.wallet_url + "/")
        grant = page.locator(".grant", has_text="Notebook").first
        grant.locator("button:has-text('Revoke')").click()
        playwright_sync.expect(page.locator(".grant", has_text="Notebook").first).to_contain_text(
            "revoked")
        browser.close()

    # The backend's next call is refused; the app forgets the token and asks again.
    with stack.client(timeout=30, cookies={"__Host-notebook": cookie}) as c:
        r = c.post(stack.app_url + "/ask", data={"question": "again?"},
                   headers={"origin": stack.app_url})
    assert r.status_code == 401 and "Connect again" in r.text
    state = _summaries(stack, cookie)
    assert state["connection"] == "revoked" and "revoked" in state["note"]
    count = len(state["summaries"])
    import asyncio

    assert asyncio.run(summarize_all(notebook)) == 0  # the job skips a revoked grant
    assert len(_summaries(stack, cookie)["summaries"]) == count

    # The token is in the app's database only as ciphertext, and in no log line.
    raw = Path(notebook.state.settings.db_path).read_bytes()
    assert b"cwt1_" not in raw
    assert not any("cwt1_" in r.getMessage() for r in caplog.records)


def test_app_without_a_grant_asks_to_connect(stack: HostedStack, notebook: Any) -> None:
    with stack.client(timeout=30, follow_redirects=False) as c:
        r = c.post(stack.app_url + "/signin", data={"name": "bo", "password": "pw-bo-12345"},
                   headers={"origin": stack.app_url})
        assert r.status_code == 303
        r = c.post(stack.app_url + "/ask", data={"question": "hi"},
                   headers={"origin": stack.app_url})
        assert r.status_code == 401 and "Connect your wallet first" in r.text
        # A callback with a state this user never made is refused, and nothing is stored.
        r = c.get(stack.app_url + "/callback?code=x&state=forged&iss=" + stack.wallet_url)
        assert r.status_code == 400
        # The app's forms refuse a post from another origin.
        r = c.post(stack.app_url + "/ask", data={"question": "hi"},
                   headers={"origin": "https://evil.example"})
        assert r.status_code == 403


def test_confirmation_and_spent_budget_are_handled(stack: HostedStack, notebook: Any) -> None:
    """The example's handling of the two other refusals, with grants the owner made from the
    console: confirmation_required -> the approval link on the hosted wallet; a spent budget
    -> a message for the user (and the grant is kept)."""
    import asyncio

    from examples.web_server_app.app import ask_model

    from .hosted_fixtures import grant

    db = notebook.state.db
    big = "word " * 70_000  # about 70,000 input tokens: above 0.01 USD on gpt-4o-mini

    def connect(user: str, token: str) -> None:
        db.q("INSERT OR REPLACE INTO connections VALUES (?, 'g', ?, ?, 'connected', '')", user,
             stack.wallet_url, db.seal(token))

    connect("cy", grant(stack, "--confirm-above", "0.01USD"))
    out = asyncio.run(ask_model(notebook, "cy", big))
    assert out.approval_url is not None and out.text is None
    assert out.approval_url.startswith(stack.wallet_url + "/approvals/")

    connect("di", grant(stack, "--budget", "0.01USD/month"))
    out = asyncio.run(ask_model(notebook, "di", big + big))
    assert out.text is None and out.problem is not None
    assert "limit for this app is reached" in out.problem
    assert db.q("SELECT status FROM connections WHERE user = 'di'") == [("connected",)]
