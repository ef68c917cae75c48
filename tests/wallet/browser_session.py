"""Chromium for the wallet's browser tests, and signing in to the wallet in it as the user does.

Playwright drives Debian's Chromium (/usr/bin/chromium, installed by scripts/system-deps.sh);
no browser is downloaded. The flags keep Chromium from reaching out on its own (updates, sync,
background requests), which the test machines' lack of network would only slow down. The
conftest's ``playwright`` and ``browser`` fixtures are built from these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capwallet.wallet.runner import RunningWallet

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def playwright_driver() -> Iterator[Any]:
    """Playwright's sync API, once Debian's Chromium is known to be there (else the test fails:
    a missing browser must not pass as a skipped test)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (scripts/system-deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch_chromium(playwright: Any, *extra_args: str, **options: Any) -> Any:
    """Debian's Chromium with the test flags (plus ``extra_args``); options go to launch()."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra_args],
                                      **options)


def sign_in_page(page: Any, w: RunningWallet) -> None:
    """Sign ``page``'s browser profile in to the wallet as the user would, with the one-time link
    the wallet printed; returns once the dashboard shows its content (fetched signed in)."""
    page.goto(w.login_url)
    page.wait_for_url(w.base_url + "/")
    page.wait_for_selector("#stat-calls")


def open_page(page: Any, url: str) -> None:
    """Go to a wallet page and wait for its content (the page's script fetches it)."""
    page.goto(url)
    page.wait_for_selector("#wallet-shell", state="detached")
