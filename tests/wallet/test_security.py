"""Local security of the wallet pages: Host (DNS rebinding), Origin, CSRF, session, no CORS."""

from __future__ import annotations

import time

import httpx
import pytest

from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet

from .conftest import csrf_of


def _grant(wallet: RunningWallet) -> str:
    g, _ = issue_grant(wallet.ctx.grants, wallet.ctx.keystore.current_root_key, app="Victim",
                       caveats=[], source="cli", now=int(time.time()))
    return g.grant_id


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8750", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "10.0.0.1", ""])
def test_dns_rebinding_host_is_refused(wallet: RunningWallet, host: str) -> None:
    for path in ("/", "/api/usage", "/authorize", "/v1/models", "/healthz"):
        r = httpx.get(wallet.base_url + path, headers={"host": host})
        assert r.status_code == 403, (host, path)
        assert "access-control-allow-origin" not in r.headers


def test_loopback_host_names_are_accepted(wallet: RunningWallet) -> None:
    port = wallet.base_url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert httpx.get(wallet.base_url + "/healthz", headers={"host": host}).status_code == 200


def test_revoke_needs_session_csrf_and_origin(wallet: RunningWallet,
                                              browser_client: httpx.Client) -> None:
    gid = _grant(wallet)
    page = browser_client.get("/")
    assert page.status_code == 200 and "Victim" in page.text
    csrf = csrf_of(page.text)
    url = f"/grants/{gid}/revoke"
    own = {"origin": wallet.base_url}
    # No CSRF token, a wrong one, a foreign Origin, no Origin at all, no session: all refused.
    assert browser_client.post(url, data={}, headers=own).status_code == 403
    assert browser_client.post(url, data={"csrf": "0" * 40}, headers=own).status_code == 403
    r = browser_client.post(url, data={"csrf": csrf}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    port = int(wallet.base_url.rsplit(":", 1)[1])
    r = browser_client.post(url, data={"csrf": csrf},
                            headers={"origin": f"http://127.0.0.1:{port + 1}"})
    assert r.status_code == 403  # another local origin (another port) is another origin
    assert browser_client.post(url, data={"csrf": csrf}).status_code == 403
    r = httpx.post(wallet.base_url + url, data={"csrf": csrf}, headers=own)
    assert r.status_code == 403
    g = wallet.ctx.grants.get(gid)
    assert g is not None and g.status == "active"
    # The real page's form works.
    r = browser_client.post(url, data={"csrf": csrf}, headers=own)
    assert r.status_code == 303
    g = wallet.ctx.grants.get(gid)
    assert g is not None and g.status == "revoked"


def test_usage_is_not_readable_without_the_session(wallet: RunningWallet,
                                                   browser_client: httpx.Client) -> None:
    _grant(wallet)
    assert httpx.get(wallet.base_url + "/api/usage").status_code == 401
    r = httpx.get(wallet.base_url + "/")
    assert r.status_code == 401 and "Victim" not in r.text
    forged = httpx.get(wallet.base_url + "/", cookies={"capwallet_session": "a" * 32 + ".x"})
    assert forged.status_code == 401
    r = browser_client.get("/api/usage", headers={"origin": "http://evil.example"})
    assert r.status_code == 403  # cross-origin reads are refused outright
    ok = browser_client.get("/api/usage")
    assert ok.status_code == 200 and ok.json()["apps"][0]["app"] == "Victim"


def test_wallet_sends_no_cors_and_forbids_framing(wallet: RunningWallet,
                                                  browser_client: httpx.Client) -> None:
    for method, path in (("OPTIONS", "/token"), ("OPTIONS", "/api/usage"), ("GET", "/")):
        r = browser_client.request(method, path, headers={
            "access-control-request-method": "POST"})
        assert not any(h.startswith("access-control-") for h in r.headers), path
    r = browser_client.get("/")
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "same-origin"


def test_session_cookie_is_strict_and_httponly(wallet: RunningWallet) -> None:
    r = httpx.get(wallet.login_url)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert httpx.get(wallet.base_url + "/login?token=wrong").status_code == 403


def test_hostile_text_is_escaped(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>"\''
    issue_grant(wallet.ctx.grants, wallet.ctx.keystore.current_root_key, app=evil,
                caveats=[], source="cli", now=int(time.time()))
    page = browser_client.get("/").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
