"""Approvals: bound to one token, one request and the token's own root key."""

from __future__ import annotations

import struct

import pytest

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import b64url_encode, mint
from capwallet.verify import Request, verify
from tests.conftest import NOW

OTHER = RootKey(bytes.fromhex("1112131415161718"), bytes(range(32, 64)))


def _request(approval: str | None, digest: bytes) -> Request:
    return Request(provider="openai", model="m", operation="chat", cost={"EUR": 500 * 1_000_000},
                   approval=approval, digest=digest)


def test_approval_under_the_token_key_is_accepted(root_key: RootKey) -> None:
    token = mint(root_key, [cav.ConfirmAbove(100, "EUR")], now=NOW, token_id=bytes(16))
    digest = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    a = approvals.issue(root_key, bytes(16), digest, NOW + 60, approval_id=bytes(range(16)))
    d = verify(token.serialize(), Keyring([root_key, OTHER]), _request(a.serialize(), digest), NOW)
    assert d.allowed and d.approval_id == bytes(range(16)).hex()


def test_approval_under_another_known_root_key_is_invalid(root_key: RootKey) -> None:
    """Two wallets' keys on one verifier: one wallet cannot approve the other's tokens."""
    token = mint(root_key, [cav.ConfirmAbove(100, "EUR")], now=NOW, token_id=bytes(16))
    digest = approvals.request_digest("POST", "/v1/chat/completions", b"{}")
    a = approvals.issue(OTHER, bytes(16), digest, NOW + 60)
    d = verify(token.serialize(), Keyring([root_key, OTHER]), _request(a.serialize(), digest), NOW)
    assert d.reason is Reason.APPROVAL_INVALID


def test_approval_expiry_beyond_2_53_is_rejected(root_key: RootKey) -> None:
    with pytest.raises(ValueError):
        approvals.issue(root_key, bytes(16), bytes(32), 2**53)
    a = approvals.issue(root_key, bytes(16), bytes(32), 1)
    body = struct.pack(">B8s16s16s32sQ", 1, a.key_id, a.approval_id, a.token_id, a.digest, 2**53)
    with pytest.raises(TokenError) as info:
        approvals.Approval.parse(approvals.PREFIX + b64url_encode(body + a.mac))
    assert info.value.reason is Reason.APPROVAL_INVALID
