"""capwallet.client.connect() never waits in silence: the consent link is printed at once,
the wait is bounded by ``timeout``, and its end is said out loud."""

from __future__ import annotations

import time

import pytest

from capwallet.client import ConnectError, connect
from capwallet.wallet.runner import RunningWallet

PERMS = {"providers": ["openai"], "models": ["gpt-4o-mini"],
         "budget": {"amount": "1.00", "currency": "USD", "period": "month"}}


def test_prints_the_link_first_and_says_when_the_wait_ends(wallet: RunningWallet) -> None:
    said: list[str] = []
    opened: list[str] = []

    def browser(url: str) -> bool:
        assert said and said[0].startswith("Open this link to approve: ")  # printed before
        opened.append(url)
        return True

    t0 = time.monotonic()
    with pytest.raises(ConnectError) as exc:
        connect("Test App", PERMS, wallet_url=wallet.base_url, open_browser=browser,
                timeout=0.5, say=said.append)
    assert time.monotonic() - t0 < 10
    assert exc.value.error == "timeout"
    link = said[0].removeprefix("Open this link to approve: ")
    port = wallet.base_url.rsplit(":", 1)[1]
    assert link == opened[0] and link.startswith(f"{wallet.base_url}/authorize?")
    assert any("another device" in s and f"ssh -L {port}:127.0.0.1:{port}" in s for s in said)
    assert said[-1].startswith("Stopped waiting: no answer from the wallet in 0 s") or (
        said[-1].startswith("Stopped waiting"))


def test_no_browser_only_prints_and_a_failed_browser_is_said(
        wallet: RunningWallet, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConnectError):
        connect("Test App", PERMS, wallet_url=wallet.base_url, open_browser=None,
                timeout=0.2)
    err = capsys.readouterr().err  # the default says it on standard error
    assert err.startswith(f"Open this link to approve: {wallet.base_url}/authorize?")
    assert "No browser opened" not in err and "Stopped waiting" in err
    with pytest.raises(ConnectError):
        connect("Test App", PERMS, wallet_url=wallet.base_url,
                open_browser=lambda url: False, timeout=0.2)
    assert "No browser opened here: open the link above yourself." in capsys.readouterr().err


def test_blog_example_has_no_browser_and_timeout_flags() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "blog_assistant" / "assistant.py"
    r = subprocess.run([sys.executable, str(example), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--no-browser" in r.stdout and "--timeout" in r.stdout


def test_a_wallet_gone_after_the_answer_is_a_clear_error() -> None:
    """A network failure after the user answered is a typed error naming the URL, never a bare
    httpx exception: the code exchange (connect), the approval poll (wait_for_approval, fail
    closed) and a resource server's scope check (not allowed)."""
    import json
    import socket
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from capwallet.client import ApprovalDenied, check_scope, wait_for_approval

    from .loopback_site import loopback_site

    with socket.socket() as s:  # a port nobody listens on: the wallet that went away
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"
    with loopback_site() as site:
        site.pages["/.well-known/oauth-authorization-server"] = json.dumps({
            "issuer": site.url, "authorization_endpoint": f"{site.url}/authorize",
            "token_endpoint": f"{gone}/token"})

        def approve_at_once(url: str) -> bool:  # the wallet answers, then disappears
            q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            httpx.get(q["redirect_uri"], params={"code": "c", "state": q["state"],
                                                 "iss": site.url})
            return True

        with pytest.raises(ConnectError) as exc:
            connect("Test App", PERMS, wallet_url=site.url, open_browser=approve_at_once,
                    timeout=10, say=lambda _: None)
    assert exc.value.error == "wallet_unreachable"
    assert f"{gone}/token" in exc.value.description
    with pytest.raises(ApprovalDenied, match=f"cannot reach the wallet at {gone}/approvals/"):
        wait_for_approval(gone, "cwt1_x", "rid", timeout=5)
    answer = check_scope(gone, "cwt1_x", ["posts:read"], b"\0" * 32)
    assert answer["allowed"] is False and answer["reason"] == "wallet_unreachable"
