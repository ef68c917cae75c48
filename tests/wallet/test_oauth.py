"""OAuth 2.0 code flow with PKCE against a real wallet server (uvicorn on loopback)."""

from __future__ import annotations

import httpx

from capwallet import caveats as cav
from capwallet.client import pkce_pair
from capwallet.token import Token
from capwallet.wallet.runner import RunningWallet

from .oauth_helpers import (
    REDIRECT,
    answer,
    approve,
    authorize_params,
    consent_page,
    error_link_query,
    exchange,
    redirect_query,
)


def test_approve_then_exchange(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    params, verifier = authorize_params()
    page = consent_page(browser_client, params)
    assert page.status_code == 200
    assert "Blog Assistant</span> wants to use AI" in page.text
    for item in ("gpt-4o-mini", "5.00", "posts:publish", "asks you each time"):
        assert item in page.text
    q = redirect_query(answer(browser_client, page.text, "approve"))
    assert q["state"] == "st-123" and q["iss"] == wallet.base_url and q["code"]
    r = exchange(wallet.base_url, q["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["relay_url"] == wallet.base_url
    token = Token.parse(body["access_token"])
    assert token.token_id == body["grant_id"]
    caveats = token.caveats()
    assert cav.App("Blog Assistant") in caveats
    assert cav.AskFirst(("posts:publish",)) in caveats
    assert any(isinstance(c, cav.Budget) and c.amount == 500 for c in caveats)
    grant = wallet.ctx.grants.get(body["grant_id"])
    assert grant is not None and grant.status == "active" and grant.source == "oauth"
    assert body["authorization_details"][0]["models"] == ["gpt-4o-mini", "gpt-4.1-mini"]


def test_lowered_limits_end_up_in_the_token(
    wallet: RunningWallet, browser_client: httpx.Client
) -> None:
    q, verifier = approve(browser_client, budget="1.25", model=["gpt-4o-mini"],
                          scope=["posts:read"], max_input_tokens="1000")
    body = exchange(wallet.base_url, q["code"], verifier).json()
    caveats = Token.parse(body["access_token"]).caveats()
    assert cav.Models(("gpt-4o-mini",)) in caveats
    assert cav.Scopes(("posts:read",)) in caveats
    assert cav.MaxInputTokens(1000) in caveats
    assert any(isinstance(c, cav.Budget) and c.amount == 125 for c in caveats)
    assert not any(isinstance(c, cav.AskFirst) for c in caveats)  # its scope was dropped


def test_raising_a_limit_is_refused(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    params, _ = authorize_params()
    page = consent_page(browser_client, params)
    r = answer(browser_client, page.text, "approve", budget="500.00")
    assert r.status_code == 400
    assert "above the 5.00 USD the app asked for" in r.text
    r = answer(browser_client, page.text, "approve", model=["gpt-5"])
    assert r.status_code == 400
    assert wallet.ctx.grants.list(statuses=("pending", "active")) == []


def test_deny(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    params, _ = authorize_params()
    page = consent_page(browser_client, params)
    q = redirect_query(answer(browser_client, page.text, "deny"))
    assert q == {"error": "access_denied", "error_description": "the user denied the request",
                 "state": "st-123", "iss": wallet.base_url}
    assert wallet.ctx.grants.list(statuses=("pending", "active")) == []


def test_code_replay_fails_and_revokes(wallet: RunningWallet,
                                       browser_client: httpx.Client) -> None:
    q, verifier = approve(browser_client)
    first = exchange(wallet.base_url, q["code"], verifier)
    assert first.status_code == 200
    again = exchange(wallet.base_url, q["code"], verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    grant = wallet.ctx.grants.get(first.json()["grant_id"])
    assert grant is not None and grant.status == "revoked"  # RFC 6749 4.1.2


def test_wrong_verifier_and_redirect_fail(wallet: RunningWallet,
                                          browser_client: httpx.Client) -> None:
    q, verifier = approve(browser_client)
    other, _ = pkce_pair()
    r = exchange(wallet.base_url, q["code"], other)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # The code is burnt by the failed attempt: the right verifier no longer helps.
    assert exchange(wallet.base_url, q["code"], verifier).status_code == 400
    q, verifier = approve(browser_client)
    r = exchange(wallet.base_url, q["code"], verifier, "http://127.0.0.1:1/other")
    assert r.status_code == 400 and "redirect_uri" in r.json()["error_description"]
    r = exchange(wallet.base_url, "made-up", verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(f"{wallet.base_url}/token", data={"grant_type": "password"})
    assert r.json()["error"] == "unsupported_grant_type"


def test_plain_pkce_is_rejected(browser_client: httpx.Client) -> None:
    params, verifier = authorize_params(code_challenge_method="plain")
    params["code_challenge"] = verifier
    q = error_link_query(consent_page(browser_client, params))
    assert q["error"] == "invalid_request" and "S256" in q["error_description"]


def test_bad_redirect_uris_are_shown_not_followed(browser_client: httpx.Client) -> None:
    for uri in ("http://evil.example/cb", "javascript:alert(1)", "", "http://127.0.0.1:5/#x",
                "ftp://127.0.0.1/cb"):
        params, _ = authorize_params(redirect_uri=uri)
        r = consent_page(browser_client, params)
        assert r.status_code == 400, uri
        assert "location" not in r.headers


def test_loopback_any_port_and_ipv6(browser_client: httpx.Client) -> None:
    for uri in ("http://127.0.0.1:1234/cb", "http://[::1]:40000/cb", "http://127.0.0.1/cb"):
        params, _ = authorize_params(redirect_uri=uri)
        assert consent_page(browser_client, params).status_code == 200, uri


def test_web_app_origin_must_match(browser_client: httpx.Client) -> None:
    params, _ = authorize_params(redirect_uri="https://blog.example/cb",
                                 origin="https://blog.example")
    r = consent_page(browser_client, params)
    assert r.status_code == 200 and "https://blog.example" in r.text
    params, _ = authorize_params(redirect_uri="https://blog.example/cb",
                                 origin="https://bank.example")
    r = consent_page(browser_client, params)  # off the origin: shown, never followed
    assert r.status_code == 400 and "location" not in r.headers
    assert "redirect_uri_off_origin" in r.text


def test_bad_details_go_back_to_the_app(browser_client: httpx.Client) -> None:
    params, _ = authorize_params(authorization_details='[{"type":"capwallet_ai"}]')
    q = error_link_query(consent_page(browser_client, params))
    assert q["error"] == "invalid_authorization_details" and q["state"] == "st-123"


def test_consent_needs_a_session(wallet: RunningWallet) -> None:
    params, _ = authorize_params()
    with httpx.Client(base_url=wallet.base_url) as anonymous:
        shell = consent_page(anonymous, params)  # a navigation: the shell, no data
        assert shell.status_code == 200 and 'id="wallet-shell"' in shell.text
        assert "Blog Assistant" not in shell.text and 'name="csrf"' not in shell.text
        anonymous.headers["x-capwallet-session"] = "-"  # the shell's script, not signed in
        r = consent_page(anonymous, params)
    assert r.status_code == 401 and "locked" in r.text


def test_locked_page_names_the_command_that_printed_the_link(wallet: RunningWallet) -> None:
    """The locked page names the command whose terminal shows the sign-in link (serve or
    demo), with no literal backticks, and says the waiting request comes back."""
    params, _ = authorize_params()
    with httpx.Client(base_url=wallet.base_url,
                      headers={"x-capwallet-session": "-"}) as locked:
        r = consent_page(locked, params)
        assert r.status_code == 401 and "`" not in r.text
        assert '<code class="command">capwallet serve</code>' in r.text
        assert "come back to this request" in r.text
        wallet.ctx.pages.started_by = "capwallet demo --keep-running"
        r = locked.get("/")
        assert '<code class="command">capwallet demo --keep-running</code>' in r.text
        assert "capwallet serve" not in r.text and "`" not in r.text


def test_bad_request_is_not_redirected_before_sign_in(wallet: RunningWallet) -> None:
    """Issue 13 F1: a bad parameter used to send the browser (and its cookies) to the app's
    loopback redirect URI at once, before any session check."""
    params, _ = authorize_params(response_type="nope")
    with httpx.Client(base_url=wallet.base_url) as anonymous:
        for header in ({}, {"x-capwallet-session": "-"}):
            r = anonymous.get("/authorize", params=params, headers=header)
            assert r.status_code in (200, 401) and "location" not in r.headers
            assert REDIRECT not in r.text


def test_consent_id_is_bound_to_the_session(wallet: RunningWallet,
                                            browser_client: httpx.Client) -> None:
    from .conftest import signed_in

    params, _ = authorize_params()
    page = consent_page(browser_client, params)
    with signed_in(wallet) as other:
        mine = consent_page(other, params).text  # another session's valid CSRF token
        from .conftest import csrf_of, hidden
        r = other.post("/authorize", data={
            "csrf": csrf_of(mine), "consent": hidden(page.text, "consent"),
            "decision": "approve", "provider": "openai", "model": "gpt-4o-mini",
        }, headers={"origin": wallet.base_url})
    assert r.status_code == 400 and "expired" in r.text
    assert REDIRECT not in r.headers.get("location", "")


def test_unexchanged_approvals_are_forgotten(wallet: RunningWallet,
                                             browser_client: httpx.Client) -> None:
    approve(browser_client)
    (pending,) = wallet.ctx.grants.list(statuses=("pending",))
    wallet.ctx.clock = lambda: pending.created_at + 3600  # an hour later, another approval
    approve(browser_client)
    left = wallet.ctx.grants.list(statuses=("pending",))
    assert [g.grant_id for g in left] != [pending.grant_id] and len(left) == 1


def test_a_model_at_a_provider_without_a_key_is_said_so(browser_client: httpx.Client) -> None:
    """A model priced at a requested provider the wallet has no key for is warned about for
    the missing key; only a model no requested provider prices is "no price". (The page said
    "claude-sonnet-4-5: no price at openai or anthropic", blaming the price table.)"""
    import html
    import json

    details = {"type": "capwallet_ai", "providers": ["openai", "anthropic"],
               "models": ["gpt-4o-mini", "claude-sonnet-4-5", "mystery-1"],
               "budget": {"amount": "5.00", "currency": "USD", "period": "month"}}
    params, _ = authorize_params(authorization_details=json.dumps([details]))
    page = consent_page(browser_client, params)
    assert page.status_code == 200, page.text
    text = " ".join(html.unescape(page.text).split())
    assert "Your wallet has no key for <strong>anthropic</strong>" in text
    assert "served by anthropic, for which your wallet has no key" in text
    assert "no price at openai or anthropic, so the relay refuses calls to it" in text  # mystery
    assert text.count("no price at") == 2  # mystery-1: in the warnings and under the model
