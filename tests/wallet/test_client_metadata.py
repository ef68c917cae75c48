"""Verified app identity: the wallet fetches an app's Client ID Metadata Document.

A real https server on 127.0.0.1 with a certificate from a test CA (trustme) serves good and
bad documents. The wallet's production fetcher refuses loopback addresses outright, so the
positive tests give the wallet ``ClientMetadataFetcher.for_loopback_tests(<the test CA>)``:
the one allowance for tests, which needs the CA passed explicitly. The refusals of private
addresses are tested against the production fetcher.
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme

from capwallet.wallet import client_metadata as cm
from capwallet.wallet.runner import RunningWallet
from capwallet.wallet.sessions import SESSION_HEADER

from .oauth_helpers import answer, authorize_params, consent_page, redirect_query


class MetadataSite:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"https://localhost:{port}"
        self.hits: list[str] = []

    def doc(self, path: str = "/client.json", **changes: Any) -> dict[str, Any]:
        body = {"client_id": f"{self.base}{path}", "client_name": "Notes by Example",
                "logo_uri": f"{self.base}/logo.png", "redirect_uris": [f"{self.base}/cb"]}
        body.update(changes)
        return body


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def site(ca: Any) -> Iterator[MetadataSite]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    holder: list[MetadataSite] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            s = holder[0]
            s.hits.append(self.path)
            if self.path == "/redirect.json":
                self.send_response(302)
                self.send_header("location", "/client.json")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path == "/slow.json":
                body = json.dumps(s.doc("/slow.json")).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                for i in range(len(body)):  # one byte every 0.1 s: 20+ s in all
                    try:
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.1)
                return
            if self.path == "/big.json":
                body = json.dumps(s.doc("/big.json", padding="x" * 20000)).encode()
            elif self.path == "/big-chunked.json":
                body = json.dumps(s.doc("/big-chunked.json", padding="x" * 20000)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1000):
                    part = body[i:i + 1000]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            elif self.path == "/wrong-id.json":
                body = json.dumps(s.doc("/client.json")).encode()
            elif self.path == "/off-origin.json":
                body = json.dumps(s.doc("/off-origin.json",
                                        redirect_uris=["https://evil.example/cb"])).encode()
            elif self.path == "/client.json":
                body = json.dumps(s.doc()).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    holder.append(MetadataSite(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


@pytest.fixture
def test_fetcher(ca: Any) -> cm.ClientMetadataFetcher:
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    return cm.ClientMetadataFetcher.for_loopback_tests(ctx, time_limit=1.5)


def ask(client: httpx.Client, site: MetadataSite, path: str = "/client.json",
        **changes: str) -> httpx.Response:
    changes = {"client_id": f"{site.base}{path}", "redirect_uri": f"{site.base}/cb", **changes}
    params, _ = authorize_params(**changes)
    return consent_page(client, params)


def nothing_changed(wallet: RunningWallet) -> None:
    assert not wallet.ctx.grants.list(statuses=("pending", "active", "revoked"))


def test_verified_name_and_origin(wallet: RunningWallet, browser_client: httpx.Client,
                                  site: MetadataSite, test_fetcher: cm.ClientMetadataFetcher
                                  ) -> None:
    wallet.ctx.client_metadata = test_fetcher
    page = ask(browser_client, site)
    assert page.status_code == 200, page.text
    assert "Notes by Example" in page.text and "Blog Assistant" not in page.text
    assert f"Verified: the website {site.base} publishes the name" in page.text
    q = redirect_query(answer(browser_client, page.text, "approve"))
    assert "code" in q
    [grant] = wallet.ctx.grants.list(statuses=("pending",))
    assert grant.origin == site.base and grant.app == "Notes by Example"


def test_unverified_name_is_said_in_plain_words(browser_client: httpx.Client) -> None:
    params, _ = authorize_params(client_id="https://notes.example",
                                 redirect_uri="https://notes.example/cb")
    page = consent_page(browser_client, params).text
    assert "Not verified" in page and "what the page says about itself" in page


@pytest.mark.parametrize(("path", "reason"), [
    ("/big.json", cm.TOO_LARGE),
    ("/big-chunked.json", cm.TOO_LARGE),
    ("/slow.json", cm.TIMEOUT),
    ("/redirect.json", cm.REDIRECT),
    ("/wrong-id.json", cm.INVALID),
    ("/off-origin.json", cm.INVALID),
    ("/missing.json", cm.BAD_STATUS),
])
def test_bad_documents_are_refused_and_change_nothing(
        wallet: RunningWallet, browser_client: httpx.Client, site: MetadataSite,
        test_fetcher: cm.ClientMetadataFetcher, path: str, reason: str) -> None:
    wallet.ctx.client_metadata = test_fetcher
    before = len(site.hits)
    started = time.monotonic()
    r = ask(browser_client, site, path)
    assert time.monotonic() - started < 10
    assert r.status_code == 400 and "location" not in r.headers
    assert f"reason: {reason}" in r.text and "Nothing was changed" in r.text
    nothing_changed(wallet)
    assert site.hits[before:] == [path]  # one request; a redirect is not followed


def test_redirect_uri_must_be_listed(wallet: RunningWallet, browser_client: httpx.Client,
                                     site: MetadataSite, test_fetcher: cm.ClientMetadataFetcher
                                     ) -> None:
    wallet.ctx.client_metadata = test_fetcher
    r = ask(browser_client, site, redirect_uri=f"{site.base}/other")
    assert r.status_code == 400 and "redirect_uri_not_registered" in r.text
    nothing_changed(wallet)


def test_non_https_metadata_url(wallet: RunningWallet, browser_client: httpx.Client,
                                site: MetadataSite) -> None:
    params, _ = authorize_params(client_id=f"http://localhost:{site.port}/client.json",
                                 redirect_uri=f"http://localhost:{site.port}/cb")
    r = consent_page(browser_client, params)
    assert r.status_code == 400 and f"reason: {cm.NOT_HTTPS}" in r.text
    nothing_changed(wallet)


def test_production_fetcher_refuses_loopback_and_private_addresses(
        wallet: RunningWallet, browser_client: httpx.Client, site: MetadataSite) -> None:
    """The wallet's own fetcher (no test allowance): the same good document on 127.0.0.1 is
    refused before any connection, as are private and link-local literals."""
    before = len(site.hits)
    r = ask(browser_client, site)
    assert r.status_code == 400 and f"reason: {cm.PRIVATE_ADDRESS}" in r.text
    for host in ("10.0.0.7", "169.254.169.254", "[::1]", "[fd00::1]", "[::ffff:127.0.0.1]",
                 "192.168.1.1", "100.64.0.1"):
        params, _ = authorize_params(client_id=f"https://{host}/client.json",
                                     redirect_uri=f"https://{host}/cb")
        r = consent_page(browser_client, params)
        assert r.status_code == 400 and f"reason: {cm.PRIVATE_ADDRESS}" in r.text, host
    assert len(site.hits) == before  # never connected
    nothing_changed(wallet)


def test_every_resolved_address_is_checked() -> None:
    """A name with one public and one private address is refused (the private one could be
    the one a second resolution returns)."""
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.1.2.3"]

    fetcher = cm.ClientMetadataFetcher(resolver=resolver)
    with pytest.raises(cm.ClientMetadataError) as exc:
        asyncio.run(fetcher.fetch("https://notes.example/client.json"))
    assert exc.value.reason == cm.PRIVATE_ADDRESS and "10.1.2.3" in exc.value.message


def test_tls_name_is_checked_against_the_host(site: MetadataSite, ca: Any) -> None:
    """The connection goes to the checked IP, but the certificate must still name the host:
    the test server's certificate names localhost, not 127.0.0.2.example."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    fetcher = cm.ClientMetadataFetcher(tls=ctx, resolver=resolver, _allow_loopback=True)
    url = f"https://other.example:{site.port}/client.json"
    with pytest.raises(cm.ClientMetadataError) as exc:
        asyncio.run(fetcher.fetch(url))
    assert exc.value.reason == cm.UNREACHABLE


def test_loopback_allowance_needs_an_explicit_ca() -> None:
    with pytest.raises(ValueError, match="explicit CA"):
        cm.ClientMetadataFetcher(_allow_loopback=True)
    strict = cm.ClientMetadataFetcher()
    assert not strict.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert not strict.address_allowed(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert strict.address_allowed(ipaddress.ip_address("93.184.215.14"))


def test_a_locked_wallet_fetches_nothing(wallet: RunningWallet, site: MetadataSite,
                                         test_fetcher: cm.ClientMetadataFetcher) -> None:
    wallet.ctx.client_metadata = test_fetcher
    before = len(site.hits)
    with httpx.Client(base_url=wallet.base_url) as anonymous:
        r = ask(anonymous, site)  # a navigation: the data-less shell
        assert r.status_code == 200 and "Notes by Example" not in r.text
        anonymous.headers[SESSION_HEADER] = "not-a-session"
        r = ask(anonymous, site)  # the shell's script, without a session: locked
        assert r.status_code == 401
    assert len(site.hits) == before
