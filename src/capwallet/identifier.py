"""The token identifier: 33 bytes, fixed layout (spec/token-format.md, "Identifier").

    offset  size  field
    0       1     protocol version, 0x01
    1       8     root key id
    9       16    token id (random; the key for budgets, revocation and the ledger)
    25      8     issued_at, unsigned big-endian UTC seconds

A fixed layout has exactly one encoding, so the identifier is canonical by construction.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from capwallet.reasons import Reason, TokenError

PROTOCOL_VERSION = 1
KEY_ID_BYTES = 8
TOKEN_ID_BYTES = 16
IDENTIFIER_BYTES = 1 + KEY_ID_BYTES + TOKEN_ID_BYTES + 8
MAX_SAFE_INTEGER = 2**53 - 1  # every integer in the protocol fits a JavaScript number


@dataclass(frozen=True, slots=True)
class Identifier:
    key_id: bytes
    token_id: bytes
    issued_at: int
    version: int = PROTOCOL_VERSION

    @classmethod
    def new(cls, key_id: bytes, issued_at: int) -> Identifier:
        return cls(key_id=key_id, token_id=secrets.token_bytes(TOKEN_ID_BYTES), issued_at=issued_at)

    def encode(self) -> bytes:
        if len(self.key_id) != KEY_ID_BYTES or len(self.token_id) != TOKEN_ID_BYTES:
            raise ValueError("key id must be 8 bytes and token id 16 bytes")
        if not 0 <= self.issued_at <= MAX_SAFE_INTEGER:
            raise ValueError("issued_at out of range")
        return struct.pack(">B8s16sQ", self.version, self.key_id, self.token_id, self.issued_at)

    @classmethod
    def decode(cls, data: bytes) -> Identifier:
        if len(data) < 1:
            raise TokenError(Reason.MALFORMED, "identifier is empty")
        if data[0] != PROTOCOL_VERSION:
            raise TokenError(
                Reason.UNSUPPORTED_VERSION,
                f"token protocol version {data[0]} is not supported (this verifier knows 1)",
            )
        if len(data) != IDENTIFIER_BYTES:
            raise TokenError(Reason.MALFORMED, f"identifier must be {IDENTIFIER_BYTES} bytes")
        version, key_id, token_id, issued_at = struct.unpack(">B8s16sQ", data)
        if issued_at > MAX_SAFE_INTEGER:
            raise TokenError(Reason.MALFORMED, "issued_at is out of range")
        return cls(key_id=key_id, token_id=token_id, issued_at=issued_at, version=version)

    @property
    def token_id_hex(self) -> str:
        return self.token_id.hex()

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()
