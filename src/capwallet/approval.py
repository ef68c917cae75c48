"""Approvals: a human's single-use, short-lived yes to one exact request (spec/approvals.md).

A ``confirm-above`` or ``ask-first`` caveat makes a request wait for the user. The wallet, which
holds the root keys, then issues an approval that states what it approves: its kind (a model
call or a resource access) and a digest of exactly what the user saw (the HTTP request the
relay judges, or the scopes, summary and request of a resource access), bound to the token id;
the app retries with it. A verifier accepts it only for a request of the same kind with the
same digest, so the yes to "Publish the post 'Sourdough basics'" can never pass for an
expensive model call. The approval is a MAC under a key derived from the root key, so any
verifier holding that root key can check it offline; that it is used once is the store's job
(the decision names the approval id to consume atomically with the reservation).

    offset  size  field
    0       1     version, 0x01
    1       1     kind: 0x01 model call, 0x02 resource access
    2       8     root key id
    10      16    approval id (random)
    26      16    token id
    42      32    digest (request_digest for a model call, access_digest for a resource access)
    74      8     expires, unsigned big-endian UTC seconds
    82      32    HMAC-SHA256(approval key, bytes 0..81)

    approval key = HMAC-SHA256(root key, "capwallet-approval-v1")
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.keys import RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import b64url_decode_strict, b64url_encode

PREFIX = "cwa1_"
_LAYOUT = ">BB8s16s16s32sQ"
_BODY_BYTES = struct.calcsize(_LAYOUT)  # 82
APPROVAL_BYTES = _BODY_BYTES + 32  # 114
_KEY_LABEL = b"capwallet-approval-v1"


class Kind(IntEnum):
    """What an approval approves; the byte at offset 1, and its name in JSON."""

    MODEL_CALL = 1
    RESOURCE_ACCESS = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Kind:
        """The kind named ``model_call`` or ``resource_access``; ValueError for anything else."""
        for k in cls:
            if k.label == label:
                return k
        raise ValueError(f"unknown approval kind {label!r}")


def request_digest(method: str, path: str, body: bytes) -> bytes:
    """SHA-256 binding an approval to one HTTP request: method, path and exact body bytes.

    The digest of a model call's approval: the relay computes it over the exact bytes it
    judges and forwards."""
    h = hashlib.sha256(b"capwallet-request-v1\x00")
    h.update(method.upper().encode("ascii") + b"\x00" + path.encode("utf-8") + b"\x00")
    h.update(body)
    return h.digest()


def access_digest(scopes: Iterable[str], summary: str, request: bytes) -> bytes:
    """SHA-256 of what the user sees for a resource access: its scopes and the summary.

    ``scopes`` are the scopes the access uses (sorted and deduplicated here, so their order does
    not matter); ``summary`` is the app's plain-language text, which the wallet shows verbatim;
    ``request`` is the 32-byte request_digest of the resource server's own request, so an
    approval of "publish post 7" does not publish post 8 under the same words. The wallet
    computes this itself from the fields it shows; it never takes a digest from the app.
    """
    names = sorted(set(scopes))
    if not names or any(not n.isascii() or "," in n or "\x00" in n for n in names):
        raise ValueError("scopes must be ASCII scope names")
    if len(request) != 32:
        raise ValueError("the request digest must be 32 bytes")
    h = hashlib.sha256(b"capwallet-access-v1\x00")
    h.update(",".join(names).encode("ascii") + b"\x00")
    h.update(summary.encode("utf-8") + b"\x00")
    h.update(request)
    return h.digest()


def _approval_key(root_secret: bytes) -> bytes:
    return hmac.digest(root_secret, _KEY_LABEL, "sha256")


@dataclass(frozen=True, slots=True)
class Approval:
    kind: Kind
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
            _LAYOUT, 1, self.kind, self.key_id, self.approval_id, self.token_id, self.digest,
            self.expires,
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
        _, kind, key_id, approval_id, token_id, digest, expires = struct.unpack(
            _LAYOUT, data[:_BODY_BYTES])
        if kind not in _KINDS:
            raise bad("approval states an unknown kind")
        if expires > MAX_SAFE_INTEGER:
            raise bad("approval expiry is out of range")
        return cls(Kind(kind), key_id, approval_id, token_id, digest, expires, data[_BODY_BYTES:])


_KINDS = frozenset(int(k) for k in Kind)


def issue(
    key: RootKey, token_id: bytes, digest: bytes, expires: int, approval_id: bytes | None = None,
    *, kind: Kind,
) -> Approval:
    """Approve one request of ``kind`` (``digest``) for one token, under its own root key."""
    if not 0 <= expires <= MAX_SAFE_INTEGER:
        raise ValueError("approval expiry out of range")
    if len(digest) != 32:
        raise ValueError("the digest must be 32 bytes")
    aid = approval_id if approval_id is not None else secrets.token_bytes(16)
    unsigned = Approval(Kind(kind), key.key_id, aid, token_id, digest, expires, b"")
    mac = hmac.digest(_approval_key(key.secret), unsigned.body(), "sha256")
    return Approval(Kind(kind), key.key_id, aid, token_id, digest, expires, mac)


def check(
    text: str,
    keys: Mapping[bytes, bytes],
    token_id: bytes,
    digest: bytes | None,
    now: int,
    *,
    token_key_id: bytes,
    kind: Kind,
) -> Approval:
    """Verify an approval for this token and request; raises TokenError(approval_invalid).

    The approval must be made under the root key that minted the token (``token_key_id``):
    a verifier holding several wallets' keys must not let one wallet approve for another. It
    must approve a request of this ``kind``: a yes to a resource access is no yes to a model
    call, whatever its digest.
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
    if a.kind != kind:
        raise bad(f"approval is for a {a.kind.label.replace('_', ' ')}, not a "
                  f"{Kind(kind).label.replace('_', ' ')}")
    if digest is None or not hmac.compare_digest(a.digest, digest):
        raise bad("approval was issued for a different request")
    if now >= a.expires:
        raise bad("approval has expired")
    return a
