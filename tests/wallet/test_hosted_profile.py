"""The hosted profile without the proxy: --public-url in what the wallet publishes, the Host
check for the public host, forwarded headers only from trusted proxies, the passphrase file.

(tests/wallet/test_hosted_caddy.py runs the same wallet behind a real Caddy with TLS.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from capwallet.wallet.deployment import (
    Deployment,
    DeploymentError,
    parse_public_url,
    parse_trusted_proxies,
)
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, ServeOptions, running_wallet

from .conftest import PASSPHRASE, navigated_to
from .oauth_helpers import answer, authorize_params, consent_page, error_link_query

PUBLIC = "https://wallet.capwallet.test"
HOST = "wallet.capwallet.test"


@pytest.fixture
def hosted(home: WalletHome, keystore: Keystore) -> Iterator[tuple[RunningWallet, str]]:
    """A hosted wallet on a loopback port; returns it and its loopback address."""
    options = ServeOptions(port=0, deployment=Deployment(PUBLIC, ("127.0.0.1/32",)))
    with running_wallet(home, keystore, with_relay=False, options=options) as w:
        yield w, _loopback(w)


def _loopback(w: RunningWallet) -> str:
    return f"http://127.0.0.1:{w.local_port}"


def _client(local: str, host: str = HOST) -> httpx.Client:
    return httpx.Client(base_url=local, headers={"host": host}, follow_redirects=False,
                        timeout=30)


def test_public_url_parsing() -> None:
    assert parse_public_url("https://Wallet.Example.com/") == "https://wallet.example.com"
    assert parse_public_url("https://wallet.example.com:443") == "https://wallet.example.com"
    assert parse_public_url("https://w.example.com:8443") == "https://w.example.com:8443"
    assert parse_public_url("http://127.0.0.1:8750") == "http://127.0.0.1:8750"
    for bad in ("http://wallet.example.com", "https://wallet.example.com/wallet",
                "https://user@wallet.example.com", "wallet.example.com", "https://"):
        with pytest.raises(DeploymentError):
            parse_public_url(bad)
    assert parse_trusted_proxies(["127.0.0.1", "10.0.0.0/8,::1"]) == (
        "127.0.0.1/32", "10.0.0.0/8", "::1/128")
    with pytest.raises(DeploymentError):
        parse_trusted_proxies(["proxy.example.com"])


def test_only_the_public_host_is_answered(hosted: tuple[RunningWallet, str]) -> None:
    w, local = hosted
    assert w.base_url == PUBLIC
    with _client(local) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/", headers={"x-capwallet-session": "-"}).status_code == 401  # locked
    for host in ("127.0.0.1", f"127.0.0.1:{local.rsplit(':', 1)[1]}", "localhost",
                 "evil.example", "wallet.capwallet.test.evil.example",
                 "wallet.capwallet.test:8443"):
        with _client(local, host) as c:
            r = c.get("/healthz")
            assert r.status_code == 403, host
            assert HOST in r.text
    with _client(local, f"{HOST}:443") as c:  # the default port spelled out is the same host
        assert c.get("/healthz").status_code == 200


def test_published_urls_use_the_public_url(hosted: tuple[RunningWallet, str]) -> None:
    w, local = hosted
    with _client(local) as c:
        # Signed in through the sign-in link's secret, posted from the public origin. The
        # cookie is __Host- and Secure at an https origin (this client talks plain http to
        # the loopback port behind the proxy, so it sends the cookie by hand).
        secret = w.login_url.split("#", 1)[1]
        assert w.login_url.startswith(PUBLIC + "/login#")
        r = c.post("/login", json={"secret": secret}, headers={"origin": local})
        assert r.status_code == 403  # the loopback origin is not this wallet's origin
        r = c.post("/login", json={"secret": secret}, headers={"origin": PUBLIC})
        assert r.status_code == 200, r.text
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith("__Host-capwallet_session=")
        assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "Path=/" in set_cookie
        assert "Domain" not in set_cookie
        c.headers["cookie"] = set_cookie.split(";", 1)[0]
        c.headers["x-capwallet-session"] = r.json()["session"]
        # An error to send back to the app names the wallet by its public URL (RFC 9207 iss),
        # on a signed-in page (never a redirect before sign-in).
        params, _ = authorize_params(response_type="nope")
        q = error_link_query(consent_page(c, params))
        assert q["iss"] == PUBLIC and q["error"] == "unsupported_response_type"
        # The session's Origin check wants the public origin: a form posted with the loopback
        # origin is refused, the public one accepted.
        params, verifier = authorize_params()
        page = consent_page(c, params).text
        c.base_url = httpx.URL(local)  # answer() sends Origin = base_url: the loopback one
        refused = answer(c, page, "approve")
        assert refused.status_code == 403
        c.base_url = httpx.URL(local)
        r = c.post("/authorize", data={}, headers={"origin": PUBLIC})
        assert r.status_code == 403  # no CSRF token: the Origin alone is not enough
        page = consent_page(c, params).text
        r = _answer_as(c, page, PUBLIC)
        query = parse_qs(urlsplit(navigated_to(r)).query)
        assert query["iss"] == [PUBLIC]
        tok = c.post("/token", data={
            "grant_type": "authorization_code", "code": query["code"][0],
            "redirect_uri": params["redirect_uri"], "code_verifier": verifier,
        })
        assert tok.status_code == 200, tok.text
        assert tok.json()["relay_url"] == PUBLIC


def _answer_as(c: httpx.Client, page: str, origin: str) -> httpx.Response:
    from .conftest import csrf_of, hidden
    from .oauth_helpers import DETAILS

    data: dict[str, list[str]] = {
        "csrf": [csrf_of(page)], "consent": [hidden(page, "consent")], "decision": ["approve"],
        "provider": DETAILS["providers"], "model": DETAILS["models"], "scope": DETAILS["scopes"],
    }
    return c.post("/authorize", data=data, headers={"origin": origin})


def _serve(home: WalletHome, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CAPWALLET_HOME": str(home.path), "CAPWALLET_KDF_LIMITS": "interactive"}
    env.pop("CAPWALLET_PASSPHRASE", None)
    return subprocess.Popen([sys.executable, "-m", "capwallet", "serve", "--port", "0", *args],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_passphrase_file_readable_by_others_is_refused(home: WalletHome, tmp_path: Path,
                                                       mode: int) -> None:
    f = tmp_path / "passphrase"
    f.write_text(PASSPHRASE + "\n")
    f.chmod(mode)
    proc = _serve(home, "--passphrase-file", str(f), "--public-url", PUBLIC)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "readable by group or others" in err and f"chmod 600 {f}" in err
    assert PASSPHRASE not in out + err
    assert "Traceback" not in err


def test_passphrase_file_starts_unattended(home: WalletHome, tmp_path: Path) -> None:
    """It starts with no terminal and stops cleanly on SIGTERM (a service manager's stop), even
    one that comes right after it printed its addresses. Before the wallet's own stop handlers
    (wallet/runner.py _stop_on_signals), a SIGTERM that arrived while uvicorn was starting
    was lost (its handler raised an exception wherever the main thread was; most likely a
    callback of the starting event loop swallowed it): the wallet ran on, and a second SIGTERM
    stopped it, and `proc.wait(30)` timed out (3 of 7 runs under load)."""
    f = tmp_path / "passphrase"
    f.write_text(PASSPHRASE + "\n")
    f.chmod(0o600)
    proc = _serve(home, "--passphrase-file", str(f), "--public-url", PUBLIC,
                  "--trusted-proxy", "127.0.0.1")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "published as https://wallet.capwallet.test" in first, first
        rest = [proc.stdout.readline() for _ in range(5)]
        assert any("Sign in to your wallet:  https://wallet.capwallet.test/login#" in line
                   for line in rest), rest
        assert any("Relay for apps:          https://wallet.capwallet.test/v1" in line
                   for line in rest), rest
        assert any("The sign-in link works once" in line for line in rest), rest
        assert any("No passkey yet: after signing in, add one at "
                   "https://wallet.capwallet.test/passkeys" in line for line in rest), rest
    finally:
        proc.terminate()  # at once, while it may still be starting: the stop must not get lost
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0 and err.strip().endswith("capwallet stopped."), err
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase")
    wrong.chmod(0o400)
    proc = _serve(home, "--passphrase-file", str(wrong))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err and err.strip()


def test_serve_refuses_a_plain_http_public_url(home: WalletHome) -> None:
    proc = _serve(home, "--public-url", "http://wallet.example.com")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "must be https" in err
    # Plain http on a public interface, with neither TLS nor a proxy in front, is refused.
    proc = _serve(home, "--listen", "0.0.0.0", "--public-url", PUBLIC)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "serves plain http" in err


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_direct_tls_in_uvicorn(home: WalletHome, keystore: Keystore, tmp_path: Path) -> None:
    """The alternative to a proxy: --tls-cert/--tls-key, uvicorn terminates TLS itself."""
    from scripts.hosted_up import free_port, pinned_transport

    cert, key = _self_signed(tmp_path, HOST)
    port = free_port()
    public = f"https://{HOST}:{port}"
    options = ServeOptions(port=port, deployment=Deployment(public), tls_cert=str(cert),
                           tls_key=str(key))
    with running_wallet(home, keystore, with_relay=False, options=options) as w:
        assert w.base_url == public
        with httpx.Client(transport=pinned_transport(cert, {HOST: "127.0.0.1"}),
                          timeout=10) as c:
            assert c.get(public + "/healthz").status_code == 200
            meta = c.get(public + "/.well-known/oauth-authorization-server")
            assert meta.status_code == 200 and meta.json()["issuer"] == public
        with pytest.raises(httpx.HTTPError):  # no plain http on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"host": f"{HOST}:{port}"},
                      timeout=5)


def test_two_relay_processes_share_one_redis_store(home: WalletHome, redis_url: str) -> None:
    """--store redis://...: budgets and revocations live in Redis, so a second relay process
    of the same wallet sees what the first did (here: spend, then a revocation)."""
    import asyncio
    import secrets as pysecrets

    import openai
    import redis as redis_lib

    from capwallet import caveats as cav
    from capwallet.store import open_store
    from capwallet.wallet.grants import issue_grant, revoke_grant
    from fake_provider import DEFAULT_API_KEY, running_fake_provider

    sep = "&" if "?" in redis_url else "?"
    prefix = "hosted" + pysecrets.token_hex(4)
    store = f"{redis_url}{sep}prefix={prefix}"
    with running_fake_provider() as fake:
        ks = Keystore.open(home.keystore_path, PASSPHRASE)
        ks.add_provider("openai", DEFAULT_API_KEY, f"{fake}/v1", "openai")
        ks.save()
        opts = ServeOptions(port=0, store_url=store)
        with running_wallet(home, ks, options=opts) as a, \
                running_wallet(home, ks, options=ServeOptions(port=0, store_url=store)) as b:
            grant, token = issue_grant(
                a.ctx.grants, ks.current_root_key, app="shared",
                caveats=[cav.Budget(100_000_000, "USD", "month")], source="cli",
                now=a.ctx.now())
            for w in (a, b):
                client = openai.OpenAI(api_key=token, base_url=w.base_url + "/v1",
                                       max_retries=0)
                client.chat.completions.create(model="gpt-4o-mini", max_tokens=8,
                                               messages=[{"role": "user", "content": "hi"}])
            r = redis_lib.Redis.from_url(redis_url)
            assert any(r.scan_iter(match=f"*{prefix}*", count=1000)), "nothing in Redis"
            async def revoke() -> None:  # as `capwallet revoke` would, on its own connection
                shared = open_store(store)
                try:
                    await revoke_grant(a.ctx.grants, shared, grant.grant_id, a.ctx.now())
                finally:
                    await shared.close()

            asyncio.run(revoke())
            client = openai.OpenAI(api_key=token, base_url=b.base_url + "/v1", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model="gpt-4o-mini", max_tokens=8,
                                               messages=[{"role": "user", "content": "hi"}])
