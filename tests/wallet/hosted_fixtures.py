"""The hosted stack for tests: a wallet home with the fake provider's key, an owner-only
passphrase file, and scripts/hosted_up.py's Caddy + `capwallet serve` in front of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from scripts.hosted_up import HostedStack, hosted_stack

from . import browser_session
from .conftest import PASSPHRASE


@pytest.fixture(scope="module", name="stack")
def hosted_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedStack]:
    from fake_provider import DEFAULT_API_KEY, running_fake_provider

    tmp = tmp_path_factory.mktemp("hosted")
    home = WalletHome(tmp / "wallet")
    home.ensure()
    with pytest.MonkeyPatch.context() as mp, running_fake_provider() as fake:
        mp.setenv("CAPWALLET_KDF_LIMITS", "interactive")
        ks = Keystore.create(home.keystore_path, PASSPHRASE)
        ks.add_provider("openai", DEFAULT_API_KEY, f"{fake}/v1", "openai")
        ks.save()
        pw = tmp / "passphrase"
        pw.write_text(PASSPHRASE + "\n")
        pw.chmod(0o600)
        with hosted_stack(home.path, pw) as s:
            yield s




def launch_chromium(playwright: Any, s: HostedStack) -> Any:
    """Chromium that resolves our test names to 127.0.0.1 and accepts Caddy's certificates
    for them (by public key); every other certificate is checked as usual."""
    return browser_session.launch_chromium(playwright, *s.chromium_args())


def wallet_sign_in(page: Any, s: HostedStack) -> None:
    """Sign in with the one-time link `capwallet serve` printed, as the owner would."""
    page.goto(s.login_url)
    page.wait_for_url(s.wallet_url + "/")


def grant(s: HostedStack, *flags: str) -> str:
    """A grant made from the console (`capwallet grant --json`); returns the token."""
    env = {**os.environ, "CAPWALLET_PASSPHRASE": PASSPHRASE, "CAPWALLET_HOME": str(s.home)}
    r = subprocess.run([sys.executable, "-m", "capwallet", "grant", "--app", "hosted-test",
                        "--provider", "openai", "--model", "gpt-4o-mini", *flags, "--json"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    token: str = json.loads(r.stdout)["token"]
    return token
