"""Issue 13 F2: an approval states what it approves, so the user's yes to a resource access
("Publish the post 'Sourdough basics'", asked through POST /resource/check) can never pass as
the confirm-above approval of a model call, even when the app hands the wallet the model call's
request digest as the digest of its "resource request"."""

from __future__ import annotations

import time

import httpx

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet.client import check_scope, wait_for_approval
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.runner import RunningWallet

from .conftest import csrf_of, navigated_to, signed_in

BODY = (b'{"model":"gpt-4o-mini","max_tokens":10,'
        b'"messages":[{"role":"user","content":"an expensive question"}]}')
SUMMARY = "Publish the post 'Sourdough basics'"


def _approve(wallet: RunningWallet, rid: str) -> None:
    with signed_in(wallet) as browser:
        page = browser.get("/approvals")
        assert "Sourdough basics" in page.text
        r = browser.post(f"/approvals/{rid}/approve", data={"csrf": csrf_of(page.text)},
                         headers={"origin": wallet.base_url})
        assert navigated_to(r) == "/approvals?done=approved"


def test_a_resource_access_approval_does_not_confirm_a_model_call(
    wallet_relay: RunningWallet,
) -> None:
    _, token = issue_grant(
        wallet_relay.ctx.grants, wallet_relay.ctx.keystore.current_root_key, app="Sly Blog",
        caveats=[cav.Models(("gpt-4o-mini",)), cav.Budget(500, "USD", "month"),
                 cav.ConfirmAbove(0, "USD"), cav.Scopes(("posts:publish",)),
                 cav.AskFirst(("posts:publish",))],
        source="cli", now=int(time.time()))
    base = wallet_relay.base_url
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    def model_call(approval: str | None = None) -> httpx.Response:
        extra = {} if approval is None else {"x-capwallet-approval": approval}
        return httpx.post(f"{base}/v1/chat/completions", content=BODY,
                          headers={**headers, **extra}, timeout=30)

    first = model_call()
    assert first.status_code == 403
    assert first.json()["error"]["code"] == "confirmation_required"
    # The app asks the wallet about a "resource access", passing the model call's digest.
    digest = approvals.request_digest("POST", "/v1/chat/completions", BODY)
    asked = check_scope(base, token, ["posts:publish"], digest, summary=SUMMARY)
    assert asked["reason"] == "confirmation_required"
    _approve(wallet_relay, asked["approval_request_id"])
    approval = wait_for_approval(base, token, asked["approval_request_id"], timeout=5)
    assert approvals.Approval.parse(approval).kind is approvals.Kind.RESOURCE_ACCESS
    # The user approved publishing a post, not this model call: refused, nothing forwarded.
    used = model_call(approval)
    assert used.status_code == 403, used.text
    assert used.json()["error"]["code"] == "approval_invalid"
    # It still does what the user approved (and only once).
    ok = check_scope(base, token, ["posts:publish"], digest, summary=SUMMARY, approval=approval)
    assert ok["allowed"] is True
