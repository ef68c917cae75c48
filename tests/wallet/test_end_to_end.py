"""The wallet and its relay end to end: connect() -> consent -> token -> openai SDK calls ->
spend on the dashboard and in the CLI; confirmation of an expensive call; revoke; CORS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from capwallet import caveats as cav
from capwallet.client import Connection, connect, wait_for_approval
from capwallet.token import Token
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet

from .conftest import PASSPHRASE, csrf_of, hidden, navigated_to, signed_in

PERMISSIONS = {
    "providers": ["openai"], "models": ["gpt-4o-mini"],
    "budget": {"amount": "2.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 4000, "expires_in": 86400,
}


def approve_in(client: httpx.Client, wallet: RunningWallet,
               **lower: str) -> Callable[[str], None]:
    """An open_browser for connect(): the signed-in 'browser' approves what it is shown."""
    def open_browser(url: str) -> None:
        path = url[len(wallet.base_url):]
        page = client.get(path)
        assert page.status_code == 200, page.text
        form: dict[str, Any] = {"csrf": csrf_of(page.text),
                                "consent": hidden(page.text, "consent"), "decision": "approve"}
        for name, value in re.findall(  # every box left ticked, as a browser sends them
                r'<input type="checkbox" name="(\w+)" value="([^"]+)" checked>', page.text):
            form.setdefault(name, []).append(value)
        form.update(lower)
        r = client.post("/authorize", data=form, headers={"origin": wallet.base_url})
        callback = navigated_to(r)
        assert urlsplit(callback).hostname == "127.0.0.1"
        assert httpx.get(callback).status_code == 200  # the app's loopback listener
    return open_browser


def _connect(wallet: RunningWallet, **lower: str) -> Connection:
    with signed_in(wallet) as browser:
        return connect("Blog Assistant", PERMISSIONS, wallet_url=wallet.base_url,
                       open_browser=approve_in(browser, wallet, **lower), timeout=10)


def _cli(wallet: RunningWallet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPWALLET_HOME": str(wallet.ctx.home.path),
           "CAPWALLET_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "capwallet", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_connect_call_and_see_the_spend(wallet_relay: RunningWallet) -> None:
    conn = _connect(wallet_relay, budget="1.50")
    assert conn.relay_url == wallet_relay.base_url
    assert conn.granted["budget"]["amount"] == "1.50"
    assert "cwt1_" not in repr(conn)
    client = openai.OpenAI(api_key=conn.token, base_url=conn.openai_base_url, max_retries=0)
    for i in range(3):
        r = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {i}"}],
            max_tokens=20)
        assert r.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user",
                                                                   "content": "x"}])
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["code"] == "model_not_allowed"
    with signed_in(wallet_relay) as browser:
        usage = browser.get("/api/usage").json()
        page = browser.get("/").text
    (app,) = [a for a in usage["apps"] if a["grant_id"] == conn.grant_id]
    assert app["budgets"][0]["limit"] == 150 and app["budgets"][0]["spent"] > 0
    assert app["models_used"] == ["gpt-4o-mini"] and app["calls"] == 3
    assert "Blog Assistant" in page and "gpt-4o-mini" in page and "of 1.50 USD" in page
    # The terminal agrees with the page.
    cli = _cli(wallet_relay, "apps", "--json")
    assert cli.returncode == 0, cli.stderr
    (row,) = json.loads(cli.stdout)
    assert row["budgets"][0]["spent"] == app["budgets"][0]["spent"]
    cli = _cli(wallet_relay, "usage", "--app", "Blog Assistant", "--json")
    calls = json.loads(cli.stdout)
    assert [c["status"] for c in calls].count("ok") == 3
    assert "denied:model_not_allowed" in [c["status"] for c in calls]  # JSON: the code
    cli = _cli(wallet_relay, "usage", "--app", "Blog Assistant")
    assert "refused: model not allowed" in cli.stdout and "denied:" not in cli.stdout  # words
    cli = _cli(wallet_relay, "apps")
    assert "Blog Assistant" in cli.stdout and "gpt-4o-mini" in cli.stdout
    assert conn.token not in cli.stdout + cli.stderr


def test_expensive_call_waits_for_approval(wallet_relay: RunningWallet) -> None:
    now = int(time.time())
    _, token = issue_grant(
        wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key, app="Careful",
        caveats=[cav.Models(("gpt-4o-mini",)), cav.Budget(500, "USD", "month"),
                 cav.ConfirmAbove(0, "USD")], source="cli", now=now)
    client = openai.OpenAI(api_key=token, base_url=f"{wallet_relay.base_url}/v1",
                           max_retries=0)
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "an expensive question"}]}
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(**kwargs)
    body = exc.value.body
    assert isinstance(body, dict)
    assert body["code"] == "confirmation_required"
    rid = body["approval_request_id"]
    with signed_in(wallet_relay) as browser:
        page = browser.get(f"/approvals/{rid}", follow_redirects=True)
        assert "Careful" in page.text and "gpt-4o-mini" in page.text
        r = browser.post(f"/approvals/{rid}/approve", data={"csrf": csrf_of(page.text)},
                         headers={"origin": wallet_relay.base_url})
        assert navigated_to(r) == "/approvals?done=approved"
    approval = wait_for_approval(wallet_relay.base_url, token, rid, timeout=5)
    ok = client.chat.completions.create(
        **kwargs, extra_headers={"X-Capwallet-Approval": approval})
    assert ok.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as again:  # single use
        client.chat.completions.create(
            **kwargs, extra_headers={"X-Capwallet-Approval": approval})
    assert isinstance(again.value.body, dict)
    assert again.value.body["code"] == "approval_invalid"


def test_revoke_in_one_click_stops_the_app(wallet_relay: RunningWallet) -> None:
    conn = _connect(wallet_relay)
    child = Token.parse(conn.token).attenuate([cav.MaxOutputTokens(50)]).serialize()
    client = openai.OpenAI(api_key=child, base_url=conn.openai_base_url, max_retries=0)
    msg: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=msg,
                                   max_tokens=5)
    with signed_in(wallet_relay) as browser:
        page = browser.get("/").text
        r = browser.post(f"/grants/{conn.grant_id}/revoke", data={"csrf": csrf_of(page)},
                         headers={"origin": wallet_relay.base_url})
        assert navigated_to(r) == "/"
        assert "revoked" in browser.get("/").text
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=msg,
                                       max_tokens=5)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["code"] == "revoked"


def test_relay_cors_only_for_granted_origins(wallet_relay: RunningWallet) -> None:
    base = wallet_relay.base_url
    issue_grant(wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key,
                app="Web Blog", caveats=[], source="oauth", now=int(time.time()),
                origin="https://blog.example")
    pre = {"access-control-request-method": "POST",
           "access-control-request-headers": "authorization, content-type"}
    ok = httpx.options(f"{base}/v1/chat/completions",
                       headers={"origin": "https://blog.example", **pre})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "https://blog.example"
    assert "authorization" in ok.headers["access-control-allow-headers"]
    bad = httpx.options(f"{base}/v1/chat/completions",
                        headers={"origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in bad.headers
    r = httpx.get(f"{base}/v1/models", headers={"origin": "https://blog.example"})
    assert r.headers.get("access-control-allow-origin") == "https://blog.example"
    r = httpx.get(f"{base}/v1/models", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # The wallet's own endpoints never answer CORS, even for a granted origin.
    r = httpx.options(f"{base}/token", headers={"origin": "https://blog.example", **pre})
    assert not any(h.startswith("access-control-") for h in r.headers)


def test_provider_check_against_the_fake_provider(wallet_relay: RunningWallet,
                                                  fake_provider: str) -> None:
    from fake_provider import DEFAULT_API_KEY

    env_key = {"FAKE_KEY": DEFAULT_API_KEY}
    r = subprocess.run(
        [sys.executable, "-m", "capwallet", "provider", "add", "local", "--base-url",
         f"{fake_provider}/v1", "--key-env", "FAKE_KEY", "--check", "--json"],
        env={**os.environ, **env_key, "CAPWALLET_HOME": str(wallet_relay.ctx.home.path),
             "CAPWALLET_PASSPHRASE": PASSPHRASE},
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checked"] is True
    assert DEFAULT_API_KEY not in r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "capwallet", "provider", "add", "bad", "--base-url",
         f"{fake_provider}/v1", "--check"],
        input="sk-wrong\n",
        env={**os.environ, "CAPWALLET_HOME": str(wallet_relay.ctx.home.path),
             "CAPWALLET_PASSPHRASE": PASSPHRASE},
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "capwallet: key not saved: the provider refused the key (HTTP 401)"
    assert "sk-wrong" not in r.stderr
