"""Approvals: bound to one token, one request and the token's own root key."""

from __future__ import annotations

import struct

import pytest
from conftest import NOW

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import b64url_encode, mint
from capwallet.verify import Request, verify

OTHER = RootKey(bytes.fromhex("1112131415161718"), bytes(range(32, 64)))


def _request(approval: str | None, digest: bytes) -> Request:
    return Request(provider="openai", model="m", operation="chat", cost={"EUR": 500 * 1_000_000},
                   approval=approval, digest=digest)


def test_approval_under_the_token_key_is_accepted(root_key: RootKey) -> None:
    token = mint(root_key, [cav.ConfirmAbove(100, "EUR")], now=NOW, token_id=bytes(16))
    digest = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    a = approvals.issue(root_key, bytes(16), digest, NOW + 60, approval_id=bytes(range(16)),
                        kind=approvals.Kind.MODEL_CALL)
    d = verify(token.serialize(), Keyring([root_key, OTHER]), _request(a.serialize(), digest), NOW)
    assert d.allowed and d.approval_id == bytes(range(16)).hex()


def test_approval_under_another_known_root_key_is_invalid(root_key: RootKey) -> None:
    """Two wallets' keys on one verifier: one wallet cannot approve the other's tokens."""
    token = mint(root_key, [cav.ConfirmAbove(100, "EUR")], now=NOW, token_id=bytes(16))
    digest = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    a = approvals.issue(OTHER, bytes(16), digest, NOW + 60, kind=approvals.Kind.MODEL_CALL)
    d = verify(token.serialize(), Keyring([root_key, OTHER]), _request(a.serialize(), digest), NOW)
    assert d.reason is Reason.APPROVAL_INVALID


def test_approval_expiry_beyond_2_53_is_rejected(root_key: RootKey) -> None:
    with pytest.raises(ValueError):
        approvals.issue(root_key, bytes(16), bytes(32), 2**53, kind=approvals.Kind.MODEL_CALL)
    a = approvals.issue(root_key, bytes(16), bytes(32), 1, kind=approvals.Kind.MODEL_CALL)
    body = struct.pack(">BB8s16s16s32sQ", 1, 1, a.key_id, a.approval_id, a.token_id, a.digest,
                       2**53)
    with pytest.raises(TokenError) as info:
        approvals.Approval.parse(approvals.PREFIX + b64url_encode(body + a.mac))
    assert info.value.reason is Reason.APPROVAL_INVALID


def test_an_approval_is_accepted_only_for_its_kind(root_key: RootKey) -> None:
    """Issue 13 F2: a resource-access approval never confirms a model call, nor the reverse."""
    token = mint(root_key, [cav.ConfirmAbove(100, "EUR"), cav.Scopes(("posts:publish",)),
                            cav.AskFirst(("posts:publish",))], now=NOW, token_id=bytes(16))
    digest = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    keys = Keyring([root_key])
    for kind, ok_for_call in ((approvals.Kind.RESOURCE_ACCESS, False),
                              (approvals.Kind.MODEL_CALL, True)):
        a = approvals.issue(root_key, bytes(16), digest, NOW + 60, kind=kind).serialize()
        call = verify(token.serialize(), keys, _request(a, digest), NOW)
        access = verify(token.serialize(), keys,
                        Request(scopes=("posts:publish",), approval=a, digest=digest), NOW)
        assert call.allowed is ok_for_call and access.allowed is not ok_for_call
        refused = access if ok_for_call else call
        assert refused.reason is Reason.APPROVAL_INVALID and "not a" in refused.message


def test_access_digest_is_of_what_the_user_saw() -> None:
    request = approvals.request_digest("POST", "/posts/7/publish", b"")
    base = approvals.access_digest(["posts:publish"], "Publish 'Sourdough basics'", request)
    assert approvals.access_digest(["posts:publish", "posts:publish"],
                                   "Publish 'Sourdough basics'", request) == base
    assert approvals.access_digest(["posts:publish"], "Publish 'Rye'", request) != base
    assert approvals.access_digest(["posts:publish", "posts:read"],
                                   "Publish 'Sourdough basics'", request) != base
    assert approvals.access_digest(
        ["posts:publish"], "Publish 'Sourdough basics'",
        approvals.request_digest("POST", "/posts/8/publish", b"")) != base
    with pytest.raises(ValueError):
        approvals.access_digest([], "x", request)
    with pytest.raises(ValueError):
        approvals.access_digest(["a,b"], "x", request)
