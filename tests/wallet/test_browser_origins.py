"""Web origins in a real browser (Playwright driving Debian's Chromium).

Two web origins on this machine, A and B. The user approves a web app on A (client_id = A).
In Chromium, a page on B cannot exchange A's code at /token (the wallet refuses it, without
burning the code, and sends no CORS headers), then the page on A exchanges it and reads the
token. With that token, A's page calls the relay; B's page, holding the same token, is
stopped by the relay's preflight. These are the browser's own CORS checks, not a simulation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from capwallet.wallet.runner import RunningWallet

from .conftest import signed_in
from .loopback_site import loopback_site
from .oauth_helpers import answer, authorize_params, consent_page, redirect_query

EXCHANGE = """async ([tokenUrl, form]) => {
  try {
    const r = await fetch(tokenUrl, {method: 'POST', body: new URLSearchParams(form)});
    return {status: r.status, body: await r.json()};
  } catch (e) { return {blocked: String(e)}; }
}"""

MODELS = """async ([url, token]) => {
  try {
    const r = await fetch(url, {headers: {authorization: 'Bearer ' + token}});
    return {status: r.status, body: await r.json()};
  } catch (e) { return {blocked: String(e)}; }
}"""


@pytest.fixture
def two_sites() -> Iterator[tuple[str, str]]:
    """Two origins (two ports on localhost), each serving an empty page."""
    page = "<!doctype html><title>app</title><p>app page</p>"
    with loopback_site("localhost", fallback=page) as a, \
            loopback_site("localhost", fallback=page) as b:
        yield a.url, b.url


def test_only_the_granted_origin_gets_and_uses_the_token(
        browser: Any, wallet_relay: RunningWallet, two_sites: tuple[str, str]) -> None:
    site_a, site_b = two_sites
    with signed_in(wallet_relay) as client:
        params, verifier = authorize_params(client_id=site_a, redirect_uri=f"{site_a}/cb")
        page_html = consent_page(client, params)
        assert page_html.status_code == 200, page_html.text
        q = redirect_query(answer(client, page_html.text, "approve"))
    form = {"grant_type": "authorization_code", "code": q["code"],
            "redirect_uri": f"{site_a}/cb", "code_verifier": verifier}
    token_url = f"{wallet_relay.base_url}/token"
    context = browser.new_context()
    try:
        page_b = context.new_page()
        page_b.goto(site_b + "/")
        got = page_b.evaluate(EXCHANGE, [token_url, form])
        assert "blocked" in got, got  # Chromium's CORS check: no ACAO for origin B
        assert not wallet_relay.ctx.grants.list(statuses=("active",))  # nothing exchanged

        page_a = context.new_page()
        page_a.goto(site_a + "/")
        got = page_a.evaluate(EXCHANGE, [token_url, form])
        assert got.get("status") == 200, got
        token = got["body"]["access_token"]
        assert token.startswith("cwt1_")
        grant = wallet_relay.ctx.grants.get(got["body"]["grant_id"])
        assert grant is not None and grant.origin == site_a

        models = f"{got['body']['relay_url']}/v1/models"
        used = page_a.evaluate(MODELS, [models, token])
        assert used.get("status") == 200, used
        assert any(m["id"] == "gpt-4o-mini" for m in used["body"]["data"])
        stolen = page_b.evaluate(MODELS, [models, token])
        assert "blocked" in stolen, stolen  # the relay's preflight refuses origin B
    finally:
        context.close()
    # The same token from a server (no Origin) is governed by its other caveats alone.
    r = httpx.get(f"{wallet_relay.base_url}/v1/models",
                  headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200
