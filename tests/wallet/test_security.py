"""Local security of the wallet pages: Host (DNS rebinding), Origin, CSRF, session, no CORS."""

from __future__ import annotations

import time

import httpx
import pytest

from capwallet.wallet.grants import issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, running_wallet

from .conftest import csrf_of, navigated_to, sign_in, signed_in


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
    # The cookie without the session header (what another loopback port receives): refused.
    cookie_only = {"cookie": f"capwallet_session={browser_client.cookies['capwallet_session']}"}
    r = httpx.post(wallet.base_url + url, data={"csrf": csrf}, headers={**own, **cookie_only})
    assert r.status_code == 403
    # The header without the cookie: refused too.
    r = httpx.post(wallet.base_url + url, data={"csrf": csrf}, headers={
        **own, "x-capwallet-session": browser_client.headers["x-capwallet-session"]})
    assert r.status_code == 403
    g = wallet.ctx.grants.get(gid)
    assert g is not None and g.status == "active"
    # The real page's form works.
    r = browser_client.post(url, data={"csrf": csrf}, headers=own)
    assert navigated_to(r) == "/"
    g = wallet.ctx.grants.get(gid)
    assert g is not None and g.status == "revoked"


def test_usage_is_not_readable_without_the_session(wallet: RunningWallet,
                                                   browser_client: httpx.Client) -> None:
    _grant(wallet)
    assert httpx.get(wallet.base_url + "/api/usage").status_code == 401
    r = httpx.get(wallet.base_url + "/")  # a navigation gets the shell: no data, no token
    assert r.status_code == 200 and "Victim" not in r.text and 'name="csrf"' not in r.text
    r = httpx.get(wallet.base_url + "/", headers={"x-capwallet-session": "-"})
    assert r.status_code == 401 and "Victim" not in r.text
    forged = httpx.get(wallet.base_url + "/", cookies={"capwallet_session": "a" * 32 + ".x"},
                       headers={"x-capwallet-session": "a" * 32 + ".y"})
    assert forged.status_code == 401
    cookie_only = httpx.get(wallet.base_url + "/api/usage", headers={
        "cookie": f"capwallet_session={browser_client.cookies['capwallet_session']}",
        "x-capwallet-session": "-"})
    assert cookie_only.status_code == 401
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
    secret = wallet.login_url.split("#", 1)[1]
    assert "?" not in wallet.login_url  # the secret is in the fragment: never sent anywhere
    own = {"origin": wallet.base_url}
    r = httpx.post(wallet.base_url + "/login", json={"secret": secret}, headers=own)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    session = r.json()["session"]
    assert session.split(".")[0] in cookie and session.split(".")[1].lower() not in cookie
    wrong = httpx.post(wallet.base_url + "/login", json={"secret": "wrong"}, headers=own)
    assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
    no_origin = httpx.post(wallet.base_url + "/login", json={"secret": secret})
    assert no_origin.status_code == 403 and "set-cookie" not in no_origin.headers
    assert httpx.get(wallet.base_url + "/login?token=" + secret).headers.get("set-cookie") is None


def test_sign_out_and_ending_sessions(wallet: RunningWallet) -> None:
    with signed_in(wallet) as first, signed_in(wallet) as second:
        listed = first.get("/api/sessions").json()
        ids = {s["session_id"] for s in listed["sessions"]}
        assert listed["current"] in ids and len(ids) == 2
        csrf = csrf_of(first.get("/").text)
        other = next(i for i in ids if i != listed["current"])
        r = first.post(f"/api/sessions/{other}/end", data={"csrf": csrf},
                       headers={"origin": wallet.base_url})
        assert r.status_code == 200 and r.json() == {"ended": True}
        assert second.get("/api/usage").status_code == 401  # ended from the first browser
        r = first.post("/logout", data={"csrf": csrf}, headers={"origin": wallet.base_url})
        assert r.status_code == 200 and r.json() == {"location": "/", "forget": True}
        assert "capwallet_session=" in r.headers["set-cookie"]  # the cookie is cleared
        assert first.get("/api/usage").status_code == 401
        assert wallet.ctx.sessions.store.list() == []


def test_sessions_expire_and_are_not_derived_from_the_root_key(wallet: RunningWallet) -> None:
    from capwallet.wallet.sessions import IDLE_TTL, SESSION_TTL

    store = wallet.ctx.sessions.store
    a = store.create("a", now=1000)
    b = store.create("b", now=1000)
    assert a.cookie_value != b.cookie_value and a.header_value != b.header_value
    assert store.authenticate(a.cookie_value, a.header_value, now=1001) is not None
    assert store.authenticate(a.cookie_value, b.header_value, now=1001) is None  # mixed
    assert store.authenticate(a.cookie_value, "", now=1001) is None
    assert store.authenticate(a.cookie_value, a.cookie_value, now=1001) is None
    assert store.authenticate(a.cookie_value, a.header_value, now=1000 + IDLE_TTL + 2) is None
    c = store.create("c", now=5000)
    for t in range(5000, 5000 + SESSION_TTL, IDLE_TTL // 2):  # used often, still ends
        assert store.authenticate(c.cookie_value, c.header_value, now=t) is not None
    assert store.authenticate(c.cookie_value, c.header_value, now=5000 + SESSION_TTL) is None
    # Nothing in the store can rebuild a secret: only hashes are kept.
    dump = "\n".join(str(r) for r in store._db.execute("SELECT * FROM sessions"))
    for value in (a.cookie_value, a.header_value):
        assert value.split(".")[1] not in dump


def test_a_second_sign_in_is_a_second_session(wallet: RunningWallet) -> None:
    with httpx.Client(base_url=wallet.base_url) as one, httpx.Client(
            base_url=wallet.base_url) as two:
        s1, s2 = sign_in(one, wallet), sign_in(two, wallet)
        assert s1 != s2
        one.headers["x-capwallet-session"] = s2  # another session's header with this cookie
        assert one.get("/api/usage").status_code == 401


def test_hostile_text_is_escaped(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>"\''
    issue_grant(wallet.ctx.grants, wallet.ctx.keystore.current_root_key, app=evil,
                caveats=[], source="cli", now=int(time.time()))
    page = browser_client.get("/").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_session_outlives_a_restart_but_not_its_sign_out(home: WalletHome,
                                                            keystore: Keystore) -> None:
    """Sessions are rows in wallet.db: a restart keeps them (the sign-in link is new for every
    run), and sign-out ends one for good."""
    with running_wallet(home, keystore, with_relay=False) as first:
        with httpx.Client(base_url=first.base_url) as c:
            header = sign_in(c, first)
            cookie = c.cookies["capwallet_session"]
        first_link = first.login_url
    with running_wallet(home, keystore, with_relay=False) as second:
        assert second.login_url.split("#")[1] != first_link.split("#")[1]
        with httpx.Client(base_url=second.base_url, headers={"x-capwallet-session": header},
                          cookies={"capwallet_session": cookie}) as c:
            page = c.get("/")
            assert page.status_code == 200 and 'id="stat-calls"' in page.text
            r = c.post("/logout", data={"csrf": csrf_of(page.text)},
                       headers={"origin": second.base_url})
            assert r.status_code == 200
    with running_wallet(home, keystore, with_relay=False) as third, httpx.Client(
            base_url=third.base_url, headers={"x-capwallet-session": header},
            cookies={"capwallet_session": cookie}) as c:
        assert c.get("/api/usage").status_code == 401
