"""Capability tokens: mint, attenuate, parse (spec/token-format.md).

A token is a macaroon v2 carried as ``cwt1_`` + base64url (no padding) of its canonical bytes.
The prefix lets logs and secret scanners recognise a token. Parsing is strict: one spelling per
token, so nothing downstream can be confused by two strings for one macaroon. Even so, state
(budgets, revocation, the ledger) is keyed on the token id, never on the string.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from capwallet import caveats as cav
from capwallet import macaroon
from capwallet.identifier import Identifier
from capwallet.keys import RootKey
from capwallet.reasons import Reason, TokenError

PREFIX = "cwt1_"
MAX_TOKEN_CHARS = 8192
MAX_CAVEATS = 64
MAX_CAVEAT_BYTES = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_strict(text: str) -> bytes:
    """base64url without padding, canonical only (no junk, no non-zero trailing bits)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError(Reason.MALFORMED, "token is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(Reason.MALFORMED, "token is not unpadded base64url") from None
    if b64url_encode(data) != text:
        raise TokenError(Reason.MALFORMED, "token base64url is not canonical")
    return data


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed token. Its caveats are not yet verified: see capwallet.verify."""

    identifier: Identifier
    raw: macaroon.RawMacaroon

    @property
    def token_id(self) -> str:
        return self.identifier.token_id_hex

    @property
    def key_id(self) -> str:
        return self.identifier.key_id_hex

    @property
    def raw_caveats(self) -> tuple[bytes, ...]:
        return self.raw.caveats

    @property
    def chain_id(self) -> str:
        """This chain's public name (capwallet.macaroon.chain_id), as the ledger records it."""
        return macaroon.chain_id(self.raw.signature)

    def caveats(self) -> list[cav.Caveat]:
        """Decoded caveats in token order; raises TokenError(unknown_/invalid_caveat)."""
        return cav.decode_all(self.raw.caveats)

    def to_bytes(self) -> bytes:
        return macaroon.encode(self.raw)

    def serialize(self) -> str:
        return PREFIX + b64url_encode(self.to_bytes())

    def __str__(self) -> str:
        return self.serialize()

    def __repr__(self) -> str:  # never print a whole token
        return f"Token(token_id={self.token_id!r}, caveats={len(self.raw.caveats)})"

    @classmethod
    def parse(cls, text: str) -> Token:
        """Strictly parse a token string. Raises TokenError(malformed | unsupported_version)."""
        if not isinstance(text, str):
            raise TokenError(Reason.MALFORMED, "token must be a string")
        if len(text) > MAX_TOKEN_CHARS:
            raise TokenError(Reason.MALFORMED, f"token is longer than {MAX_TOKEN_CHARS} characters")
        if not text.startswith(PREFIX):
            raise TokenError(Reason.MALFORMED, f"token does not start with {PREFIX!r}")
        data = b64url_decode_strict(text[len(PREFIX) :])
        raw = macaroon.decode(data, max_caveats=MAX_CAVEATS, max_caveat_bytes=MAX_CAVEAT_BYTES)
        return cls(Identifier.decode(raw.identifier), raw)

    def attenuate(self, caveats: Iterable[cav.Caveat]) -> Token:
        """A new token with ``caveats`` appended. Needs no key; can only narrow authority."""
        added = [cav.encode(c) for c in caveats]
        if len(self.raw.caveats) + len(added) > MAX_CAVEATS:
            raise ValueError(f"a token holds at most {MAX_CAVEATS} caveats")
        sig = self.raw.signature
        for c in added:
            sig = macaroon.extend(sig, c)
        raw = macaroon.RawMacaroon(self.raw.identifier, self.raw.caveats + tuple(added), sig)
        return Token(self.identifier, raw)._fits()

    def _fits(self) -> Token:
        """Never produce a token that Token.parse would reject for its length."""
        if len(self.serialize()) > MAX_TOKEN_CHARS:
            raise ValueError(f"the token would be longer than {MAX_TOKEN_CHARS} characters")
        return self


def mint(
    key: RootKey,
    caveats: Iterable[cav.Caveat],
    *,
    now: int | None = None,
    token_id: bytes | None = None,
) -> Token:
    """Mint a token under ``key``. ``token_id`` and ``now`` are fixed only for test vectors."""
    issued_at = int(time.time()) if now is None else now
    ident = Identifier.new(key.key_id, issued_at)
    if token_id is not None:
        ident = Identifier(key_id=key.key_id, token_id=token_id, issued_at=issued_at)
    encoded = [cav.encode(c) for c in caveats]
    if len(encoded) > MAX_CAVEATS:
        raise ValueError(f"a token holds at most {MAX_CAVEATS} caveats")
    id_bytes = ident.encode()
    signature = macaroon.chain(key.secret, id_bytes, encoded)
    raw = macaroon.RawMacaroon(id_bytes, tuple(encoded), signature)
    return Token(ident, raw)._fits()


def attenuate(token: str, caveats: Iterable[cav.Caveat]) -> str:
    return Token.parse(token).attenuate(caveats).serialize()
