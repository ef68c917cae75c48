"""Fixed seeds and constants: root keys, token ids, times, money bounds.

Every input is fixed, so the vectors reproduce byte for byte."""

from __future__ import annotations

import calendar
import hashlib

from capwallet.keys import RootKey

MAX_SAFE = 2**53 - 1
MICROS = 1_000_000  # microunits per minor unit
MAX_MINOR = 9_007_199_254  # the largest caveat amount: floor((2^53-1) / MICROS)
assert MAX_MINOR * MICROS <= MAX_SAFE < (MAX_MINOR + 1) * MICROS


def _h(label: str) -> bytes:
    return hashlib.sha256(b"capwallet-test-vectors-v1/" + label.encode()).digest()


def root_key(label: str, key_id: str) -> RootKey:
    return RootKey(bytes.fromhex(key_id), _h("root-key/" + label))


K1 = root_key("1", "0c0ffee000000001")
K2 = root_key("2", "0c0ffee000000002")
K1_WRONG = root_key("1-wrong", "0c0ffee000000001")  # same id as K1, different secret
K9 = root_key("9", "0c0ffee000000009")  # never in a verifier's keyring unless stated


def tid(label: str) -> bytes:
    """A fixed 16-byte token id."""
    return _h("token-id/" + label)[:16]


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


T = 1_790_000_000  # 2026-09-21T14:13:20Z, a Monday
assert T == utc(2026, 9, 21, 14, 13, 20)
ISSUED = T - 3600  # default issued_at
