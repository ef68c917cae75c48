"""An independent encoder (spec/token-format.md), used to build honest and tampered tokens.

It shares no code with capwallet.token, so a vector built here checks the implementation
rather than restating it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Any

from capwallet.keys import RootKey

from .seeds import ISSUED, K1, tid


def hmac256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def leb(n: int, pad: int = 0) -> bytes:
    """Unsigned LEB128; ``pad`` extra continuation bytes make it non-minimal."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n or pad:
            out.append(b | 0x80)
            if not n:
                while pad > 1:
                    out.append(0x80)
                    pad -= 1
                out.append(0)
                return bytes(out)
        else:
            out.append(b)
            return bytes(out)


assert leb(0) == b"\x00" and leb(33) == b"\x21" and leb(1000) == b"\xe8\x07"
assert leb(33, pad=1) == b"\xa1\x00" and leb(33, pad=2) == b"\xa1\x80\x00"


def fld(ftype: int, data: bytes, pad: int = 0) -> bytes:
    return bytes([ftype]) + leb(len(data), pad) + data


def identifier(key_id: bytes, token_id: bytes, issued_at: int, version: int = 1) -> bytes:
    return struct.pack(">B8s16sQ", version, key_id, token_id, issued_at)


def derived(secret: bytes) -> bytes:
    return hmac256(b"macaroons-key-generator", secret)


def sig_chain(secret: bytes, ident: bytes, caveats: list[bytes]) -> list[bytes]:
    """Signatures after the identifier and after each caveat; the last one is the token's."""
    sigs = [hmac256(derived(secret), ident)]
    for c in caveats:
        sigs.append(hmac256(sigs[-1], c))
    return sigs


def v2(ident: bytes, caveats: list[bytes], sig: bytes) -> bytes:
    body = b"".join(fld(2, c) + b"\x00" for c in caveats)
    return b"\x02" + fld(2, ident) + b"\x00" + body + b"\x00" + fld(6, sig)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def tokstr(data: bytes) -> str:
    return "cwt1_" + b64(data)


@dataclass
class Tok:
    """An honestly minted token: key, identifier fields and caveat bytes."""

    key: RootKey
    token_id: bytes
    issued_at: int = ISSUED
    caveats: list[bytes] = field(default_factory=list)

    @property
    def ident(self) -> bytes:
        return identifier(self.key.key_id, self.token_id, self.issued_at)

    @property
    def sig(self) -> bytes:
        return sig_chain(self.key.secret, self.ident, self.caveats)[-1]

    @property
    def data(self) -> bytes:
        return v2(self.ident, self.caveats, self.sig)

    @property
    def s(self) -> str:
        return tokstr(self.data)

    def child(self, *added: str | bytes) -> Tok:
        """Attenuation: the same identifier and key, caveats appended (signature extends)."""
        return Tok(self.key, self.token_id, self.issued_at, self.caveats + [_b(a) for a in added])


def _b(c: str | bytes) -> bytes:
    return c.encode("utf-8") if isinstance(c, str) else c


def tok(label: str, *caveats: str | bytes, key: RootKey = K1, issued_at: int = ISSUED) -> Tok:
    return Tok(key, tid(label), issued_at, [_b(c) for c in caveats])


def caveat_json(c: bytes) -> dict[str, Any]:
    try:
        text: str | None = c.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"text": text, "hex": c.hex()}
