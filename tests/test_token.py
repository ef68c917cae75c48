"""Token format: strict parsing, round trips, and byte-level interop with pymacaroons."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pymacaroons
import pytest
from conftest import NOW
from pymacaroons import MACAROON_V2, Macaroon

from capwallet import caveats as cav
from capwallet import macaroon
from capwallet.keys import RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import PREFIX, Token, b64url_encode, mint


def _token(root_key: RootKey, *caveats: cav.Caveat) -> Token:
    return mint(root_key, list(caveats), now=NOW, token_id=bytes(16))


def _reason(text: str) -> Reason:
    with pytest.raises(TokenError) as info:
        Token.parse(text)
    return info.value.reason


def test_round_trip(root_key: RootKey) -> None:
    t = _token(root_key, cav.Models(("gpt-4o",)), cav.Budget(1000, "EUR", "month", nonce="00" * 8))
    again = Token.parse(t.serialize())
    assert again == t
    assert again.serialize() == t.serialize()
    assert again.serialize().startswith(PREFIX)
    assert again.token_id == "00" * 16
    assert [c.name for c in again.caveats()] == ["models", "budget"]


def test_pymacaroons_accepts_our_tokens(root_key: RootKey) -> None:
    t = _token(root_key, cav.Models(("gpt-4o", "llama3.1:8b")), cav.Expires(NOW + 60))
    t = t.attenuate([cav.MaxOutputTokens(100)])
    m = Macaroon.deserialize(t.serialize()[len(PREFIX):])
    assert m.identifier_bytes == t.raw.identifier
    assert [c.caveat_id_bytes for c in m.caveats] == list(t.raw_caveats)
    v = pymacaroons.Verifier()
    v.satisfy_general(lambda _: True)
    assert v.verify(m, root_key.secret)


def test_we_accept_pymacaroons_tokens_modulo_empty_location(root_key: RootKey) -> None:
    ident = _token(root_key).raw.identifier
    m = Macaroon(location="", identifier=ident, key=root_key.secret, version=MACAROON_V2)
    m.add_first_party_caveat("models gpt-4o")
    raw = m.serialize_raw() if hasattr(m, "serialize_raw") else None
    data = base64.urlsafe_b64decode(m.serialize() + "==")
    assert data[1:3] == b"\x01\x00"  # pymacaroons always writes an empty location field
    assert raw is None or raw == data
    with pytest.raises(TokenError) as info:
        Token.parse(PREFIX + b64url_encode(data))
    assert info.value.reason is Reason.MALFORMED
    canonical = data[:1] + data[3:]
    t = Token.parse(PREFIX + b64url_encode(canonical))
    assert t.raw.signature.hex() == m.signature
    assert macaroon.chain(root_key.secret, t.raw.identifier, t.raw_caveats) == t.raw.signature


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s + "A",  # length % 4 == 1
        lambda s: s + "AA",  # trailing bytes
        lambda s: s + "=",  # padding
        lambda s: s.replace("-", "+").replace("_", "/"),  # standard alphabet
        lambda s: s[:-1] + ("B" if s[-1] == "A" else "A"),  # non-zero trailing bits or sig
        lambda s: "cwt2_" + s[5:],
        lambda s: s[5:],  # no prefix
        lambda s: s[:40],  # truncated
        lambda s: "",
    ],
)
def test_parse_rejects(root_key: RootKey, mutate: Callable[[str], str]) -> None:
    good = _token(root_key, cav.Models(("gpt-4o",))).serialize()
    bad = mutate(good)
    assert bad != good
    try:
        t = Token.parse(bad)
    except TokenError as exc:
        assert exc.reason in (Reason.MALFORMED, Reason.UNSUPPORTED_VERSION)
    else:  # a flipped signature bit parses, but cannot verify
        assert t.raw.signature != Token.parse(good).raw.signature


def _frame(ident: bytes, caveats: list[bytes], sig: bytes, *, extra: bytes = b"") -> str:
    raw = macaroon.encode(macaroon.RawMacaroon(ident, tuple(caveats), sig))
    return PREFIX + b64url_encode(raw + extra)


def test_structure_limits(root_key: RootKey) -> None:
    t = _token(root_key)
    ident, sig = t.raw.identifier, t.raw.signature
    assert _reason(_frame(ident, [b"x"] * 65, sig)) is Reason.MALFORMED
    assert _reason(_frame(ident, [b"x" * 1025], sig)) is Reason.MALFORMED
    assert _reason(_frame(ident, [], sig, extra=b"\x00")) is Reason.MALFORMED
    assert _reason(_frame(ident[:-1], [], sig)) is Reason.MALFORMED
    assert _reason(_frame(b"\x02" + ident[1:], [], sig)) is Reason.UNSUPPORTED_VERSION
    assert _reason(_frame(ident, [], sig[:31])) is Reason.MALFORMED
    assert _reason(PREFIX + "A" * 9000) is Reason.MALFORMED
    # v1 macaroons (the hex-length text format) are not accepted.
    v1 = Macaroon(location="x", identifier="id", key="k")
    assert _reason(PREFIX + v1.serialize()) is Reason.MALFORMED


def test_non_minimal_varint_and_third_party(root_key: RootKey) -> None:
    t = _token(root_key, cav.Models(("gpt-4o",)))
    data = t.to_bytes()
    # identifier length 33 written as 0xa1 0x00 instead of 0x21
    bad = data[:2] + b"\xa1\x00" + data[3:]
    assert _reason(PREFIX + b64url_encode(bad)) is Reason.MALFORMED
    # a verification id after the caveat identifier marks a third-party caveat
    cid = cav.encode(cav.Models(("gpt-4o",)))
    i = data.index(cid) + len(cid)
    bad = data[:i] + b"\x04\x01x" + data[i:]
    assert _reason(PREFIX + b64url_encode(bad)) is Reason.MALFORMED


def test_repr_never_shows_token_or_key(root_key: RootKey) -> None:
    t = _token(root_key, cav.Models(("gpt-4o",)))
    assert t.serialize() not in repr(t)
    assert root_key.secret.hex() not in repr(root_key)


def test_verifier_reports_unknown_before_invalid_caveat(root_key: RootKey) -> None:
    from capwallet.keys import Keyring
    from capwallet.verify import Request, verify

    ident = _token(root_key).raw.identifier
    raws = (b"expires 01", b"frobnicate 1")
    raw = macaroon.RawMacaroon(ident, raws, macaroon.chain(root_key.secret, ident, raws))
    text = PREFIX + b64url_encode(macaroon.encode(raw))
    d = verify(text, Keyring([root_key]), Request(scopes=()), NOW)
    assert d.reason is Reason.UNKNOWN_CAVEAT


def test_mint_and_attenuate_never_produce_an_overlong_token(root_key: RootKey) -> None:
    """Seven 1000-byte caveats encode to more than 8192 characters, which parse rejects."""
    big = [cav.App("x" * 996) for _ in range(7)]
    with pytest.raises(ValueError, match="8192"):
        _token(root_key, *big)
    six = _token(root_key, *big[:6])
    assert Token.parse(six.serialize()) == six
    with pytest.raises(ValueError, match="8192"):
        six.attenuate(big[:1])


def test_chain_id_names_each_chain_and_cannot_be_used_as_one(root_key: RootKey) -> None:
    """The ledger's public name for a chain: 8 bytes of SHA-256 of its signature, in hex. A
    sub-task's attenuated token shares its parent's token id but not its chain id; the id
    holds neither the signature nor anything of the token text."""
    import hashlib

    from capwallet.verify import Verifier

    parent = mint(root_key, [cav.Models(("gpt-4o-mini",))], now=NOW)
    child = parent.attenuate([cav.MaxOutputTokens(10)])
    assert parent.chain_id == hashlib.sha256(parent.raw.signature).hexdigest()[:16]
    assert macaroon.chain_id(parent.raw.signature) == parent.chain_id
    assert len(parent.chain_id) == 16 and int(parent.chain_id, 16) >= 0
    assert child.token_id == parent.token_id and child.chain_id != parent.chain_id
    assert Token.parse(child.serialize()).chain_id == child.chain_id  # stable across parsing
    assert parent.raw.signature.hex()[:16] != parent.chain_id
    assert parent.chain_id not in parent.serialize()
    v = Verifier({root_key.key_id: root_key.secret}).check_token(child.serialize())
    assert (v.chain_id, v.caveats) == (child.chain_id, child.raw_caveats)
