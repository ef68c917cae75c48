"""Approvals: a human's single-use, short-lived yes to one exact request (spec/approvals.md).

A ``confirm-above`` or ``ask-first`` caveat makes a request wait for the user. The wallet, which
holds the root keys, then issues an approval bound to the token id and to a digest of the exact
request; the app retries with it. The approval is a MAC under a key derived from the root key,
so any verifier holding that root key can check it offline; that it is used once is the store's
job (the decision names the approval id to consume atomically with the reservation).

    offset  size  field
    0       1     version, 0x01
    1       8     root key id
    9       16    approval id (random)
    25      16    token id
    41      32    request digest
    73      8     expires, unsigned big-endian UTC seconds
    81      32    HMAC-SHA256(approval key, bytes 0..80)

    approval key = HMAC-SHA256(root key, "capwallet-approval-v1")
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.keys import RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import b64url_decode_strict, b64url_encode

PREFIX = "cwa1_"
_LAYOUT = ">B8s16s16s32sQ"
_BODY_BYTES = struct.calcsize(_LAYOUT)  # 81
APPROVAL_BYTES = _BODY_BYTES + 32
_KEY_LABEL = b"capwallet-approval-v1"


def request_digest(method: str, path: str, body: bytes) -> bytes:
    """SHA-256 binding an approval to one HTTP request: method, path and exact body bytes."""
    h = hashlib.sha256(b"capwallet-request-v1\x00")
    h.update(method.upper().encode("ascii") + b"\x00" + path.encode("utf-8") + b"\x00")
    h.update(body)
    return h.digest()


def _approval_key(root_secret: bytes) -> bytes:
    return hmac.digest(root_secret, _KEY_LABEL, "sha256")


@dataclass(frozen=True, slots=True)
class Approval:
    key_id: bytes
    approval_id: bytes
    token_id: bytes
    digest: bytes
    expires: int
    mac: bytes

    @property
    def approval_id_hex(self) -> str:
        return self.approval_id.hex()

    def body(self) -> bytes:
        return struct.pack(
            _LAYOUT, 1, self.key_id, self.approval_id, self.token_id, self.digest, self.expires
        )

    def serialize(self) -> str:
        return PREFIX + b64url_encode(self.body() + self.mac)

    @classmethod
    def parse(cls, text: str) -> Approval:
        def bad(msg: str) -> TokenError:
            return TokenError(Reason.APPROVAL_INVALID, msg)

        if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > 200:
            raise bad(f"approval does not start with {PREFIX!r}")
        try:
            data = b64url_decode_strict(text[len(PREFIX) :])
        except TokenError:
            raise bad("approval is not canonical base64url") from None
        if len(data) != APPROVAL_BYTES or data[0] != 1:
            raise bad("approval has the wrong length or version")
        _, key_id, approval_id, token_id, digest, expires = struct.unpack(_LAYOUT, data[:81])
        if expires > MAX_SAFE_INTEGER:
            raise bad("approval expiry is out of range")
        return cls(key_id, approval_id, token_id, digest, expires, data[81:])


def issue(
    key: RootKey, token_id: bytes, digest: bytes, expires: int, approval_id: bytes | None = None
) -> Approval:
    """Approve one request (``digest``) for one token; issue under the token's own root key."""
    if not 0 <= expires <= MAX_SAFE_INTEGER:
        raise ValueError("approval expiry out of range")
    aid = approval_id if approval_id is not None else secrets.token_bytes(16)
    unsigned = Approval(key.key_id, aid, token_id, digest, expires, b"")
    mac = hmac.digest(_approval_key(key.secret), unsigned.body(), "sha256")
    return Approval(key.key_id, aid, token_id, digest, expires, mac)


def check(
    text: str,
    keys: Mapping[bytes, bytes],
    token_id: bytes,
    digest: bytes | None,
    now: int,
    *,
    token_key_id: bytes,
) -> Approval:
    """Verify an approval for this token and request; raises TokenError(approval_invalid).

    The approval must be made under the root key that minted the token (``token_key_id``):
    a verifier holding several wallets' keys must not let one wallet approve for another.
    """
    a = Approval.parse(text)

    def bad(msg: str) -> TokenError:
        return TokenError(Reason.APPROVAL_INVALID, msg)

    if not hmac.compare_digest(a.key_id, token_key_id):
        raise bad("approval was made under another root key than the token")
    root_secret = keys.get(a.key_id)
    if root_secret is None:
        raise bad("approval was made under an unknown root key")
    expected = hmac.digest(_approval_key(root_secret), a.body(), "sha256")
    if not hmac.compare_digest(expected, a.mac):
        raise bad("approval signature does not match")
    if not hmac.compare_digest(a.token_id, token_id):
        raise bad("approval was issued for another token")
    if digest is None or not hmac.compare_digest(a.digest, digest):
        raise bad("approval was issued for a different request")
    if now >= a.expires:
        raise bad("approval has expired")
    return a
