"""Wallet fixtures: a real keystore (fast Argon2id limits), a real wallet server on a loopback
port, and an httpx client signed in the way the wallet's page script does it (the sign-in
link's secret posted to /login -> a session cookie, and the session secret sent in the
x-capwallet-session header on every request)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, running_wallet
from capwallet.wallet.sessions import SESSION_HEADER

from .browser_session import launch_chromium, playwright_driver

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPWALLET_KDF_LIMITS", "interactive")


@pytest.fixture
def home(tmp_path: Path) -> WalletHome:
    h = WalletHome(tmp_path / "wallet")
    h.ensure()
    ks = Keystore.create(h.keystore_path, PASSPHRASE)
    ks.add_provider("openai", "sk-test-never-shown-0123456789", "http://127.0.0.1:9/v1", "openai")
    ks.save()
    return h


@pytest.fixture
def keystore(home: WalletHome) -> Keystore:
    return Keystore.open(home.keystore_path, PASSPHRASE)


@pytest.fixture
def wallet(home: WalletHome, keystore: Keystore) -> Iterator[RunningWallet]:
    """The wallet pages without the relay (tests of the relay path use `wallet_relay`)."""
    with running_wallet(home, keystore, with_relay=False) as w:
        yield w


def sign_in(client: httpx.Client, w: RunningWallet) -> str:
    """Sign ``client`` in as wallet.js does; returns the session secret (header value)."""
    secret = w.login_url.split("#", 1)[1]
    r = client.post("/login", json={"secret": secret}, headers={"origin": w.base_url})
    assert r.status_code == 200, r.text
    assert "capwallet_session" in client.cookies
    session: str = r.json()["session"]
    return session


@contextlib.contextmanager
def signed_in(w: RunningWallet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=w.base_url, follow_redirects=False, timeout=30) as client:
        client.headers[SESSION_HEADER] = sign_in(client, w)
        yield client


@pytest.fixture
def browser_client(wallet: RunningWallet) -> Iterator[httpx.Client]:
    with signed_in(wallet) as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "page has no CSRF token"
    return m.group(1)


def navigated_to(r: httpx.Response) -> str:
    """Where the page's script goes after a form post (the wallet answers JSON, not 303)."""
    assert r.status_code == 200, r.text
    location: str = r.json()["location"]
    return location


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert m, f"page has no field {name}"
    return m.group(1)


@pytest.fixture
def fake_provider() -> Iterator[str]:
    from fake_provider import running_fake_provider

    with running_fake_provider() as url:
        yield url


@pytest.fixture
def wallet_relay(home: WalletHome, fake_provider: str) -> Iterator[RunningWallet]:
    """The whole wallet server: pages and the relay, provider key from the keystore, calls
    going to the fake provider."""
    from fake_provider import DEFAULT_API_KEY

    ks = Keystore.open(home.keystore_path, PASSPHRASE)
    ks.add_provider("openai", DEFAULT_API_KEY, f"{fake_provider}/v1", "openai")
    ks.save()
    with running_wallet(home, ks) as w:
        yield w


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright, shared by a test module's browser tests (see browser_session.py)."""
    with playwright_driver() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    """Debian's Chromium, shared by a test module's tests; each test opens its own context."""
    b = launch_chromium(playwright)
    yield b
    b.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    shots = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    if shots.is_dir() and any(shots.glob("*.png")):
        names = ", ".join(sorted(p.name for p in shots.glob("*.png")))
        terminalreporter.write_line(f"wallet screenshots in {shots}: {names}")
