"""encoding.json: the string and binary forms, tampering, limits."""

from __future__ import annotations

from typing import Any

from capwallet.keys import RootKey

from .encoder import Tok, fld, identifier, leb, sig_chain, tok, tokstr, v2
from .files import File, Raw, crosscheck_mint, keys_json, token_json
from .flags import (
    BASE64,
    BOUNDARY,
    CAV_TAMPER,
    ID_TAMPER,
    IDLEN,
    LOCATION,
    PREFIX_F,
    ROTATION,
    SIG,
    SIZE,
    STRUCT,
    THIRD,
    TRAILING,
    UNKNOWN_KEY,
    V1,
    VALID,
    VARINT,
    VERSION,
    WRONG_KEY,
)
from .requests import allow, call, ctx, deny
from .seeds import ISSUED, K1, K1_WRONG, K2, K9, MAX_SAFE, T, tid


def build_encoding() -> File:
    f = File("encoding", [
        "Token string and binary form (spec/token-format.md): canonical tokens, tampering,",
        "non-canonical encodings and size limits. Every token is verified with the request in",
        "its context; a token that does not parse is denied as malformed (or",
        "unsupported_version) before any key is looked up.",
    ])
    keys = keys_json(K1)
    sf, bf, vf, idf = ("token-format.md#string-form", "token-format.md#binary-form",
                       "token-format.md#varints", "token-format.md#identifier")
    chain_ref, lim = "token-format.md#signature-chain", "token-format.md#limits"

    def add_tok(desc: str, spec: str, flags: list[str], t: Tok, expected: dict[str, Any],
                keyring_: list[dict[str, str]] = keys, context: dict[str, Any] | None = None,
                cross: bool = True) -> None:
        if cross:
            crosscheck_mint(t)
        parses = expected.get("reason") not in ("malformed", "unsupported_version")
        f.add(desc, spec, flags, keys=keyring_,
              **(token_json(t) if parses else token_json(t.s, t.data)),
              context=context or ctx(), expected=expected)

    def add_raw(desc: str, spec: str, flags: list[str], text: str, expected: dict[str, Any],
                data: bytes | None = None, keyring_: list[dict[str, str]] = keys) -> None:
        f.add(desc, spec, flags, keys=keyring_, **token_json(text, data), context=ctx(),
              expected=expected)

    def add_bytes(desc: str, spec: str, flags: list[str], data: bytes | Raw,
                  expected: dict[str, Any]) -> None:
        if isinstance(data, Raw):
            f.add(desc, spec, flags, keys=keys, **token_json(data), context=ctx(),
                  expected=expected)
        else:
            add_raw(desc, spec, flags, tokstr(data), expected, data)

    base = tok("encoding-minimal")
    add_tok("The smallest token: no caveats (72 bytes). It grants everything its root key "
            "grants.", chain_ref, [VALID], base, allow())
    three = tok("encoding-three", f"expires {T + 3600}", "providers anthropic openai",
                "models gpt-4o-mini")
    add_tok("Three first-party caveats, all satisfied.", bf, [VALID], three, allow())

    # Tampering with a well-formed token.
    def resign(t: Tok, sig: bytes, caveats: list[bytes] | None = None,
               ident: bytes | None = None) -> Raw:
        return Raw(t.ident if ident is None else ident,
                   t.caveats if caveats is None else caveats, sig)

    s = bytearray(three.sig)
    s[31] ^= 0x01
    add_bytes("The last bit of the signature flipped.", chain_ref, [SIG],
              resign(three, bytes(s)), deny("bad_signature"))
    s = bytearray(three.sig)
    s[0] ^= 0x80
    add_bytes("The first bit of the signature flipped.", chain_ref, [SIG],
              resign(three, bytes(s)), deny("bad_signature"))
    add_bytes("The last caveat dropped, signature unchanged (an attempt to widen the token).",
              chain_ref, [CAV_TAMPER], resign(three, three.sig, three.caveats[:2]),
              deny("bad_signature"))
    add_bytes("The first caveat (the expiry) dropped, signature unchanged.", chain_ref,
              [CAV_TAMPER], resign(three, three.sig, three.caveats[1:]), deny("bad_signature"))
    c = three.caveats
    add_bytes("The first two caveats swapped, signature unchanged: caveat order is signed.",
              chain_ref, [CAV_TAMPER], resign(three, three.sig, [c[1], c[0], c[2]]),
              deny("bad_signature"))
    add_bytes("The last caveat duplicated, signature unchanged.", chain_ref, [CAV_TAMPER],
              resign(three, three.sig, [*c, c[2]]), deny("bad_signature"))
    add_bytes("The last caveat truncated by one byte ('models gpt-4o-min'), length field "
              "adjusted, signature unchanged.", chain_ref, [CAV_TAMPER],
              resign(three, three.sig, [c[0], c[1], c[2][:-1]]), deny("bad_signature"))
    other_id = identifier(K1.key_id, tid("encoding-other"), ISSUED)
    add_bytes("The token id in the identifier replaced, signature unchanged.", chain_ref,
              [ID_TAMPER], resign(three, three.sig, ident=other_id), deny("bad_signature"))
    later = identifier(K1.key_id, tid("encoding-three"), ISSUED + 1)
    add_bytes("issued_at in the identifier changed by one second, signature unchanged.",
              chain_ref, [ID_TAMPER], resign(three, three.sig, ident=later),
              deny("bad_signature"))
    wrong = Tok(K1_WRONG, tid("encoding-three"), ISSUED, list(three.caveats))
    add_tok("Signed with a different secret under the same key id as the verifier's key.",
            chain_ref, [WRONG_KEY], wrong, deny("bad_signature"), cross=False)
    unknown = Tok(K9, tid("encoding-three"), ISSUED, list(three.caveats))
    add_tok("Minted under a root key id the verifier does not hold.",
            "verification.md#key-lookup-and-signature", [UNKNOWN_KEY], unknown,
            deny("unknown_key"), cross=False)
    add_tok("Minted under K2; the verifier holds K1 and K2 and picks K2 by key id.",
            "verification.md#key-lookup-and-signature", [VALID, ROTATION],
            tok("encoding-k2", f"expires {T + 3600}", key=K2), allow(),
            keyring_=keys_json(K1, K2))
    add_tok("Signed under K1 but the identifier names K2 (the identifier is signed, so the "
            "verifier checks with K2's secret).", chain_ref, [WRONG_KEY],
            Tok(RootKey(K2.key_id, K1.secret), tid("encoding-k2"), ISSUED,
                [f"expires {T + 3600}".encode()]), deny("bad_signature"),
            keyring_=keys_json(K1, K2), cross=False)

    # Trailing bytes.
    add_bytes("One 0x00 byte after the signature field.", bf, [TRAILING],
              three.data + b"\x00", deny("malformed"))
    add_bytes("A second signature field after the first.", bf, [TRAILING],
              three.data + fld(6, three.sig), deny("malformed"))

    # The string form.
    def with_trailing_bits(t: Tok) -> str:
        text = t.s
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(text[-1])
        bits = {1: 4, 2: 2}[len(t.data) % 3]
        assert last % (1 << bits) == 0
        return text[:-1] + alphabet[last + 1]

    t1 = tok("encoding-b64-1", "models abc")  # 85 bytes: the last character carries 4 zero bits
    t2 = tok("encoding-b64-2", "models a")  # 83 bytes: the last character carries 2 zero bits
    assert len(t1.data) % 3 == 1 and len(t2.data) % 3 == 2
    add_tok("A token whose length is 1 mod 3 (85 bytes), in canonical form: the last base64url "
            "character carries 4 zero bits.", sf, [VALID], t1,
            allow(), context=ctx(call(model="abc")))
    add_raw("The same token with a non-zero trailing bit in the last character (decodes to "
            "the same bytes in lenient decoders).", sf, [BASE64], with_trailing_bits(t1),
            deny("malformed"))
    add_raw("A token of 83 bytes (2 mod 3) with a non-zero trailing bit in the last character.",
            sf, [BASE64], with_trailing_bits(t2), deny("malformed"))
    add_raw("The canonical token with '=' padding appended.", sf, [BASE64],
            t1.s + "==", deny("malformed"))

    def find(char: str) -> Tok:
        for i in range(1000):
            t = tok(f"encoding-alphabet-{i}", f"expires {T + 3600}")
            if char in t.s[5:]:
                return t
        raise AssertionError(char)

    minus, underscore = find("-"), find("_")
    add_raw("The canonical token with each '-' replaced by '+' (the standard base64 alphabet).",
            sf, [BASE64], "cwt1_" + minus.s[5:].replace("-", "+"), deny("malformed"))
    add_raw("The canonical token with each '_' replaced by '/' (the standard base64 alphabet).",
            sf, [BASE64], "cwt1_" + underscore.s[5:].replace("_", "/"), deny("malformed"))
    add_raw("The canonical token followed by a newline.", sf, [BASE64], three.s + "\n",
            deny("malformed"))
    add_raw("A space inside the base64url text.", sf, [BASE64],
            three.s[:40] + " " + three.s[40:], deny("malformed"))
    odd = three.s
    while (len(odd) - 5) % 4 != 1:
        odd += "A"
    add_raw("Base64url text whose length is 1 mod 4 (no byte string encodes to that).", sf,
            [BASE64], odd, deny("malformed"))
    add_raw("The base64url text without the 'cwt1_' prefix.", sf, [PREFIX_F], three.s[5:],
            deny("malformed"))
    add_raw("Prefix 'cwt2_' (an unknown string format).", sf, [PREFIX_F],
            "cwt2_" + three.s[5:], deny("malformed"))
    add_raw("Prefix in upper case, 'CWT1_'.", sf, [PREFIX_F], "CWT1_" + three.s[5:],
            deny("malformed"))
    add_raw("The prefix alone: no bytes.", sf, [PREFIX_F], "cwt1_", deny("malformed"), b"")
    add_raw("The empty string.", sf, [PREFIX_F], "", deny("malformed"))

    # Binary structure.
    def pkt(key: bytes, value: bytes) -> bytes:
        line = key + b" " + value + b"\n"
        return b"%04x" % (len(line) + 4) + line

    v1sig = sig_chain(K1.secret, three.ident, [c[0]])[-1]
    v1 = (pkt(b"location", b"https://relay.example") + pkt(b"identifier", three.ident)
          + pkt(b"cid", c[0]) + pkt(b"signature", v1sig))
    add_bytes("A libmacaroons v1 macaroon (text packets) with a valid HMAC chain.", bf, [V1],
              v1, deny("malformed"))
    add_bytes("Version byte 0x03 instead of 0x02.", bf, [STRUCT],
              b"\x03" + three.data[1:], deny("malformed"))
    add_bytes("An empty location field before the identifier (as pymacaroons writes it).", bf,
              [LOCATION], b"\x02" + fld(1, b"") + three.data[1:], deny("malformed"))
    add_bytes("A location field 'https://relay.example' before the identifier.", bf,
              [LOCATION], b"\x02" + fld(1, b"https://relay.example") + three.data[1:],
              deny("malformed"))
    tp = (b"\x02" + fld(2, three.ident) + b"\x00" + fld(2, c[0]) + b"\x00"
          + fld(2, b"third-party-caveat-id") + fld(4, b"\x00" * 48) + b"\x00" + b"\x00"
          + fld(6, three.sig))
    add_bytes("A third-party caveat: caveat identifier followed by a verification id (type 4).",
              bf, [THIRD], tp, deny("malformed"))
    tp2 = (b"\x02" + fld(2, three.ident) + b"\x00" + fld(1, b"https://auth.example")
           + fld(2, b"third-party-caveat-id") + fld(4, b"\x00" * 48) + b"\x00" + b"\x00"
           + fld(6, three.sig))
    add_bytes("A third-party caveat with a caveat location (type 1) field.", bf,
              [THIRD, LOCATION], tp2, deny("malformed"))
    no_end = b"\x02" + fld(2, three.ident) + b"\x00" + fld(6, three.sig)
    add_bytes("The end-of-caveats EOS is missing (signature follows the header directly).", bf,
              [STRUCT], no_end, deny("malformed"))
    extra = (b"\x02" + fld(2, three.ident) + fld(4, b"x") + b"\x00" + b"\x00"
             + fld(6, base.sig))
    add_bytes("An extra field (type 4) in the header after the identifier.", bf, [STRUCT],
              extra, deny("malformed"))
    add_bytes("An unknown field type (3) in the caveat section.", bf, [STRUCT],
              b"\x02" + fld(2, base.ident) + b"\x00" + fld(3, b"x") + b"\x00" + b"\x00"
              + fld(6, base.sig), deny("malformed"))
    add_bytes("The signature field has type 2 instead of 6.", bf, [STRUCT],
              base.data[:-34] + fld(2, base.sig), deny("malformed"))
    add_bytes("The token is cut in the middle of the signature.", bf, [STRUCT],
              three.data[:-5], deny("malformed"))
    add_bytes("A caveat length that runs past the end of the token.", bf, [STRUCT],
              b"\x02" + fld(2, base.ident) + b"\x00" + b"\x02\x7f" + b"models a", deny("malformed"))
    add_bytes("A 31-byte signature.", bf, [STRUCT], base.data[:-34] + fld(6, base.sig[:31]),
              deny("malformed"))
    add_bytes("A 33-byte signature.", bf, [STRUCT], base.data[:-34] + fld(6, base.sig + b"\x00"),
              deny("malformed"))

    # Varints.
    add_bytes("The identifier length 33 written as the two-byte varint a1 00.", vf, [VARINT],
              b"\x02" + fld(2, base.ident, pad=1) + base.data[36:], deny("malformed"))
    add_bytes("The signature length 32 written as the three-byte varint a0 80 00.", vf,
              [VARINT], base.data[:-34] + fld(6, base.sig, pad=2), deny("malformed"))
    add_bytes("A caveat length written as a 4-byte varint (longer than any allowed length).",
              vf, [VARINT], b"\x02" + fld(2, base.ident) + b"\x00" + fld(2, b"models a", pad=3)
              + b"\x00" + b"\x00" + fld(6, sig_chain(K1.secret, base.ident, [b"models a"])[-1]),
              deny("malformed"))

    # The identifier.
    def signed(ident: bytes, caveats: list[bytes] = []) -> bytes:  # noqa: B006
        return v2(ident, caveats, sig_chain(K1.secret, ident, caveats)[-1])

    add_bytes("A 32-byte identifier (issued_at cut to 7 bytes), correctly signed.", idf, [IDLEN],
              signed(base.ident[:32]), deny("malformed"))
    add_bytes("A 34-byte identifier (one extra byte), correctly signed.", idf, [IDLEN],
              signed(base.ident + b"\x00"), deny("malformed"))
    add_bytes("An empty identifier field.", idf, [IDLEN], signed(b""), deny("malformed"))
    add_bytes("Identifier version byte 0x02 (a future protocol version), correctly signed.",
              idf, [VERSION], signed(b"\x02" + base.ident[1:]), deny("unsupported_version"))
    add_bytes("Identifier version byte 0x00, correctly signed.", idf, [VERSION],
              signed(b"\x00" + base.ident[1:]), deny("unsupported_version"))
    add_bytes("Identifier version 0x02 with 40 bytes: the version is checked before the length, "
              "so a future format may change the layout.", idf, [VERSION],
              signed(b"\x02" + base.ident[1:] + b"\x00" * 7), deny("unsupported_version"))
    add_bytes("issued_at = 2^53 (one past the largest safe integer), correctly signed.", idf,
              [BOUNDARY], signed(identifier(K1.key_id, tid("encoding-minimal"), MAX_SAFE + 1)),
              deny("malformed"))

    # Size limits.
    big = [b"app " + b"x" * 996] * 6
    fit = tok("encoding-8192", *big, b"app " + b"y" * 37)
    assert len(fit.s) == 8192
    add_tok("A token of exactly 8192 characters (6140 bytes): the longest accepted.", lim,
            [SIZE, BOUNDARY, VALID], fit, allow())
    over = tok("encoding-8193", *big, b"app " + b"y" * 38)
    assert len(over.s) == 8193
    add_tok("A token of 8193 characters, correctly signed.", lim, [SIZE, BOUNDARY], over,
            deny("malformed"), cross=False)
    many = [f"app a{i:02d}".encode() for i in range(65)]
    add_tok("64 caveats: the most accepted.", lim, [SIZE, BOUNDARY, VALID],
            tok("encoding-64", *many[:64]), allow())
    add_tok("65 caveats, correctly signed.", lim, [SIZE, BOUNDARY],
            tok("encoding-65", *many), deny("malformed"), cross=False)
    add_tok("A caveat of exactly 1024 bytes: the longest accepted.", lim,
            [SIZE, BOUNDARY, VALID], tok("encoding-1024", b"app " + b"z" * 1020), allow())
    add_tok("A caveat of 1025 bytes, correctly signed.", lim, [SIZE, BOUNDARY],
            tok("encoding-1025", b"app " + b"z" * 1021), deny("malformed"), cross=False)
    add_tok("A caveat of 1025 bytes whose type is unknown: the size limit is a parse error, "
            "checked before caveat types.", lim, [SIZE, BOUNDARY],
            tok("encoding-1025u", b"frobnicate " + b"z" * 1014), deny("malformed"), cross=False)

    # The one-byte/two-byte varint boundary: 127 is 7f, 128 is 80 01.
    for n, varint in ((127, "7f"), (128, "80 01")):
        t = tok(f"encoding-len{n}", b"app " + b"v" * (n - 4))
        assert leb(n).hex(" ") == varint and fld(2, t.caveats[0]) in t.data
        add_tok(f"A caveat of exactly {n} bytes: its length is the varint {varint}.", vf,
                [BOUNDARY, VARINT, VALID], t, allow())

    # A token cut off at each point of its structure (every parser state), and the 1-byte
    # token 02. Each prefix is canonical base64url of its bytes: only the structure is wrong.
    cut = tok("encoding-cut", "models a")
    assert len(cut.data) == 83 and cut.data[36:51] == b"\x00\x02\x08models a\x00\x00\x06\x20"
    points = [
        (1, "after the version byte"), (2, "after the identifier field type"),
        (3, "after the identifier length"), (20, "inside the identifier"),
        (36, "after the identifier, before the header's end-of-section byte"),
        (37, "at the start of the caveat section"),
        (38, "after a caveat's field type"), (39, "after a caveat's length"),
        (43, "inside a caveat"), (47, "after a caveat, before its end-of-caveat byte"),
        (48, "after a caveat's end-of-caveat byte, before the end of the caveat section"),
        (49, "after the caveat section, before the signature field"),
        (50, "after the signature field type"), (51, "after the signature length"),
        (82, "one byte before the end of the signature"),
    ]
    for n, where in points:
        add_bytes(f"The token cut off {where} ({n} of 83 bytes).", bf, [STRUCT],
                  cut.data[:n], deny("malformed"))
    return f
