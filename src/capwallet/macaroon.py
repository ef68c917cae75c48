"""Strict codec for macaroon v2 binary serialization, and the HMAC-SHA256 chain.

Why not pymacaroons on this path: pymacaroons 0.13.0 parses leniently (it ignores trailing
bytes and accepts non-canonical base64), drops the identifier when serializing a macaroon
whose location is None, mutates macaroons in place, and reports every failure as "signatures
do not match". The wire format is small (libmacaroons doc/format.txt), so the protocol keeps
its own strict reader and writer here, and the test suite checks byte-for-byte agreement with
pymacaroons in both directions.

Canonical v1 form (spec/token-format.md): version byte 0x02; no location field; the identifier;
EOS; first-party caveats only (identifier then EOS, no location, no verification id); EOS; a
32-byte signature; nothing after it. Field lengths are minimal unsigned LEB128 varints.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from capwallet.reasons import Reason, TokenError

MACAROON_V2 = 0x02
FIELD_EOS = 0
FIELD_LOCATION = 1
FIELD_IDENTIFIER = 2
FIELD_VID = 4
FIELD_SIGNATURE = 6
KEY_GENERATOR = b"macaroons-key-generator"
SIGNATURE_BYTES = 32


@dataclass(frozen=True, slots=True)
class RawMacaroon:
    """A decoded macaroon: identifier, first-party caveat ids (raw bytes), signature."""

    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes


def derive_key(root_key: bytes) -> bytes:
    """libmacaroons' key derivation: HMAC-SHA256(key="macaroons-key-generator", msg=root)."""
    return hmac.digest(KEY_GENERATOR, root_key, "sha256")


def chain(root_key: bytes, identifier: bytes, caveats: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The signature a macaroon with these fields has under ``root_key``."""
    sig = hmac.digest(derive_key(root_key), identifier, "sha256")
    for caveat in caveats:
        sig = hmac.digest(sig, caveat, "sha256")
    return sig


def extend(signature: bytes, caveat: bytes) -> bytes:
    """Attenuation: the signature after appending one first-party caveat (no key needed)."""
    return hmac.digest(signature, caveat, "sha256")


CHAIN_ID_BYTES = 8


def chain_id(signature: bytes) -> str:
    """A short public name for one token chain: the first 8 bytes of SHA-256 of its
    signature, in hex. Every attenuation changes the signature, so a sub-task's token and the
    token it came from (which share the token id) get different names. It is not a secret:
    the signature cannot be recovered from a hash of it, and without the signature nothing
    can be appended, so the relay may log it where it must never log the token."""
    return hashlib.sha256(signature).digest()[:CHAIN_ID_BYTES].hex()


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_field(out: bytearray, field: int, data: bytes) -> None:
    out.append(field)
    _put_varint(out, len(data))
    out += data


def encode(mac: RawMacaroon) -> bytes:
    """Canonical v2 bytes of ``mac``."""
    out = bytearray([MACAROON_V2])
    _put_field(out, FIELD_IDENTIFIER, mac.identifier)
    out.append(FIELD_EOS)
    for caveat in mac.caveats:
        _put_field(out, FIELD_IDENTIFIER, caveat)
        out.append(FIELD_EOS)
    out.append(FIELD_EOS)
    _put_field(out, FIELD_SIGNATURE, mac.signature)
    return bytes(out)


def _malformed(message: str) -> TokenError:
    return TokenError(Reason.MALFORMED, message)


def _field(data: bytes, pos: int, expected: int, what: str) -> tuple[bytes, int]:
    """Read one field of type ``expected`` at ``pos``: (value, position after it)."""
    n = len(data)
    if pos >= n:
        raise _malformed("token ends in the middle of a field")
    if data[pos] != expected:
        raise _malformed(f"expected {what} field (type {expected}), found type {data[pos]}")
    pos += 1
    # Field length: a minimal unsigned LEB128 varint of at most 3 bytes.
    length = 0
    shift = 0
    while True:
        if pos >= n:
            raise _malformed("token ends in the middle of a field")
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and shift:
                raise _malformed("field length varint is not minimal")
            break
        shift += 7
        if shift > 14:
            raise _malformed("field length varint is too long")
    end = pos + length
    if end > n:
        raise _malformed(f"{what} field runs past the end of the token")
    return data[pos:end], end


def decode(data: bytes, *, max_caveats: int, max_caveat_bytes: int) -> RawMacaroon:
    """Parse canonical v2 bytes; anything else raises TokenError(MALFORMED)."""
    if not data:
        raise _malformed("token is empty")
    if data[0] != MACAROON_V2:
        raise _malformed("not a macaroon v2 (v1 and other formats are not accepted)")
    n = len(data)
    if n > 1 and data[1] == FIELD_LOCATION:
        raise _malformed("the macaroon location field must be absent")
    identifier, pos = _field(data, 1, FIELD_IDENTIFIER, "identifier")
    if pos >= n or data[pos] != FIELD_EOS:
        raise _malformed("macaroon header has extra fields or is truncated")
    pos += 1
    caveats: list[bytes] = []
    while True:
        if pos >= n:
            raise _malformed("token ends inside the caveat section")
        field = data[pos]
        if field == FIELD_EOS:
            pos += 1
            break
        if field == FIELD_LOCATION:
            raise _malformed("caveat location fields are not allowed (no third-party caveats)")
        if field != FIELD_IDENTIFIER:
            raise _malformed(f"unexpected field type {field} in caveat section")
        cid, pos = _field(data, pos, FIELD_IDENTIFIER, "caveat identifier")
        if len(cid) > max_caveat_bytes:
            raise _malformed(f"caveat is longer than {max_caveat_bytes} bytes")
        if pos >= n:
            raise _malformed("token ends inside a caveat")
        end = data[pos]
        if end == FIELD_VID:
            raise _malformed("third-party caveats are not allowed in v1 tokens")
        if end != FIELD_EOS:
            raise _malformed(f"unexpected field type {end} after caveat identifier")
        pos += 1
        caveats.append(cid)
        if len(caveats) > max_caveats:
            raise _malformed(f"token has more than {max_caveats} caveats")
    signature, pos = _field(data, pos, FIELD_SIGNATURE, "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise _malformed("signature is not 32 bytes")
    if pos != n:
        raise _malformed(f"{n - pos} trailing bytes after the signature")
    return RawMacaroon(identifier, tuple(caveats), signature)
