"""A stand-in for the reader's browser while tests/test_readme.py runs the README.

The README's Python example calls ``capwallet.client.connect()``, which opens the consent page
with :mod:`webbrowser`. The test sets ``BROWSER`` to this script, so the link goes to Debian's
Chromium (driven by Playwright): the locked page first, then the sign-in link ``capwallet
serve`` printed (``CAPWALLET_README_LOGIN``), which must lead back to the waiting request, and
the user's click on Approve. Usage: ``readme_browser.py URL``.
"""

from __future__ import annotations

import os
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main(argv: list[str]) -> int:
    url = argv[1]
    login = os.environ["CAPWALLET_README_LOGIN"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            # As a person does: the link shows the locked page; signing in with the link the
            # wallet printed comes back to the waiting request.
            page.goto(url)
            page.wait_for_selector("html[data-wallet=ready]", timeout=30_000)
            page.goto(login)
            page.wait_for_url(lambda u: "/authorize?" in u, timeout=30_000)
            page.locator("#approve").click(timeout=30_000)
            page.wait_for_url("http://127.0.0.1:*/callback*", timeout=30_000)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
