"""Approvals, built independently of capwallet.approval (spec/approvals.md)."""

from __future__ import annotations

import hashlib
import struct

from .encoder import b64, hmac256


def digest_of(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"capwallet-request-v1\x00" + method.upper().encode() + b"\x00"
                          + path.encode() + b"\x00" + body).digest()


def approval_body(key_id: bytes, approval_id: bytes, token_id: bytes, digest: bytes,
                  expires: int, version: int = 1) -> bytes:
    return struct.pack(">B8s16s16s32sQ", version, key_id, approval_id, token_id, digest, expires)


def approval_mac(secret: bytes, body: bytes) -> bytes:
    return hmac256(hmac256(secret, b"capwallet-approval-v1"), body)


def approval_str(data: bytes) -> str:
    return "cwa1_" + b64(data)
