"""The hosted wallet behind a real Caddy with TLS (`tls internal`), as scripts/hosted_up.py
brings it up: apps reach the relay over HTTPS with the official SDK, and everything the wallet
publishes names its public URL."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from scripts.hosted_up import HostedStack

from .hosted_fixtures import (
    grant,
    hosted_stack_fixture,  # noqa: F401  (the `stack` fixture)
)


def test_https_health_and_no_plain_http(stack: HostedStack) -> None:
    with stack.client(timeout=10) as c:
        r = c.get(stack.wallet_url + "/healthz")
        assert r.status_code == 200
        # The locked dashboard comes over TLS with the page headers the wallet always sends.
        page = c.get(stack.wallet_url + "/", headers={"x-capwallet-session": "-"})
        assert page.status_code == 401 and page.headers["x-frame-options"] == "DENY"
        assert "Sign in to your wallet" in page.text  # the hosted locked page: passkey first
    # Caddy's certificate is for our name only: a client that does not trust its CA refuses.
    with pytest.raises(httpx.ConnectError), httpx.Client(
        transport=_untrusting(stack), timeout=10,
    ) as c:
        c.get(stack.wallet_url + "/healthz")


def _untrusting(stack: HostedStack) -> httpx.HTTPTransport:
    import certifi

    from scripts.hosted_up import pinned_transport

    return pinned_transport(Path(certifi.where()), stack.names)


def test_openai_sdk_through_caddy_and_public_approval_links(stack: HostedStack) -> None:
    token = grant(stack, "--budget", "5USD/month", "--confirm-above", "0.01USD")
    client = openai.OpenAI(api_key=token, base_url=stack.wallet_url + "/v1",
                           # openai takes an httpx.Client (its legacy client class) but
                           # types the argument as httpx2.Client only
                           http_client=stack.client(timeout=30),  # type: ignore[arg-type]
                           max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=16000, n=3,
                                       messages=[{"role": "user", "content": "hi"}])
    body = info.value.body
    assert isinstance(body, dict)
    url = body.get("approval_url") or body.get("error", {}).get("approval_url")
    assert isinstance(url, str) and url.startswith(stack.wallet_url + "/approvals/"), body
    # A token without confirm-above goes through, over HTTPS, with the SDK.
    ok = grant(stack, "--budget", "5USD/month")
    client = openai.OpenAI(api_key=ok, base_url=stack.wallet_url + "/v1",
                           # openai takes an httpx.Client (its legacy client class) but
                           # types the argument as httpx2.Client only
                           http_client=stack.client(timeout=30),  # type: ignore[arg-type]
                           max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o-mini", max_tokens=16,
                                            messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
