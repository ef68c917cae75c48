"""Approvals: a pending request approved or denied in the wallet, polled by the app, bound
to the token and the request digest; ask-first scopes checked by an app's resource server."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet.client import ApprovalDenied, check_scope, wait_for_approval
from capwallet.reasons import TokenError
from capwallet.store import open_store
from capwallet.store.base import PendingApproval, Reservation, ReserveResult
from capwallet.store.sqlite import SQLiteStore
from capwallet.token import Token
from capwallet.wallet import runner
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, running_wallet

from .conftest import csrf_of, signed_in


def _grant(wallet: RunningWallet, *extra: cav.Caveat) -> str:
    _, token = issue_grant(
        wallet.ctx.grants, wallet.ctx.keystore.current_root_key, app="Blog Assistant",
        caveats=[cav.Scopes(("posts:publish", "posts:read")), *extra], source="cli",
        now=int(time.time()),
    )
    return token


def _pending(wallet: RunningWallet, token: str, digest: bytes, ttl: int = 600) -> str:
    """Record a pending approval the way the relay does (same store file, its own handle)."""
    rid = secrets.token_hex(16)
    now = int(time.time())

    async def add() -> None:
        store = open_store(wallet.ctx.home.store_url)
        try:
            await store.add_pending(PendingApproval(
                approval_request_id=rid, token_id=Token.parse(token).token_id,
                digest=digest.hex(), summary="gpt-4.1 call that may cost up to 0.80 USD",
                created_at=now, expires_at=now + ttl,
            ))
        finally:
            await store.close()
    asyncio.run(add())
    return rid


def _decide(client: httpx.Client, wallet: RunningWallet, rid: str, verb: str) -> httpx.Response:
    page = client.get("/approvals")
    assert page.status_code == 200
    return client.post(f"/approvals/{rid}/{verb}", data={"csrf": csrf_of(page.text)},
                       headers={"origin": wallet.base_url})


def test_approve_then_poll(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    token = _grant(wallet)
    digest = approvals.request_digest("POST", "/v1/chat/completions", b'{"model":"gpt-4.1"}')
    rid = _pending(wallet, token, digest)
    status_url = f"{wallet.base_url}/approvals/{rid}/status"
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.get(status_url, headers=auth).json()["status"] == "pending"
    page = browser_client.get("/approvals").text
    assert "gpt-4.1 call that may cost up to 0.80 USD" in page and "Blog Assistant" in page
    assert _decide(browser_client, wallet, rid, "approve").status_code == 200
    got = wait_for_approval(wallet.base_url, token, rid, timeout=5)
    t = Token.parse(token)
    checked = approvals.check(got, wallet.ctx.keystore.keyring(), t.identifier.token_id, digest,
                              int(time.time()), token_key_id=t.identifier.key_id,
                              kind=approvals.Kind.MODEL_CALL)
    assert checked.expires <= int(time.time()) + 300
    # Bound to this request: another digest fails.
    other = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    try:
        approvals.check(got, wallet.ctx.keystore.keyring(), t.identifier.token_id, other,
                        int(time.time()), token_key_id=t.identifier.key_id,
                        kind=approvals.Kind.MODEL_CALL)
        raise AssertionError("approval accepted for another request")
    except TokenError as exc:
        assert exc.reason.value == "approval_invalid"
    # A second decision is refused.
    assert _decide(browser_client, wallet, rid, "deny").status_code == 404


def test_status_needs_the_same_token(wallet: RunningWallet) -> None:
    token = _grant(wallet)
    rid = _pending(wallet, token, b"\x01" * 32)
    url = f"{wallet.base_url}/approvals/{rid}/status"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer cwt1_garbage"}).status_code == 401
    other = _grant(wallet)
    r = httpx.get(url, headers={"authorization": f"Bearer {other}"})
    assert r.status_code == 404 and "approval" not in r.json()
    # An attenuated child of the same token may poll (same token id).
    child = Token.parse(token).attenuate([cav.Scopes(("posts:read",))]).serialize()
    assert httpx.get(url, headers={"authorization": f"Bearer {child}"}).status_code == 200


def test_denied_and_expired_fail_closed(wallet: RunningWallet,
                                        browser_client: httpx.Client) -> None:
    token = _grant(wallet)
    rid = _pending(wallet, token, b"\x02" * 32)
    assert _decide(browser_client, wallet, rid, "deny").status_code == 200
    try:
        wait_for_approval(wallet.base_url, token, rid, timeout=2)
        raise AssertionError("denied approval was returned")
    except ApprovalDenied as exc:
        assert "denied" in str(exc)
    late = _pending(wallet, token, b"\x03" * 32, ttl=-1)
    r = httpx.get(f"{wallet.base_url}/approvals/{late}/status",
                  headers={"authorization": f"Bearer {token}"})
    assert r.json() == {"status": "expired", "expires_at": r.json()["expires_at"]}
    assert _decide(browser_client, wallet, late, "approve").status_code in (404, 410)


def test_approvals_need_csrf(wallet: RunningWallet, browser_client: httpx.Client) -> None:
    token = _grant(wallet)
    rid = _pending(wallet, token, b"\x04" * 32)
    r = browser_client.post(f"/approvals/{rid}/approve", data={},
                            headers={"origin": wallet.base_url})
    assert r.status_code == 403
    r = httpx.post(f"{wallet.base_url}/approvals/{rid}/approve", data={"csrf": "x"})
    assert r.status_code == 403
    status = httpx.get(f"{wallet.base_url}/approvals/{rid}/status",
                       headers={"authorization": f"Bearer {token}"}).json()["status"]
    assert status == "pending"


def test_ask_first_scope_through_the_resource_check(
    wallet: RunningWallet, browser_client: httpx.Client
) -> None:
    token = _grant(wallet, cav.AskFirst(("posts:publish",)))
    base = wallet.base_url
    digest = approvals.request_digest("POST", "/posts/7/publish", b"")
    # A plain scope is allowed; a scope the token lacks is not.
    assert check_scope(base, token, ["posts:read"], digest)["allowed"] is True
    missing = check_scope(base, token, ["posts:delete"], digest)
    assert missing["allowed"] is False and missing["reason"] == "scope_missing"
    # The ask-first scope needs the user.
    first = check_scope(base, token, ["posts:publish"], digest, summary="Publish “Hello”")
    assert first["reason"] == "confirmation_required"
    rid = first["approval_request_id"]
    assert "Publish “Hello”" in browser_client.get("/approvals").text
    _decide(browser_client, wallet, rid, "approve")
    approval = wait_for_approval(base, token, rid, timeout=5)
    # The approval is bound to what the user saw: other words for the same request fail.
    reworded = check_scope(base, token, ["posts:publish"], digest, summary="Publish “Bye”",
                           approval=approval)
    assert reworded["allowed"] is False and reworded["reason"] == "approval_invalid"
    ok = check_scope(base, token, ["posts:publish"], digest, summary="Publish “Hello”",
                     approval=approval)
    assert ok["allowed"] is True
    # Single use: the same approval again is refused; so is one for another request.
    again = check_scope(base, token, ["posts:publish"], digest, summary="Publish “Hello”",
                        approval=approval)
    assert again["allowed"] is False and again["reason"] == "approval_invalid"
    other = approvals.request_digest("POST", "/posts/8/publish", b"")
    wrong = check_scope(base, token, ["posts:publish"], other, summary="Publish “Hello”",
                        approval=approval)
    assert wrong["allowed"] is False and wrong["reason"] == "approval_invalid"


def test_resource_check_refuses_revoked_and_bad_input(wallet: RunningWallet,
                                                      browser_client: httpx.Client) -> None:
    token = _grant(wallet)
    digest = b"\x05" * 32
    gid = Token.parse(token).token_id
    page = browser_client.get("/")
    browser_client.post(f"/grants/{gid}/revoke", data={"csrf": csrf_of(page.text)},
                        headers={"origin": wallet.base_url})
    r = check_scope(wallet.base_url, token, ["posts:read"], digest)
    assert r["allowed"] is False and r["error"] == "revoked"
    r2 = httpx.post(f"{wallet.base_url}/resource/check", json={"scopes": "x"},
                    headers={"authorization": f"Bearer {token}"})
    assert r2.status_code == 400


def test_a_token_revoked_just_before_its_resource_reservation_is_refused_as_revoked(
    home: WalletHome, keystore: Keystore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A revocation landing after the resource check read it but before the approval's
    reservation (the store's reserve checks it atomically) gets the revoked token's own 401,
    the same answer as a token revoked earlier, not a 403 approval_invalid."""

    class RevokedMeanwhile(SQLiteStore):
        """The wallet's real SQLite store, on which ``victim`` is revoked just before each of
        its reservations runs (one more write, committed first)."""

        victim = ""

        async def reserve(self, reservation: Reservation) -> ReserveResult:
            if reservation.token_id == self.victim:
                await self.revoke(self.victim, int(time.time()))
            return await super().reserve(reservation)

    monkeypatch.setattr(runner, "open_store", RevokedMeanwhile.from_url)
    with running_wallet(home, keystore, with_relay=False) as wallet, \
            signed_in(wallet) as browser_client:
        store = wallet.ctx.store
        assert isinstance(store, RevokedMeanwhile)
        token = _grant(wallet, cav.AskFirst(("posts:publish",)))
        base = wallet.base_url
        digest = approvals.request_digest("POST", "/posts/7/publish", b"")
        first = check_scope(base, token, ["posts:publish"], digest, summary="Publish it")
        rid = first["approval_request_id"]
        _decide(browser_client, wallet, rid, "approve")
        approval = wait_for_approval(base, token, rid, timeout=5)
        store.victim = Token.parse(token).token_id
        ask = {"scopes": ["posts:publish"], "digest": digest.hex(), "summary": "Publish it",
               "approval": approval}
        auth = {"authorization": f"Bearer {token}"}
        raced = httpx.post(f"{base}/resource/check", json=ask, headers=auth)
        assert raced.status_code == 401 and raced.json().get("error") == "revoked", raced.text
        assert asyncio.run(_is_revoked(wallet.ctx.home.store_url, store.victim))
        # The same answer as the revocation read before the reservation (now, on a retry).
        later = httpx.post(f"{base}/resource/check", json=ask, headers=auth)
        assert (later.status_code, later.json()) == (raced.status_code, raced.json())


async def _is_revoked(store_url: str, token_id: str) -> bool:
    store = open_store(store_url)
    try:
        return await store.is_revoked(token_id)
    finally:
        await store.close()
