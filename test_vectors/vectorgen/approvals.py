"""Approvals, built independently of capwallet.approval (spec/approvals.md)."""

from __future__ import annotations

import hashlib
import struct

from .encoder import b64, hmac256


def digest_of(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"capwallet-request-v1\x00" + method.upper().encode() + b"\x00"
                          + path.encode() + b"\x00" + body).digest()


MODEL_CALL, RESOURCE_ACCESS = 1, 2  # the kind byte
KIND_NAMES = {MODEL_CALL: "model_call", RESOURCE_ACCESS: "resource_access"}


def access_digest_of(scopes: list[str], summary: str, request: bytes) -> bytes:
    return hashlib.sha256(b"capwallet-access-v1\x00" + ",".join(sorted(set(scopes))).encode()
                          + b"\x00" + summary.encode("utf-8") + b"\x00" + request).digest()


def approval_body(kind: int, key_id: bytes, approval_id: bytes, token_id: bytes, digest: bytes,
                  expires: int, version: int = 1) -> bytes:
    return struct.pack(">BB8s16s16s32sQ", version, kind, key_id, approval_id, token_id, digest,
                       expires)


def approval_mac(secret: bytes, body: bytes) -> bytes:
    return hmac256(hmac256(secret, b"capwallet-approval-v1"), body)


def approval_str(data: bytes) -> str:
    return "cwa1_" + b64(data)
