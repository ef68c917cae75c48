"""The example app end to end: connect, read posts, attenuated summariser, ask-first publish."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from capwallet.wallet.runner import RunningWallet

from .conftest import csrf_of, navigated_to, signed_in
from .test_end_to_end import approve_in

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blog_assistant"


def test_blog_assistant(wallet_relay: RunningWallet) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:  # the example's own modules, found only on the path just added
        import assistant  # type: ignore[import-not-found]
        import blog_api  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLE))
    said: list[str] = []
    with signed_in(wallet_relay) as browser, blog_api.running_blog_api(
            wallet_relay.base_url) as blog_url:
        def approve_publish(url: str) -> None:
            # The user opens the approvals page and approves (in a thread: the app is waiting).
            def user() -> None:
                page = browser.get("/approvals").text
                assert "publish “Sourdough, week one”" in page
                rid = page.split('id="approval-', 1)[1].split('"', 1)[0]
                r = browser.post(f"/approvals/{rid}/approve", data={"csrf": csrf_of(page)},
                                 headers={"origin": wallet_relay.base_url})
                assert navigated_to(r) == "/approvals?done=approved"
            threading.Thread(target=user).start()

        out: dict[str, Any] = assistant.run(
            wallet_relay.base_url, blog_url,
            open_browser=approve_in(browser, wallet_relay), on_waiting=approve_publish,
            say=said.append)
        assert out["published"]["published"] is True
        assert len(out["summaries"]) == 2 and all(": " in s for s in out["summaries"])
        usage = browser.get("/api/usage").json()
        # The sub-task's token cannot publish: it was attenuated to posts:read.
        child = assistant.summariser_token(out["connection"].token)
        r = httpx.post(f"{blog_url}/posts/2/publish",
                       headers={"authorization": f"Bearer {child}"})
        assert r.status_code == 403 and r.json()["error"] == "scope_missing"
    calls = [c for c in usage["calls"] if c["grant_id"] == out["grant_id"]]
    models = [c for c in calls if c["provider"]]
    assert [c["model"] for c in models] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert any(c["operation"] == "scope:posts:publish" for c in calls)
    assert said[0].startswith("Asking your wallet")
