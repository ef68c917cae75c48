"""Discovery from Python: ``capwallet.client.discover`` / ``connect`` given only a wallet URL or
only a relay URL (a stand-alone reference relay whose RFC 9728 metadata names the wallet)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relay_harness import Relay, start_relay

from capwallet.client import ConnectError, connect, discover
from capwallet.wallet.runner import RunningWallet

from .conftest import signed_in
from .test_end_to_end import PERMISSIONS, approve_in


@pytest.fixture
def standalone_relay(wallet_relay: RunningWallet, fake_provider: str,
                     tmp_path: Path) -> Iterator[Relay]:
    r = start_relay(fake_provider, tmp_path, wallet_url=wallet_relay.base_url)
    try:
        yield r
    finally:
        r.close()


def test_discover_from_the_wallet_url(wallet_relay: RunningWallet) -> None:
    found = discover(wallet_relay.base_url + "/")
    assert found.issuer == wallet_relay.base_url
    assert found.authorization_endpoint == f"{wallet_relay.base_url}/authorize"
    assert found.token_endpoint == f"{wallet_relay.base_url}/token"
    assert found.relay_url == wallet_relay.base_url


def test_discover_and_connect_from_a_relay_url(wallet_relay: RunningWallet,
                                               standalone_relay: Relay) -> None:
    meta = httpx.get(f"{standalone_relay.url}/.well-known/oauth-protected-resource",
                     headers={"origin": "https://anyone.example"})
    assert meta.status_code == 200
    assert meta.headers["access-control-allow-origin"] == "*"
    assert meta.json()["authorization_servers"] == [wallet_relay.base_url]
    found = discover(standalone_relay.url)
    assert found.issuer == wallet_relay.base_url
    assert found.token_endpoint == f"{wallet_relay.base_url}/token"
    with signed_in(wallet_relay) as browser:
        conn = connect("Blog Assistant", PERMISSIONS, wallet_url=standalone_relay.url,
                       open_browser=approve_in(browser, wallet_relay), timeout=10)
    assert conn.wallet_url == wallet_relay.base_url
    assert conn.grant_id and conn.token.startswith("cwt1_")


def test_unreachable_wallet_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ConnectError) as exc:
        connect("App", PERMISSIONS, wallet_url=f"http://127.0.0.1:{port}",
                open_browser=lambda url: None, timeout=1)
    assert exc.value.error == "wallet_unreachable"
    assert f"127.0.0.1:{port}/.well-known/oauth-authorization-server" in exc.value.description


def test_a_relay_without_a_wallet_answers_404(fake_provider: str, tmp_path: Path) -> None:
    r = start_relay(fake_provider, tmp_path, wallet_url="")
    try:
        meta = httpx.get(f"{r.url}/.well-known/oauth-protected-resource")
        assert meta.status_code == 404
    finally:
        r.close()
