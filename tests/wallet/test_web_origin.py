"""Web-origin grants over real HTTP: how the wallet tells a web app from a native one, the
origin on the grant, CORS on /token for the grant's own origin only, the relay's CORS with
the Private Network Access answer, and the public discovery documents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from capwallet import caveats as cav
from capwallet.token import Token
from capwallet.wallet.runner import RunningWallet

from .conftest import signed_in
from .oauth_helpers import answer, authorize_params, consent_page, exchange, redirect_query

APP = "http://localhost:5500"
APP_REDIRECT = f"{APP}/callback.html"
PRE = {"access-control-request-method": "POST",
       "access-control-request-headers": "content-type"}


def web_approve(client: httpx.Client, **params: str) -> tuple[dict[str, str], str, str]:
    """A web app on APP asks and the user approves: (redirect query, verifier, page html)."""
    p, verifier = authorize_params(redirect_uri=APP_REDIRECT, client_id=APP, **params)
    page = consent_page(client, p)
    assert page.status_code == 200, page.text
    return redirect_query(answer(client, page.text, "approve")), verifier, page.text


def web_exchange(base_url: str, code: str, verifier: str, origin: str | None,
                 redirect_uri: str = APP_REDIRECT) -> httpx.Response:
    headers = {} if origin is None else {"origin": origin}
    return httpx.post(f"{base_url}/token", headers=headers, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    })


def test_web_app_by_origin_gets_an_origin_grant(wallet: RunningWallet,
                                                browser_client: httpx.Client) -> None:
    q, verifier, page = web_approve(browser_client)
    assert "Asked by the website <strong>http://localhost:5500</strong>" in page
    assert "Not verified" in page and "what the page says about itself" in page
    # Preflight: the origin whose grant awaits its exchange, with the Private Network answer.
    pre = httpx.options(f"{wallet.base_url}/token", headers={
        "origin": APP, "access-control-request-private-network": "true", **PRE})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == APP
    assert pre.headers["access-control-allow-private-network"] == "true"
    r = web_exchange(wallet.base_url, q["code"], verifier, APP)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP
    grant = wallet.ctx.grants.get(r.json()["grant_id"])
    assert grant is not None and grant.origin == APP and grant.status == "active"
    assert APP in wallet.ctx.grants.live_origins(wallet.ctx.now())


def test_web_token_is_bound_to_its_origin(wallet_relay: RunningWallet) -> None:
    """The grant's token carries the origin caveat: the relay refuses it when a request says
    it comes from another origin, even a request that no CORS check stands in front of."""
    with signed_in(wallet_relay) as client:
        q, verifier, _ = web_approve(client)
    r = web_exchange(wallet_relay.base_url, q["code"], verifier, APP)
    token = r.json()["access_token"]
    assert [c.origin for c in Token.parse(token).caveats() if isinstance(c, cav.Origin)] == [APP]
    url = f"{wallet_relay.base_url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {token}"}
    other = httpx.post(url, json=body, headers={**auth, "origin": "http://localhost:5501"})
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "origin_mismatch"
    assert "access-control-allow-origin" not in other.headers
    own = httpx.post(url, json=body, headers={**auth, "origin": APP})
    assert own.status_code == 200, own.text
    assert own.headers["access-control-allow-origin"] == APP
    server_side = httpx.post(url, json=body, headers=auth)  # no Origin: other caveats govern
    assert server_side.status_code == 200, server_side.text


def test_native_token_has_no_origin_caveat(wallet: RunningWallet,
                                           browser_client: httpx.Client) -> None:
    p, verifier = authorize_params()
    q = redirect_query(answer(browser_client, consent_page(browser_client, p).text, "approve"))
    token = exchange(wallet.base_url, q["code"], verifier).json()["access_token"]
    assert not [c for c in Token.parse(token).caveats() if isinstance(c, cav.Origin)]


def test_token_from_another_origin_is_refused_and_the_code_survives(
        wallet: RunningWallet, browser_client: httpx.Client) -> None:
    q, verifier, _ = web_approve(browser_client)
    evil = "https://evil.example"
    pre = httpx.options(f"{wallet.base_url}/token", headers={"origin": evil, **PRE})
    assert pre.status_code == 403
    assert not any(h.startswith("access-control-") for h in pre.headers)
    for origin in (evil, "http://localhost:5501", "http://127.0.0.1:5500"):
        r = web_exchange(wallet.base_url, q["code"], verifier, origin)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert "another origin" in r.json()["error_description"]
        assert "access-control-allow-origin" not in r.headers
    # Nothing changed: the real app's exchange still works.
    assert not wallet.ctx.grants.list()
    ok = web_exchange(wallet.base_url, q["code"], verifier, APP)
    assert ok.status_code == 200, ok.text


def test_replayed_code_is_readable_by_its_origin_and_revokes(
        wallet: RunningWallet, browser_client: httpx.Client) -> None:
    q, verifier, _ = web_approve(browser_client)
    first = web_exchange(wallet.base_url, q["code"], verifier, APP)
    assert first.status_code == 200
    again = web_exchange(wallet.base_url, q["code"], verifier, APP)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert again.headers["access-control-allow-origin"] == APP  # the app can read why
    grant = wallet.ctx.grants.get(first.json()["grant_id"])
    assert grant is not None and grant.status == "revoked"


def test_a_native_code_cannot_be_exchanged_by_a_page(wallet: RunningWallet,
                                                     browser_client: httpx.Client) -> None:
    p, verifier = authorize_params()  # loopback redirect, no client_id: a native app
    page = consent_page(browser_client, p)
    assert "Asked by an app on this computer" in page.text
    q = redirect_query(answer(browser_client, page.text, "approve"))
    r = web_exchange(wallet.base_url, q["code"], verifier, "http://127.0.0.1:53682",
                     redirect_uri=p["redirect_uri"])
    assert r.status_code == 400 and "native app" in r.json()["error_description"]
    r = exchange(wallet.base_url, q["code"], verifier)  # the app itself sends no Origin
    assert r.status_code == 200
    grant = wallet.ctx.grants.get(r.json()["grant_id"])
    assert grant is not None and grant.origin == ""


@pytest.mark.parametrize(("params", "reason"), [
    ({"client_id": APP, "redirect_uri": "http://localhost:5501/cb"}, "redirect_uri_off_origin"),
    ({"client_id": APP, "redirect_uri": "http://127.0.0.1:5500/cb"}, "redirect_uri_off_origin"),
    ({"client_id": "https://notes.example", "redirect_uri": "https://evil.example/cb"},
     "redirect_uri_off_origin"),
    ({"client_id": "http://notes.example", "redirect_uri": "http://notes.example/cb"},
     "redirect_uri_invalid"),
    ({"client_id": "http://notes.example:8000", "redirect_uri": "http://127.0.0.1:1/cb"},
     "client_id_invalid"),
    ({"client_id": "my-app", "redirect_uri": "http://127.0.0.1:1/cb"}, "client_id_invalid"),
    ({"client_id": APP, "origin": "https://notes.example", "redirect_uri": APP_REDIRECT},
     "client_id_invalid"),
])
def test_redirect_off_the_origin_is_shown_and_changes_nothing(
        wallet: RunningWallet, browser_client: httpx.Client, params: dict[str, str],
        reason: str) -> None:
    p, _ = authorize_params(**params)
    r = consent_page(browser_client, p)
    assert r.status_code == 400 and "location" not in r.headers
    assert reason in r.text and "Nothing was changed" in r.text
    assert not wallet.ctx.grants.list(statuses=("pending", "active", "revoked"))


def test_https_web_app_keeps_its_port(browser_client: httpx.Client) -> None:
    p, _ = authorize_params(redirect_uri="https://notes.example:8443/cb",
                            client_id="https://notes.example:8443")
    r = consent_page(browser_client, p)
    assert r.status_code == 200 and "https://notes.example:8443" in r.text
    p, _ = authorize_params(redirect_uri="https://notes.example/cb",
                            client_id="https://notes.example:443")  # default port: same origin
    assert consent_page(browser_client, p).status_code == 200


def test_other_wallet_endpoints_stay_closed_to_a_granted_origin(
        wallet: RunningWallet, browser_client: httpx.Client) -> None:
    q, verifier, _ = web_approve(browser_client)
    assert web_exchange(wallet.base_url, q["code"], verifier, APP).status_code == 200
    for method, path in (("GET", "/api/usage"), ("GET", "/"), ("POST", "/authorize"),
                         ("GET", "/approvals"), ("POST", "/resource/check")):
        r = browser_client.request(method, path, headers={"origin": APP})
        assert r.status_code == 403, path
        assert not any(h.startswith("access-control-") for h in r.headers), path
    r = httpx.options(f"{wallet.base_url}/api/usage", headers={"origin": APP, **PRE})
    assert r.status_code == 403


def test_relay_preflight_answers_private_network_for_live_grants(
        wallet_relay: RunningWallet) -> None:
    base = wallet_relay.ctx
    with signed_in(wallet_relay) as client:
        q, verifier, _ = web_approve(client)
    pre = {**PRE, "access-control-request-headers": "authorization, content-type",
           "access-control-request-private-network": "true"}
    url = f"{wallet_relay.base_url}/v1/chat/completions"
    before = httpx.options(url, headers={"origin": APP, **pre})
    assert before.status_code == 403  # pending: the code is not exchanged yet
    assert web_exchange(wallet_relay.base_url, q["code"], verifier, APP).status_code == 200
    ok = httpx.options(url, headers={"origin": APP, **pre})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == APP
    assert ok.headers["access-control-allow-private-network"] == "true"
    bad = httpx.options(url, headers={"origin": "http://localhost:5501", **pre})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
    assert base.grants.live_origins(base.now()) == frozenset({APP})


def test_discovery_documents(wallet_relay: RunningWallet) -> None:
    base = wallet_relay.base_url
    r = httpx.get(f"{base}/.well-known/oauth-authorization-server",
                  headers={"origin": "https://anyone.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    meta: dict[str, Any] = r.json()
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == f"{base}/authorize"
    assert meta["token_endpoint"] == f"{base}/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert meta["grant_types_supported"] == ["authorization_code"]
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["capwallet_relay_url"] == base
    r = httpx.get(f"{base}/.well-known/oauth-protected-resource",
                  headers={"origin": "https://anyone.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert r.json()["authorization_servers"] == [base]
    assert r.json()["resource"] == base
    pre = httpx.options(f"{base}/.well-known/oauth-authorization-server", headers={
        "origin": "https://anyone.example", "access-control-request-method": "GET",
        "access-control-request-private-network": "true"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-private-network"] == "true"
    # Still behind the Host check (DNS rebinding).
    r = httpx.get(f"{base}/.well-known/oauth-authorization-server",
                  headers={"host": "evil.example"})
    assert r.status_code == 403


def test_wallet_relay_exposes_what_the_relay_does() -> None:
    from capwallet.wallet.cors import EXPOSE_HEADERS
    from reference_relay.app import _CORS_EXPOSE

    assert EXPOSE_HEADERS.encode() == _CORS_EXPOSE


def test_relay_preflight_allows_the_sdk_headers(wallet_relay: RunningWallet) -> None:
    """The openai/anthropic SDKs send headers of their own; a granted origin's preflight
    admits any (Authorization named, as a "*" does not cover it)."""
    with signed_in(wallet_relay) as client:
        q, verifier, _ = web_approve(client)
    assert web_exchange(wallet_relay.base_url, q["code"], verifier, APP).status_code == 200
    pre = httpx.options(f"{wallet_relay.base_url}/v1/chat/completions", headers={
        "origin": APP, "access-control-request-method": "POST",
        "access-control-request-headers":
            "authorization, content-type, x-stainless-helper-method, x-capwallet-output-cap"})
    assert pre.status_code == 204
    allowed = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert {"*", "authorization"} <= allowed
