"""Drive the authorization request the way an app and a browser do (real HTTP)."""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from capwallet.client import pkce_pair

from .conftest import csrf_of, hidden, navigated_to

DETAILS: dict[str, Any] = {
    "type": "capwallet_ai", "providers": ["openai"], "models": ["gpt-4o-mini", "gpt-4.1-mini"],
    "budget": {"amount": "5.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 50000, "scopes": ["posts:read", "posts:publish"],
    "ask_first": ["posts:publish"], "expires_in": 30 * 86400,
    "confirm_above": {"amount": "0.50", "currency": "USD"}, "logging": "metadata",
}
REDIRECT = "http://127.0.0.1:53682/callback"


def authorize_params(**changes: str) -> tuple[dict[str, str], str]:
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code", "app_name": "Blog Assistant", "redirect_uri": REDIRECT,
        "state": "st-123", "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps([DETAILS]),
    }
    params.update(changes)
    return params, verifier


def consent_page(client: httpx.Client, params: dict[str, str]) -> httpx.Response:
    return client.get("/authorize?" + urlencode(params))


def answer(client: httpx.Client, page: str, decision: str,
           **fields: list[str] | str) -> httpx.Response:
    form: list[tuple[str, str]] = [
        ("csrf", csrf_of(page)), ("consent", hidden(page, "consent")), ("decision", decision),
    ]
    if "provider" not in fields:
        form += [("provider", p) for p in DETAILS["providers"]]
    if "model" not in fields:
        form += [("model", m) for m in DETAILS["models"]]
    if "scope" not in fields:  # a browser sends every box left ticked
        form += [("scope", m) for m in DETAILS["scopes"]]
    for k, v in fields.items():
        form += [(k, x) for x in ([v] if isinstance(v, str) else v)]
    data: dict[str, list[str]] = {}
    for k, v in form:
        data.setdefault(k, []).append(v)
    return client.post("/authorize", data=data,
                       headers={"origin": str(client.base_url).rstrip("/")})


def redirect_query(r: httpx.Response) -> dict[str, str]:
    """The query the browser takes back to the app after the user answered."""
    loc = navigated_to(r)
    return {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}


def error_link_query(r: httpx.Response) -> dict[str, str]:
    """A bad request is shown on a signed-in page (never redirected at once); its link takes
    the RFC 6749 error back to the app."""
    assert r.status_code == 400, r.text
    assert "location" not in r.headers
    m = re.search(r'id="message-action" href="([^"]+)"', r.text)
    assert m, "the error page has no link back to the app"
    loc = html.unescape(m.group(1))
    return {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}


def approve(client: httpx.Client, **fields: list[str] | str) -> tuple[dict[str, str], str]:
    """Run authorize -> approve; returns the redirect query and the PKCE verifier."""
    params, verifier = authorize_params()
    page = consent_page(client, params)
    assert page.status_code == 200, page.text
    return redirect_query(answer(client, page.text, "approve", **fields)), verifier


def exchange(base_url: str, code: str, verifier: str,
             redirect_uri: str = REDIRECT) -> httpx.Response:
    return httpx.post(f"{base_url}/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    })
