#!/usr/bin/env python3
"""Generate the capwallet v1 conformance vectors in test_vectors/v1/ (spec/test-vectors.md).

    python test_vectors/generate.py           # (re)write the files
    python test_vectors/generate.py --check   # exit 1 if regenerating would change any file

Every input is fixed (root keys, token ids, times, nonces, approval ids), so the output is
reproducible byte for byte. Tokens are assembled here with an independent encoder and HMAC
chain and cross-checked against capwallet.token.mint / Token.attenuate. Every expected result
(reason, the counter a denial names, debits, counter states, effective limits) is written
here by hand, and the generator stops if the Python implementation disagrees: the vectors say
what the spec says, not what the code happens to do.

Money (spec/caveats.md#currencies): a request's cost and every budget counter value (debit
amount, limit and used; counter states) is in microunits, millionths of a minor unit, while
caveat amounts and effective limits stay in minor units. Amounts are written here by hand in
minor units where a whole number of minor units is meant, and scaled by MICROS at the JSON
boundary (call(cost=...), debit(...) of a budget, counter states keyed by a budget's counter
key); Micros(n) marks a value written directly in microunits, which is never scaled.

Ids are assigned in order within each file, so new vectors go at the END of their file and
existing ids never change meaning.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import hmac
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from capwallet import approval as approvals  # noqa: E402
from capwallet import caveats as cav  # noqa: E402
from capwallet.keys import Keyring, RootKey  # noqa: E402
from capwallet.token import Token, mint  # noqa: E402
from capwallet.verify import Decision, Request, verify  # noqa: E402

OUT = Path(__file__).resolve().parent / "v1"
SCHEMA = "../../spec/test-vectors.schema.json"
ALGORITHM = "capwallet-token-v1"
MAX_SAFE = 2**53 - 1
MICROS = 1_000_000  # microunits per minor unit
MAX_MINOR = 9_007_199_254  # the largest caveat amount: floor((2^53-1) / MICROS)
assert MAX_MINOR * MICROS <= MAX_SAFE < (MAX_MINOR + 1) * MICROS

# ---------------------------------------------------------------------------------------------
# Fixed seeds.


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

# ---------------------------------------------------------------------------------------------
# An independent encoder (spec/token-format.md), used to build honest and tampered tokens.


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


class Micros(int):
    """A money amount written directly in microunits: mu() leaves it as it is."""


class BudgetKey(str):
    """The counter key of a budget: its counter state is money, scaled by mu()."""


def mu(n: int) -> int:
    """A money amount in microunits: n minor units, unless n is already Micros."""
    return int(n) if isinstance(n, Micros) else n * MICROS


def scale_counters(counters: dict[str, int]) -> dict[str, int]:
    """Counter states as the verifier sees them: budget counters in microunits."""
    return {str(k): mu(v) if isinstance(k, BudgetKey) else v for k, v in counters.items()}


def ckey(token_id: bytes, caveat: str, period_key: str) -> str:
    """A counter key, computed here independently: SHA-256(token id || caveat)[:16] hex."""
    key = hashlib.sha256(token_id + caveat.encode()).hexdigest()[:32] + "/" + period_key
    return BudgetKey(key) if caveat.startswith("budget ") else key


def counter_id(token_id: bytes, caveat: str) -> str:
    return hashlib.sha256(token_id + caveat.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# Requests, expectations.


def call(
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    operation: str = "chat",
    *,
    scopes: tuple[str, ...] = (),
    input_tokens: int = 1000,
    output_tokens: int = 500,
    cost: dict[str, int] | None = None,
    zero_retention: bool = False,
    approval: str | None = None,
    digest: bytes | None = None,
) -> dict[str, Any]:
    """A model call. ``cost`` is in minor units (or Micros), scaled to microunits. Default
    cost: 12 EUR minor units (0.12 EUR), 12000000 microunits."""
    return {
        "kind": "model_call", "provider": provider, "model": model, "operation": operation,
        "scopes": list(scopes), "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cost": {c: mu(n) for c, n in ({"EUR": 12} if cost is None else cost).items()},
        "zero_retention": zero_retention,
        "approval": approval, "digest": None if digest is None else digest.hex(),
    }


def access(
    *scopes: str, approval: str | None = None, digest: bytes | None = None
) -> dict[str, Any]:
    """A resource access: only scopes (and an approval, for ask-first scopes)."""
    return {
        "kind": "resource_access", "provider": None, "model": None, "operation": None,
        "scopes": list(scopes), "input_tokens": 0, "output_tokens": 0, "cost": {},
        "zero_retention": False, "approval": approval,
        "digest": None if digest is None else digest.hex(),
    }


def ctx(
    request: dict[str, Any] | None = None,
    now: int = T,
    counters: dict[str, int] | None = None,
    revoked: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {"now": now, "request": call() if request is None else request,
            "counters": scale_counters(counters or {}), "revoked": list(revoked)}


COUNTER_REASONS = ("rate_limited", "quota_exceeded", "budget_exceeded")


def deny(reason: str, counter: dict[str, Any] | None = None) -> dict[str, Any]:
    """A denial; a counter denial names its counter (hit(...)), and no other denial does."""
    assert (counter is not None) == (reason in COUNTER_REASONS), reason
    out: dict[str, Any] = {"result": "deny", "reason": reason}
    if counter is not None:
        out["counter"] = counter
    return out


def allow(
    *debits: dict[str, Any], approval_id: str | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"result": "allow", "debits": list(debits), "approval_id": approval_id}
    if limits is not None:
        out["limits"] = limits
    return out


def debit(
    kind: str, token_id: bytes, caveat: str, period_key: str, *, amount: int, limit: int,
    used: int = 0, unit: str, resets_at: int | None,
) -> dict[str, Any]:
    """A debit; a budget's amount, limit and used are written in minor units (or Micros)."""
    if kind == "budget":
        amount, limit, used = mu(amount), mu(limit), mu(used)
    return {"kind": kind, "counter_key": ckey(token_id, caveat, period_key), "amount": amount,
            "limit": limit, "used": used, "unit": unit, "resets_at": resets_at}


def hit(
    kind: str, token_id: bytes, caveat: str, period_key: str, *, limit: int, used: int,
    needed: int, unit: str, resets_at: int | None,
) -> dict[str, Any]:
    """The counter a counter denial names (spec/verification.md#decision): the first one, in
    check order, the call does not fit. Like debit(), a budget's limit, used and needed are
    written in minor units (or Micros); ``needed`` is what the call would add to it."""
    if kind == "budget":
        limit, used, needed = mu(limit), mu(used), mu(needed)
    return {"kind": kind, "counter_id": counter_id(token_id, caveat),
            "counter_key": ckey(token_id, caveat, period_key), "unit": unit, "limit": limit,
            "used": used, "needed": needed, "resets_at": resets_at}


def limits(**over: Any) -> dict[str, Any]:
    """Effective limits of a token with no caveats, overridden by hand per vector."""
    base: dict[str, Any] = {
        "not_before": None, "expires": None, "providers": None, "models": None,
        "operations": None, "scopes": None, "ask_first": [], "zero_retention": False,
        "max_input_tokens": None, "max_output_tokens": None, "counters": [],
        "confirm_above": {}, "logging": None, "apps": [],
    }
    unknown = set(over) - set(base)
    assert not unknown, unknown
    base.update(over)
    return base


def counter(kind: str, token_id: bytes, caveat: str, limit: int, unit: str, period: str,
            tz: str = "UTC") -> dict[str, Any]:
    return {"kind": kind, "counter_id": counter_id(token_id, caveat), "limit": limit,
            "unit": unit, "period": period, "tz": tz}


# ---------------------------------------------------------------------------------------------
# Approvals, built independently (spec/approvals.md).


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


# ---------------------------------------------------------------------------------------------
# Vector files.

FLAGS: dict[str, str] = {}


def flag(name: str, description: str) -> str:
    assert FLAGS.get(name, description) == description, name
    FLAGS[name] = description
    return name


@dataclass
class File:
    name: str
    header: list[str]
    tests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, description: str, spec: str, flags: list[str], **body: Any) -> str:
        vid = f"{self.name}-{len(self.tests) + 1:03d}"
        for f in flags:
            assert f in FLAGS, f"unknown flag {f}"
        self.tests.append({"id": vid, "description": description, "spec": spec,
                           "flags": flags, **body})
        return vid

    def document(self) -> dict[str, Any]:
        used = sorted({f for t in self.tests for f in t["flags"]})
        return {
            "schema": SCHEMA, "version": 1, "algorithm": ALGORITHM,
            "numberOfTests": len(self.tests), "header": self.header,
            "notes": {f: FLAGS[f] for f in used}, "tests": self.tests,
        }


def keys_json(*keys: RootKey) -> list[dict[str, str]]:
    return [{"key_id": k.key_id.hex(), "root_key": k.secret.hex()} for k in keys]


@dataclass
class Raw:
    """A well-formed macaroon that is not honestly signed (tampered), kept by parts."""

    ident: bytes
    caveats: list[bytes]
    sig: bytes

    @property
    def data(self) -> bytes:
        return v2(self.ident, self.caveats, self.sig)

    @property
    def s(self) -> str:
        return tokstr(self.data)


def identifier_json(ident: bytes) -> dict[str, Any]:
    version, key_id, token_id, issued_at = struct.unpack(">B8s16sQ", ident)
    return {"hex": ident.hex(), "version": version, "key_id": key_id.hex(),
            "token_id": token_id.hex(), "issued_at": issued_at}


def token_json(t: Tok | Raw | str, data: bytes | None = None) -> dict[str, Any]:
    """The token string and, when it is a well-formed v1 token, its decoded parts."""
    if isinstance(t, str):
        out: dict[str, Any] = {"token": t}
        if data is not None:
            out["token_hex"] = data.hex()
        return out
    return {
        "token": t.s,
        "token_hex": t.data.hex(),
        "identifier": identifier_json(t.ident),
        "caveats": [caveat_json(c) for c in t.caveats],
        "signature": t.sig.hex(),
    }


def crosscheck_mint(t: Tok) -> None:
    """The implementation's mint() must produce exactly the token built here."""
    typed = cav.decode_all(t.caveats)
    minted = mint(t.key, typed, now=t.issued_at, token_id=t.token_id)
    if minted.serialize() != t.s:
        raise SystemExit(f"mint() disagrees with the independent encoder for {t.caveats!r}")


# ---------------------------------------------------------------------------------------------
# Checking expectations against the implementation.


def to_request(r: dict[str, Any]) -> Request:
    model_call = r["kind"] == "model_call"
    return Request(
        provider=r["provider"] if model_call else None,
        model=r["model"], operation=r["operation"], scopes=tuple(r["scopes"]),
        input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], cost=dict(r["cost"]),
        zero_retention=r["zero_retention"], approval=r["approval"],
        digest=None if r["digest"] is None else bytes.fromhex(r["digest"]),
    )


def keyring(keys: list[dict[str, str]]) -> Keyring:
    return Keyring(RootKey(bytes.fromhex(k["key_id"]), bytes.fromhex(k["root_key"]))
                   for k in keys)


def run(keys: list[dict[str, str]], token: str, now: int, request: dict[str, Any],
        counters: dict[str, int], revoked: list[str]) -> Decision:
    return verify(token, keyring(keys), to_request(request), now, counters, revoked)


def compare(vid: str, expected: dict[str, Any], d: Decision) -> None:
    def fail(what: str, want: Any, got: Any) -> None:
        raise SystemExit(f"{vid}: implementation disagrees on {what}:\n  expected {want!r}\n"
                         f"  got      {got!r}\n  ({d.message})")

    got = "allow" if d.allowed else "deny"
    if got != expected["result"]:
        fail("result", expected, (got, d.reason))
    if not d.allowed and expected["reason"] != d.reason:
        fail("reason", expected["reason"], d.reason)
    named = None if d.counter is None else d.counter.to_json()
    if named != expected.get("counter"):
        fail("counter", expected.get("counter"), named)
    if d.allowed:
        debits = [x.to_json() for x in d.debits]
        if debits != expected["debits"]:
            fail("debits", expected["debits"], debits)
        if d.approval_id != expected["approval_id"]:
            fail("approval_id", expected["approval_id"], d.approval_id)
        if "limits" in expected:
            assert d.limits is not None
            if d.limits.to_json() != expected["limits"]:
                fail("limits", expected["limits"], d.limits.to_json())


def check_vector(v: dict[str, Any]) -> None:
    keys = v["keys"]
    if "steps" in v:
        counters = dict(v["counters"])
        for i, step in enumerate(v["steps"]):
            token = step.get("token", v["token"])
            d = run(keys, token, step["now"], step["request"], dict(counters), [])
            compare(f"{v['id']} step {i + 1}", step["expected"], d)
            if d.allowed:
                for x in d.debits:
                    counters[x.counter_key] = counters.get(x.counter_key, 0) + x.amount
            if counters != step["counters_after"]:
                raise SystemExit(f"{v['id']} step {i + 1}: counters {counters} != "
                                 f"{step['counters_after']}")
        return
    c = v["context"]
    d = run(keys, v["token"], c["now"], c["request"], c["counters"], c["revoked"])
    compare(v["id"], v["expected"], d)


# ---------------------------------------------------------------------------------------------
# The files are filled in by the build_* functions below.

BUILDERS: list[Callable[[], File]] = []


def builder(fn: Callable[[], File]) -> Callable[[], File]:
    BUILDERS.append(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# encoding.json: the string and binary forms, tampering, limits.

VALID = flag("Valid", "A well-formed token (or approval) that verifies; the request is allowed.")
SIG = flag("SignatureTamper", "Signature bits changed; the HMAC chain no longer matches.")
CAV_TAMPER = flag("CaveatTamper", "Caveats dropped, reordered, duplicated or truncated without "
                  "re-signing; the HMAC chain no longer matches.")
ID_TAMPER = flag("IdentifierTamper", "Identifier bytes changed without re-signing.")
WRONG_KEY = flag("WrongKey", "Signed under a different secret than the verifier holds for "
                 "that key id.")
UNKNOWN_KEY = flag("UnknownKey", "The identifier names a root key id the verifier does not hold.")
ROTATION = flag("KeyRotation", "The verifier holds several root keys and picks one by key id.")
TRAILING = flag("TrailingBytes", "Bytes after the signature field.")
BASE64 = flag("Base64", "The text after the prefix is not canonical unpadded base64url.")
PREFIX_F = flag("Prefix", "The string does not start with exactly 'cwt1_'.")
V1 = flag("MacaroonV1", "A libmacaroons v1 (text packet) macaroon, not accepted.")
LOCATION = flag("LocationField", "A location field (type 1) is present; it must be absent.")
THIRD = flag("ThirdPartyCaveat", "A third-party caveat (verification id or caveat location).")
SIZE = flag("SizeLimit", "A size limit: token characters, caveat count or caveat bytes.")
VARINT = flag("NonMinimalVarint", "A field length varint that is not minimal or is too long.")
IDLEN = flag("IdentifierLength", "The identifier is not exactly 33 bytes.")
VERSION = flag("UnsupportedVersion", "The identifier's version byte is not 0x01.")
STRUCT = flag("Structure", "Macaroon fields missing, out of order, of the wrong type or "
              "running past the end.")
BOUNDARY = flag("Boundary", "A value exactly at (or one past) a limit.")


@builder
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
    return f


# ---------------------------------------------------------------------------------------------
# mint.json: every caveat type's canonical bytes, the HMAC chain step by step.

MINT = flag("Mint", "Rebuild the token from the root key, the identifier fields and the caveat "
            "bytes: the derived key, every chain step and the token string must match.")
TYPED = flag("TypedCaveat", "The caveat bytes are what the typed constructor encodes (values "
             "sorted, arguments percent-encoded, defaults omitted).")


def mint_json(t: Tok) -> dict[str, Any]:
    return {"derived_key": derived(t.key.secret).hex(),
            "chain": [s.hex() for s in sig_chain(t.key.secret, t.ident, t.caveats)]}


@builder
def build_mint() -> File:
    f = File("mint", [
        "Minting (spec/token-format.md#signature-chain, spec/caveats.md#registry): from a root",
        "key, fixed identifier fields and typed caveats to the exact token string. 'mint' gives",
        "the libmacaroons-derived key and the signature after the identifier and after each",
        "caveat. Each token is then verified with the request in its context.",
    ])
    nonce = {"b1": "b000000000000001", "b2": "b000000000000002", "q1": "a000000000000001",
             "r1": "c000000000000001", "b3": "b000000000000003", "r2": "c000000000000002"}

    def add(desc: str, spec: str, label: str, typed: list[cav.Caveat], texts: list[str],
            context: dict[str, Any], expected: dict[str, Any], key: RootKey = K1) -> None:
        encoded = [cav.encode(c) for c in typed]
        if encoded != [x.encode("utf-8") for x in texts]:
            raise SystemExit(f"mint {label}: typed encoding {encoded} != hand-written {texts}")
        t = tok(label, *texts, key=key)
        minted = mint(key, typed, now=t.issued_at, token_id=t.token_id)
        if minted.serialize() != t.s:
            raise SystemExit(f"mint {label}: implementation token differs")
        f.add(desc, spec, [MINT, TYPED] if typed else [MINT], keys=keys_json(key),
              **token_json(t), mint=mint_json(t), context=context, expected=expected)

    reg = "caveats.md#"
    add("No caveats: the signature is HMAC(derived key, identifier).",
        "token-format.md#signature-chain", "mint-empty", [], [], ctx(), allow(limits=limits()))
    add("not-before: a Unix time in seconds.", reg + "not-before", "mint-not-before",
        [cav.NotBefore(T - 600)], [f"not-before {T - 600}"], ctx(),
        allow(limits=limits(not_before=T - 600)))
    add("expires: a Unix time in seconds.", reg + "expires", "mint-expires",
        [cav.Expires(T + 86400)], [f"expires {T + 86400}"], ctx(),
        allow(limits=limits(expires=T + 86400)))
    add("providers: values are sorted by their UTF-8 bytes, whatever order they were given in.",
        reg + "providers", "mint-providers", [cav.Providers(("openai", "anthropic"))],
        ["providers anthropic openai"], ctx(),
        allow(limits=limits(providers=["anthropic", "openai"])))
    models = ("gpt-4o-mini", "llama3.1:8b", "meta-llama/Llama-3.1-8B", "claude-sonnet-4-5")
    add("models: ':', '/', '.', '-' are in the safe set and are not percent-encoded.",
        reg + "models", "mint-models", [cav.Models(models)],
        ["models claude-sonnet-4-5 gpt-4o-mini llama3.1:8b meta-llama/Llama-3.1-8B"],
        ctx(call("ollama", "llama3.1:8b")),
        allow(limits=limits(models=["claude-sonnet-4-5", "gpt-4o-mini", "llama3.1:8b",
                                    "meta-llama/Llama-3.1-8B"])))
    add("models with characters outside the safe set: space, ',', '%' and UTF-8 are "
        "percent-encoded (upper-case hex); values are sorted by their decoded bytes.",
        "caveats.md#percent-encoding", "mint-models-pct",
        [cav.Models(("a b", "x,y", "50%", "名前"))],
        ["models 50%25 a%20b x%2Cy %E5%90%8D%E5%89%8D"], ctx(call(model="名前")),
        allow(limits=limits(models=["50%", "a b", "x,y", "名前"])))
    add("operations.", reg + "operations", "mint-operations",
        [cav.Operations(("embeddings", "chat"))], ["operations chat embeddings"], ctx(),
        allow(limits=limits(operations=["chat", "embeddings"])))
    add("scopes with no values: no scope is granted; a resource access asking for no scope "
        "is still allowed.", reg + "scopes", "mint-scopes-empty", [cav.Scopes(())], ["scopes"],
        ctx(access()), allow(limits=limits(scopes=[])))
    add("scopes.", reg + "scopes", "mint-scopes", [cav.Scopes(("files:read", "calendar:read"))],
        ["scopes calendar:read files:read"], ctx(access("files:read")),
        allow(limits=limits(scopes=["calendar:read", "files:read"])))
    add("ask-first: a resource access that does not use the scope needs no approval.",
        reg + "ask-first", "mint-ask-first", [cav.AskFirst(("email:send",))],
        ["ask-first email:send"], ctx(access("files:read")),
        allow(limits=limits(ask_first=["email:send"])))
    add("zero-retention takes no arguments.", reg + "zero-retention", "mint-zero-retention",
        [cav.ZeroRetention()], ["zero-retention"], ctx(call(zero_retention=True)),
        allow(limits=limits(zero_retention=True)))
    add("max-input-tokens.", reg + "max-input-tokens", "mint-max-input",
        [cav.MaxInputTokens(8000)], ["max-input-tokens 8000"], ctx(),
        allow(limits=limits(max_input_tokens=8000)))
    add("max-output-tokens.", reg + "max-output-tokens", "mint-max-output",
        [cav.MaxOutputTokens(4096)], ["max-output-tokens 4096"], ctx(),
        allow(limits=limits(max_output_tokens=4096)))
    b1 = f"budget {nonce['b1']} 1000 EUR month"
    t = tid("mint-budget")
    add("budget in UTC: the time zone argument is omitted. The debit names the counter "
        "<counter id>/<period key>.", reg + "budget", "mint-budget",
        [cav.Budget(1000, "EUR", "month", nonce=nonce["b1"])], [b1], ctx(),
        allow(debit("budget", t, b1, "2026-09", amount=12, limit=1000, unit="EUR",
                    resets_at=utc(2026, 10, 1)),
              limits=limits(counters=[counter("budget", t, b1, 1000, "EUR", "month")])))
    b2 = f"budget {nonce['b2']} 500 USD day America/New_York"
    t = tid("mint-budget-tz")
    add("budget with an IANA time zone: the day is New York's (EDT, UTC-4).", reg + "budget",
        "mint-budget-tz", [cav.Budget(500, "USD", "day", "America/New_York", nonce=nonce["b2"])],
        [b2], ctx(call(cost={"USD": 30})),
        allow(debit("budget", t, b2, "2026-09-21", amount=30, limit=500, unit="USD",
                    resets_at=utc(2026, 9, 22, 4)),
              limits=limits(counters=[counter("budget", t, b2, 500, "USD", "day",
                                              "America/New_York")])))
    q1 = f"token-quota {nonce['q1']} 100000 week"
    t = tid("mint-quota")
    add("token-quota: input + output tokens per ISO week.", reg + "token-quota", "mint-quota",
        [cav.TokenQuota(100000, "week", nonce=nonce["q1"])], [q1], ctx(),
        allow(debit("quota", t, q1, "2026-W39", amount=1500, limit=100000, unit="tokens",
                    resets_at=utc(2026, 9, 28)),
              limits=limits(counters=[counter("quota", t, q1, 100000, "tokens", "week")])))
    r1 = f"rate {nonce['r1']} 60"
    t = tid("mint-rate")
    add("rate: model calls per UTC minute; the period key names the minute.", reg + "rate",
        "mint-rate", [cav.Rate(60, nonce=nonce["r1"])], [r1], ctx(),
        allow(debit("rate", t, r1, "2026-09-21T14:13", amount=1, limit=60, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              limits=limits(counters=[counter("rate", t, r1, 60, "requests", "minute")])))
    add("confirm-above: a call costing 0.12 EUR is below the 5.00 EUR threshold.",
        reg + "confirm-above", "mint-confirm-above", [cav.ConfirmAbove(500, "EUR")],
        ["confirm-above 500 EUR"], ctx(), allow(limits=limits(confirm_above={"EUR": 500})))
    add("logging: informative for the relay; it never denies a request.", reg + "logging",
        "mint-logging", [cav.Logging("metadata")], ["logging metadata"], ctx(),
        allow(limits=limits(logging="metadata")))
    add("app: who the grant was made to; informative only.", reg + "app", "mint-app",
        [cav.App("https://app.example")], ["app https://app.example"], ctx(),
        allow(limits=limits(apps=["https://app.example"])))
    t = tid("mint-grant")
    b3 = f"budget {nonce['b3']} 2000 EUR month Europe/Berlin"
    r2 = f"rate {nonce['r2']} 30"
    grant = [cav.App("https://notes.example"), cav.Expires(T + 30 * 86400),
             cav.Providers(("anthropic", "openai")),
             cav.Models(("claude-sonnet-4-5", "gpt-4o-mini")), cav.Operations(("chat",)),
             cav.MaxOutputTokens(4000),
             cav.Budget(2000, "EUR", "month", "Europe/Berlin", nonce=nonce["b3"]),
             cav.Rate(30, nonce=nonce["r2"]), cav.ConfirmAbove(200, "EUR"),
             cav.Logging("metadata"), cav.Scopes(())]
    texts = ["app https://notes.example", f"expires {T + 30 * 86400}",
             "providers anthropic openai", "models claude-sonnet-4-5 gpt-4o-mini",
             "operations chat", "max-output-tokens 4000", b3, r2, "confirm-above 200 EUR",
             "logging metadata", "scopes"]
    add("A realistic grant under root key K2, as a consent page would mint it. Debits list "
        "rates first, then quotas, then budgets.", "verification.md#counters", "mint-grant",
        grant, texts, ctx(call("anthropic", "claude-sonnet-4-5", output_tokens=4000,
                               cost={"EUR": 180})),
        allow(debit("rate", t, r2, "2026-09-21T14:13", amount=1, limit=30, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              debit("budget", t, b3, "2026-09", amount=180, limit=2000, unit="EUR",
                    resets_at=utc(2026, 9, 30, 22)),
              limits=limits(expires=T + 30 * 86400, providers=["anthropic", "openai"],
                            models=["claude-sonnet-4-5", "gpt-4o-mini"], operations=["chat"],
                            scopes=[], max_output_tokens=4000,
                            counters=[counter("budget", t, b3, 2000, "EUR", "month",
                                              "Europe/Berlin"),
                                      counter("rate", t, r2, 30, "requests", "minute")],
                            confirm_above={"EUR": 200}, logging="metadata",
                            apps=["https://notes.example"])),
        key=K2)
    return f


# ---------------------------------------------------------------------------------------------
# attenuate.json: parent -> child -> grandchild, siblings, how limits combine.

ATT = flag("Attenuate", "The token is the parent with caveats appended: rebuild it from 'parent' "
           "and 'attenuate' (no root key needed) and compare.")
CHAIN = flag("Chain", "A parent -> child -> grandchild chain: every level's caveats apply.")
SIBLING = flag("Sibling", "Two tokens attenuated from one parent.")
WIDEN = flag("WideningAttempt", "A child adds a caveat that would widen its parent; the "
             "parent's caveat still applies.")
COMBINE = flag("Combine", "Several caveats of one type combine into one effective limit.")


@builder
def build_attenuate() -> File:
    f = File("attenuate", [
        "Attenuation (spec/token-format.md#attenuation, spec/caveats.md#effective-limits):",
        "anyone holding a token may append caveats without a key; the signature extends as",
        "HMAC(previous signature, caveat). Every caveat of every level applies, so a child",
        "never has more authority than its parent, and every budget in the chain is debited.",
    ])
    keys = keys_json(K1)
    P = tok("family", f"expires {T + 30 * 86400}", "providers anthropic openai",
            "models claude-sonnet-4-5 gpt-4o gpt-4o-mini", "budget b000000000000010 2000 EUR month",
            "max-output-tokens 8000")
    t = P.token_id
    pb = "budget b000000000000010 2000 EUR month"
    pbc = counter("budget", t, pb, 2000, "EUR", "month")
    nov = utc(2026, 10, 1)

    def pdebit(amount: int = 12, used: int = 0) -> dict[str, Any]:
        return debit("budget", t, pb, "2026-09", amount=amount, limit=2000, used=used,
                     unit="EUR", resets_at=nov)

    parent_limits = dict(expires=T + 30 * 86400, providers=["anthropic", "openai"],
                         models=["claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini"],
                         max_output_tokens=8000, counters=[pbc])

    def add(desc: str, spec: str, flags: list[str], child: Tok, parent: Tok,
            context: dict[str, Any], expected: dict[str, Any], cross: bool = True) -> None:
        added = child.caveats[len(parent.caveats):]
        assert child.caveats[: len(parent.caveats)] == parent.caveats
        if cross:
            again = Token.parse(parent.s).attenuate(cav.decode_all(added)).serialize()
            if again != child.s:
                raise SystemExit(f"attenuate: implementation differs for {desc}")
            crosscheck_mint(child)
        f.add(desc, spec, [ATT, *flags], keys=keys, parent=parent.s,
              attenuate=[caveat_json(c) for c in added], **token_json(child), context=context,
              expected=expected)

    crosscheck_mint(P)
    f.add("The parent used in this file: 30-day expiry, two providers, three models, a "
          "20.00 EUR monthly budget, 8000 output tokens at most.", "token-format.md#attenuation",
          [VALID], keys=keys, **token_json(P), context=ctx(call(model="gpt-4o")),
          expected=allow(pdebit(), limits=limits(**parent_limits)))
    cb = "budget b000000000000011 500 EUR month"
    C = P.child("models gpt-4o-mini", f"expires {T + 86400}", "max-output-tokens 1000", cb)
    add("A child narrowed to one model, one day, 1000 output tokens and its own 5.00 EUR "
        "budget. Both budgets are debited, in token order.", "budgets.md#attenuation-and-budgets",
        [CHAIN, COMBINE], C, P, ctx(),
        allow(pdebit(), debit("budget", t, cb, "2026-09", amount=12, limit=500, unit="EUR",
                              resets_at=nov),
              limits=limits(**{**parent_limits, "expires": T + 86400, "models": ["gpt-4o-mini"],
                               "max_output_tokens": 1000,
                               "counters": [pbc, counter("budget", t, cb, 500, "EUR",
                                                         "month")]})))
    add("The child asks for gpt-4o, which the parent allows and the child does not.",
        "caveats.md#effective-limits", [CHAIN], C, P, ctx(call(model="gpt-4o")),
        deny("model_not_allowed"))
    add("The child asks for 2000 output tokens: under the parent's 8000, over its own 1000.",
        "caveats.md#effective-limits", [CHAIN], C, P, ctx(call(output_tokens=2000)),
        deny("output_too_large"))
    W = P.child("models gpt-4o-mini o3")
    add("A child 'adds' model o3 by appending a models caveat naming it; the parent's models "
        "caveat still applies, so o3 stays forbidden.", "caveats.md#effective-limits",
        [WIDEN], W, P, ctx(call(model="o3")), deny("model_not_allowed"))
    add("The widening child can still use a model both caveats name.",
        "caveats.md#effective-limits", [WIDEN], W, P, ctx(),
        allow(pdebit(), limits=limits(**{**parent_limits, "models": ["gpt-4o-mini"]})))
    L = P.child(f"expires {T + 60 * 86400}")
    add("A child appends a later expiry; the parent's earlier expiry still applies (checked "
        "60 s after it).", "verification.md#clock-skew", [WIDEN], L, P,
        ctx(now=T + 30 * 86400 + 60), deny("expired"))
    rc = "rate c000000000000012 10"
    G = C.child("operations chat", rc)
    add("A grandchild adds an operation list and a rate; rates are checked before budgets, "
        "and every counter of every level is debited.", "budgets.md#attenuation-and-budgets",
        [CHAIN], G, C, ctx(),
        allow(debit("rate", t, rc, "2026-09-21T14:13", amount=1, limit=10, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              pdebit(),
              debit("budget", t, cb, "2026-09", amount=12, limit=500, unit="EUR",
                    resets_at=nov),
              limits=limits(**{**parent_limits, "expires": T + 86400, "models": ["gpt-4o-mini"],
                               "max_output_tokens": 1000, "operations": ["chat"],
                               "counters": [pbc, counter("budget", t, cb, 500, "EUR", "month"),
                                            counter("rate", t, rc, 10, "requests",
                                                    "minute")]})))
    add("The grandchild asks for embeddings.", "caveats.md#operations", [CHAIN], G, C,
        ctx(call(operation="embeddings")), deny("operation_not_allowed"))
    add("The grandchild's 0.30 EUR request exceeds its own 5.00 EUR budget (4.80 EUR of it "
        "used) while the parent's budget has room.", "budgets.md#attenuation-and-budgets",
        [CHAIN], G, C,
        ctx(call(cost={"EUR": 30}), counters={ckey(t, pb, "2026-09"): 480,
                                               ckey(t, cb, "2026-09"): 480}),
        deny("budget_exceeded", hit("budget", t, cb, "2026-09", limit=500, used=480, needed=30,
                                    unit="EUR", resets_at=nov)))
    add("The grandchild's 0.30 EUR request fits its own budget but not the parent's (19.90 "
        "of 20.00 EUR used): a child never outspends its parent.",
        "budgets.md#attenuation-and-budgets", [CHAIN], G, C,
        ctx(call(cost={"EUR": 30}), counters={ckey(t, pb, "2026-09"): 1990}),
        deny("budget_exceeded", hit("budget", t, pb, "2026-09", limit=2000, used=1990,
                                    needed=30, unit="EUR", resets_at=nov)))
    sa, sb = "budget b0000000000000a1 500 EUR month", "budget b0000000000000b1 500 EUR month"
    A, B = P.child(sa), P.child(sb)
    add("Sibling A: its 5.00 EUR budget has its own counter, its nonce b0000000000000a1 in the "
        "signed bytes.", "budgets.md#siblings", [SIBLING], A, P, ctx(),
        allow(pdebit(), debit("budget", t, sa, "2026-09", amount=12, limit=500, unit="EUR",
                              resets_at=nov)))
    add("Sibling B: the same limit with nonce b0000000000000b1, so a different counter id, "
        "although both siblings share the token id.", "budgets.md#siblings", [SIBLING], B, P,
        ctx(), allow(pdebit(), debit("budget", t, sb, "2026-09", amount=12, limit=500,
                                     unit="EUR", resets_at=nov)))
    add("Sibling B is not limited by sibling A's spending (A's counter is at 5.00 of 5.00 "
        "EUR).",
        "budgets.md#siblings", [SIBLING], B, P,
        ctx(counters={ckey(t, sa, "2026-09"): 500, ckey(t, pb, "2026-09"): 500}),
        allow(pdebit(used=500), debit("budget", t, sb, "2026-09", amount=12, limit=500,
                                      unit="EUR", resets_at=nov)))
    D = P.child(pb)
    add("A child appends a caveat identical to one its parent has: identical bytes name one "
        "counter, which is debited once.", "budgets.md#identical-caveats", [COMBINE], D, P,
        ctx(), allow(pdebit(), limits=limits(**parent_limits)))
    add("Appending providers with no provider in common empties the set: nothing is allowed.",
        "caveats.md#effective-limits", [COMBINE], P.child("providers mistral"), P,
        ctx(call("mistral", "gpt-4o-mini")), deny("provider_not_allowed"))
    add("A holder appends a caveat type the verifier does not know: the token fails closed.",
        "caveats.md#decoding-a-caveat", [], P.child("region eu"), P, ctx(),
        deny("unknown_caveat"), cross=False)
    add("A holder appends a non-canonical caveat ('expires 01').",
        "caveats.md#decoding-a-caveat", [], P.child("expires 01"), P, ctx(),
        deny("invalid_caveat"), cross=False)
    add("logging full, then logging none: the most restrictive level wins.",
        "caveats.md#logging", [COMBINE], P.child("logging full", "logging none"), P, ctx(),
        allow(pdebit(), limits=limits(**parent_limits, logging="none")))
    add("logging none, then logging metadata: still none.", "caveats.md#logging", [COMBINE],
        P.child("logging none", "logging metadata"), P, ctx(),
        allow(pdebit(), limits=limits(**parent_limits, logging="none")))
    AF = P.child("ask-first email:send", "ask-first files:write")
    add("ask-first lists combine by union; a resource access using either scope needs an "
        "approval.", "caveats.md#ask-first", [COMBINE], AF, P, ctx(access("files:write")),
        deny("confirmation_required"))
    CA = P.child("confirm-above 500 EUR", "confirm-above 200 EUR", "confirm-above 300 USD")
    add("confirm-above: the smallest threshold per currency applies (200 EUR minor units, "
        "2.00 EUR); a 2.50 EUR call needs an approval.", "caveats.md#confirm-above", [COMBINE],
        CA, P,
        ctx(call(cost={"EUR": 250, "USD": 10})), deny("confirmation_required"))
    add("confirm-above limits, as combined and stated in minor units: EUR 200, USD 300; a call "
        "costing exactly 2.00 EUR and 3.00 USD is within both and allowed.",
        "caveats.md#effective-limits", [COMBINE], CA, P,
        ctx(call(cost={"EUR": 200, "USD": 300})),
        allow(pdebit(200), limits=limits(**parent_limits,
                                         confirm_above={"EUR": 200, "USD": 300})))
    NB = P.child(f"not-before {T + 100}", f"not-before {T - 100}")
    add("not-before: the latest applies (T+100); at T that is more than 60 s away.",
        "caveats.md#not-before", [COMBINE], NB, P, ctx(), deny("not_yet_valid"))
    AP = P.child("app https://a.example", "app https://b.example")
    add("app caveats are listed in token order; they never deny.", "caveats.md#app", [COMBINE],
        AP, P, ctx(), allow(pdebit(), limits=limits(**parent_limits,
                                                    apps=["https://a.example",
                                                          "https://b.example"])))
    SC = P.child("scopes files:read files:write", "scopes files:read")
    add("scopes intersect: files:write is granted by the first scopes caveat only.",
        "caveats.md#scopes", [COMBINE], SC, P, ctx(access("files:write")), deny("scope_missing"))
    add("The intersected scope files:read is granted.", "caveats.md#scopes", [COMBINE], SC, P,
        ctx(access("files:read")), allow(limits=limits(**parent_limits, scopes=["files:read"])))
    MI = P.child("max-input-tokens 4000", "max-input-tokens 9000")
    add("max-input-tokens: the smallest applies (4000); 4001 input tokens are too many.",
        "caveats.md#max-input-tokens", [COMBINE], MI, P, ctx(call(input_tokens=4001)),
        deny("input_too_large"))
    add("A child requires zero retention; the provider does not promise it.",
        "caveats.md#zero-retention", [CHAIN], P.child("zero-retention"), P, ctx(),
        deny("zero_retention_required"))
    return f


# ---------------------------------------------------------------------------------------------
# verify.json: each caveat type allowing and denying, clock skew, revocation, check order.

SKEW = flag("ClockSkew", "A time exactly at, or one second past, the 60-second leeway.")
ORDER = flag("CheckOrder", "Several checks fail; the first in reason-code order decides.")
RESOURCE = flag("ResourceAccess", "A resource access (no provider): only scopes, ask-first and "
                "time apply; no counters are debited.")
ZERO = flag("ZeroCost", "A request whose amount on a counter is 0 is never blocked by it.")
REVOKE = flag("Revocation", "The verifier's revocation list names the token id.")
EXACT = flag("ExactMatch", "Names match exactly: no case folding, no prefix matching.")
MICRO = flag("Microunits", "An amount that is not a whole number of minor units: costs and "
             "budget counters count microunits, millionths of a minor unit.")
COUNTER_ORDER = flag("CounterOrder", "Several counters do not fit the call; the denial names "
                     "the first in check order (rates, then quotas, then budgets; token order "
                     "within a kind).")


@builder
def build_verify() -> File:
    f = File("verify", [
        "Verification (spec/verification.md): every caveat type allowing and denying a",
        "request, the clock-skew boundaries, revocation, resource access versus model calls,",
        "counters, and the order in which checks run when several would fail.",
    ])
    keys = keys_json(K1)

    def add(desc: str, spec: str, flags: list[str], t: Tok, context: dict[str, Any],
            expected: dict[str, Any], cross: bool = True) -> None:
        if cross:
            crosscheck_mint(t)
        f.add(desc, spec, flags, keys=keys, **token_json(t), context=context, expected=expected)

    sk = "verification.md#clock-skew"
    nb = tok("verify-nb", f"not-before {T}")
    add("not-before T, checked at T.", "caveats.md#not-before", [VALID], nb, ctx(), allow())
    add("not-before T, checked at T-60: within the leeway.", sk, [SKEW, BOUNDARY], nb,
        ctx(now=T - 60), allow())
    add("not-before T, checked at T-61: one second beyond the leeway.", sk, [SKEW, BOUNDARY],
        nb, ctx(now=T - 61), deny("not_yet_valid"))
    ex = tok("verify-exp", f"expires {T}")
    add("expires T, checked at T-1.", "caveats.md#expires", [VALID], ex, ctx(now=T - 1), allow())
    add("expires T, checked at T+59: within the leeway.", sk, [SKEW, BOUNDARY], ex,
        ctx(now=T + 59), allow())
    add("expires T, checked at T+60: the leeway is over.", sk, [SKEW, BOUNDARY], ex,
        ctx(now=T + 60), deny("expired"))
    add("expires T, checked a day later.", "caveats.md#expires", [], ex, ctx(now=T + 86400),
        deny("expired"))
    add("Issued 60 s in the verifier's future (the minter's clock is ahead): accepted.", sk,
        [SKEW, BOUNDARY], tok("verify-future-60", issued_at=T + 60), ctx(), allow())
    add("Issued 61 s in the verifier's future.", sk, [SKEW, BOUNDARY],
        tok("verify-future-61", issued_at=T + 61), ctx(), deny("not_yet_valid"))
    add("expires 2^53-1, the largest integer a caveat may hold.", "caveats.md#integers",
        [BOUNDARY, VALID], tok("verify-max-exp", f"expires {MAX_SAFE}"), ctx(), allow())
    add("issued_at 2^53-1: parses, but lies in the future.", sk, [BOUNDARY],
        tok("verify-max-iat", issued_at=MAX_SAFE), ctx(), deny("not_yet_valid"))
    add("expires 0.", "caveats.md#expires", [], tok("verify-exp0", "expires 0"), ctx(),
        deny("expired"))
    add("not-before in the future and expires in the past: not_yet_valid is checked first.", sk,
        [ORDER], tok("verify-nb-exp", f"not-before {T + 1000}", f"expires {T - 1000}"), ctx(),
        deny("not_yet_valid"))

    shape = tok("verify-shape", "providers openai", "models gpt-4o gpt-4o-mini",
                "operations chat")
    rs = "verification.md#request-shape"
    add("Provider, model and operation all allowed.", rs, [VALID], shape, ctx(), allow())
    add("Provider anthropic is not in the providers caveat.", "caveats.md#providers", [], shape,
        ctx(call("anthropic")), deny("provider_not_allowed"))
    add("Model 'GPT-4o-mini': names are case-sensitive.", "caveats.md#models", [EXACT], shape,
        ctx(call(model="GPT-4o-mini")), deny("model_not_allowed"))
    add("Model 'gpt-4o-mini-2024-07-18': no prefix matching.", "caveats.md#models", [EXACT],
        shape, ctx(call(model="gpt-4o-mini-2024-07-18")), deny("model_not_allowed"))
    add("Model 'gpt-4': a prefix of an allowed name is not allowed.", "caveats.md#models",
        [EXACT], shape, ctx(call(model="gpt-4")), deny("model_not_allowed"))
    add("Operation embeddings is not in the operations caveat.", "caveats.md#operations", [],
        shape, ctx(call(operation="embeddings")), deny("operation_not_allowed"))
    add("Provider and model both not allowed: the provider is checked first.", rs, [ORDER],
        shape, ctx(call("anthropic", "claude-sonnet-4-5")), deny("provider_not_allowed"))
    add("A resource access with the same token: providers, models and operations apply only "
        "to model calls.", "verification.md#resource-access", [RESOURCE], shape,
        ctx(access()), allow())

    sc = tok("verify-scopes", "scopes files:read")
    add("Resource access asking for a granted scope.", "caveats.md#scopes", [RESOURCE, VALID],
        sc, ctx(access("files:read")), allow())
    add("Resource access asking for a scope not granted.", "caveats.md#scopes", [RESOURCE], sc,
        ctx(access("files:write")), deny("scope_missing"))
    add("Resource access asking for two scopes, one not granted.", "caveats.md#scopes",
        [RESOURCE], sc, ctx(access("files:read", "files:write")), deny("scope_missing"))
    add("A model call that also states a scope not granted.", "caveats.md#scopes", [], sc,
        ctx(call(scopes=("files:write",))), deny("scope_missing"))
    add("A token without a scopes caveat restricts no scope (the root grants them all).",
        "caveats.md#scopes", [RESOURCE], tok("verify-no-scopes"), ctx(access("anything:at-all")),
        allow())
    add("An empty scopes caveat grants no scope.", "caveats.md#scopes", [RESOURCE],
        tok("verify-scopes-empty", "scopes"), ctx(access("files:read")), deny("scope_missing"))

    zr = tok("verify-zr", "zero-retention")
    add("zero-retention, and the provider does not promise zero retention.",
        "caveats.md#zero-retention", [], zr, ctx(), deny("zero_retention_required"))
    add("zero-retention does not apply to a resource access.", "verification.md#resource-access",
        [RESOURCE], zr, ctx(access()), allow())

    mx = tok("verify-max", "max-input-tokens 2000", "max-output-tokens 1000")
    add("Input and output exactly at their caps.", "caveats.md#max-input-tokens",
        [BOUNDARY, VALID], mx, ctx(call(input_tokens=2000, output_tokens=1000)), allow())
    add("One input token over the cap.", "caveats.md#max-input-tokens", [BOUNDARY], mx,
        ctx(call(input_tokens=2001, output_tokens=1000)), deny("input_too_large"))
    add("One output token over the cap.", "caveats.md#max-output-tokens", [BOUNDARY], mx,
        ctx(call(input_tokens=2000, output_tokens=1001)), deny("output_too_large"))
    add("Both over their caps: input is checked first.", rs, [ORDER], mx,
        ctx(call(input_tokens=2001, output_tokens=1001)), deny("input_too_large"))

    bu = "budget b000000000000020 1000 EUR month"
    bt = tok("verify-budget", bu)
    t = bt.token_id
    k = ckey(t, bu, "2026-09")
    oct1 = utc(2026, 10, 1)
    add("Budget 10.00 EUR: 9.88 EUR used, the call needs 0.12 EUR: exactly fills it "
        "(988000000 + 12000000 = 1000000000 microunits).", "caveats.md#budget",
        [BOUNDARY, VALID], bt, ctx(counters={k: 988}),
        allow(debit("budget", t, bu, "2026-09", amount=12, limit=1000, used=988, unit="EUR",
                    resets_at=oct1)))
    add("Budget 10.00 EUR: 9.89 EUR used, the call needs 0.12 EUR.", "caveats.md#budget",
        [BOUNDARY], bt,
        ctx(counters={k: 989}),
        deny("budget_exceeded", hit("budget", t, bu, "2026-09", limit=1000, used=989,
                                    needed=12, unit="EUR", resets_at=oct1)))
    add("A EUR budget, and the request is priced only in USD.", "verification.md#counters", [],
        bt, ctx(call(cost={"USD": 12})), deny("price_unknown"))
    add("A EUR budget, and the request has no price at all.", "verification.md#counters", [],
        bt, ctx(call(cost={})), deny("price_unknown"))
    add("The budget is exhausted but the call costs 0 EUR (e.g. a local model): allowed, "
        "with a zero debit.", "verification.md#zero-cost-rule", [ZERO], bt,
        ctx(call("ollama", "llama3.1:8b", cost={"EUR": 0}), counters={k: 1000}),
        allow(debit("budget", t, bu, "2026-09", amount=0, limit=1000, used=1000, unit="EUR",
                    resets_at=oct1)))
    add("The counter is already above its limit (a settlement charged more than was "
        "reserved); a zero-cost call is still allowed.", "verification.md#zero-cost-rule",
        [ZERO], bt, ctx(call(cost={"EUR": 0}), counters={k: 1500}),
        allow(debit("budget", t, bu, "2026-09", amount=0, limit=1000, used=1500, unit="EUR",
                    resets_at=oct1)))
    add("A budget of 0 EUR: any call that costs something is denied.", "caveats.md#budget", [],
        tok("verify-budget0", "budget b000000000000021 0 EUR total"), ctx(),
        deny("budget_exceeded", hit("budget", tid("verify-budget0"),
                                    "budget b000000000000021 0 EUR total", "total", limit=0,
                                    used=0, needed=12, unit="EUR", resets_at=None)))

    qu = "token-quota a000000000000020 10000 day"
    qt = tok("verify-quota", qu)
    qk = ckey(qt.token_id, qu, "2026-09-21")
    sep22 = utc(2026, 9, 22)
    add("Quota: 8500 of 10000 tokens used; 1000 input + 500 output fills it exactly.",
        "caveats.md#token-quota", [BOUNDARY, VALID], qt, ctx(counters={qk: 8500}),
        allow(debit("quota", qt.token_id, qu, "2026-09-21", amount=1500, limit=10000,
                    used=8500, unit="tokens", resets_at=sep22)))
    add("Quota: 8501 of 10000 used.", "caveats.md#token-quota", [BOUNDARY], qt,
        ctx(counters={qk: 8501}),
        deny("quota_exceeded", hit("quota", qt.token_id, qu, "2026-09-21", limit=10000,
                                   used=8501, needed=1500, unit="tokens", resets_at=sep22)))
    add("Quota exhausted, and the call has 0 input and 0 output tokens.",
        "verification.md#zero-cost-rule", [ZERO], qt,
        ctx(call(input_tokens=0, output_tokens=0), counters={qk: 10000}),
        allow(debit("quota", qt.token_id, qu, "2026-09-21", amount=0, limit=10000,
                    used=10000, unit="tokens", resets_at=sep22)))
    ra = "rate c000000000000020 2"
    rt = tok("verify-rate", ra)
    rk = ckey(rt.token_id, ra, "2026-09-21T14:13")
    add("Rate 2 per minute, 1 call made this minute.", "caveats.md#rate", [VALID], rt,
        ctx(counters={rk: 1}),
        allow(debit("rate", rt.token_id, ra, "2026-09-21T14:13", amount=1, limit=2, used=1,
                    unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("Rate 2 per minute, 2 calls made this minute.", "caveats.md#rate", [BOUNDARY], rt,
        ctx(counters={rk: 2}),
        deny("rate_limited", hit("rate", rt.token_id, ra, "2026-09-21T14:13", limit=2, used=2,
                                 needed=1, unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("A resource access is not a model call: rates are not checked or debited.",
        "verification.md#resource-access", [RESOURCE], rt, ctx(access(), counters={rk: 2}),
        allow())
    add("Rate 0: every model call is denied (a call always counts 1).", "caveats.md#rate", [],
        tok("verify-rate0", "rate c000000000000021 0"), ctx(),
        deny("rate_limited", hit("rate", tid("verify-rate0"), "rate c000000000000021 0",
                                 "2026-09-21T14:13", limit=0, used=0, needed=1, unit="requests",
                                 resets_at=utc(2026, 9, 21, 14, 14))))

    mixed_caveats = [ra, qu, bu]
    mt = tok("verify-mixed", *mixed_caveats)
    mk = {"rate": ckey(mt.token_id, ra, "2026-09-21T14:13"),
          "quota": ckey(mt.token_id, qu, "2026-09-21"), "budget": ckey(mt.token_id, bu, "2026-09")}
    add("Rate exhausted and no EUR price: price_unknown is checked before any counter.",
        "verification.md#counters", [ORDER], mt,
        ctx(call(cost={"USD": 1}), counters={mk["rate"]: 2}), deny("price_unknown"))
    add("Rate, quota and budget all exhausted: rate_limited first.", "verification.md#counters",
        [ORDER], mt, ctx(counters={mk["rate"]: 2, mk["quota"]: 10000, mk["budget"]: 1000}),
        deny("rate_limited", hit("rate", mt.token_id, ra, "2026-09-21T14:13", limit=2, used=2,
                                 needed=1, unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("Quota and budget exhausted: quota_exceeded before budget_exceeded.",
        "verification.md#counters", [ORDER], mt,
        ctx(counters={mk["quota"]: 10000, mk["budget"]: 1000}),
        deny("quota_exceeded", hit("quota", mt.token_id, qu, "2026-09-21", limit=10000,
                                   used=10000, needed=1500, unit="tokens", resets_at=sep22)))
    ca = tok("verify-confirm", "confirm-above 500 EUR")
    add("confirm-above 500 EUR (5.00 EUR), the call costs exactly 5.00 EUR (500000000 "
        "microunits): no approval needed.",
        "caveats.md#confirm-above", [BOUNDARY, VALID], ca, ctx(call(cost={"EUR": 500})),
        allow())
    add("confirm-above 500 EUR, the call costs 5.01 EUR and carries no approval.",
        "caveats.md#confirm-above", [BOUNDARY], ca, ctx(call(cost={"EUR": 501})),
        deny("confirmation_required"))
    add("confirm-above EUR, and the call is priced only in USD.", "verification.md#counters",
        [], ca, ctx(call(cost={"USD": 1})), deny("price_unknown"))
    add("Over budget and above confirm-above: budget_exceeded (counters before confirmation).",
        "verification.md#confirmation", [ORDER],
        tok("verify-confirm-budget", "confirm-above 5 EUR", bu),
        ctx(call(cost={"EUR": 20}),
            counters={ckey(tid("verify-confirm-budget"), bu, "2026-09"): 990}),
        deny("budget_exceeded", hit("budget", tid("verify-confirm-budget"), bu, "2026-09",
                                    limit=1000, used=990, needed=20, unit="EUR",
                                    resets_at=oct1)))

    rv = tok("verify-revoked", f"expires {T - 3600}")
    rid = rv.token_id.hex()
    add("The token id is on the revocation list.", "verification.md#revocation", [REVOKE],
        tok("verify-revoked2"), ctx(revoked=(tid("verify-revoked2").hex(),)), deny("revoked"))
    add("The revocation list names other tokens only.", "verification.md#revocation",
        [REVOKE, VALID], tok("verify-revoked2"),
        ctx(revoked=(tid("other-1").hex(), tid("other-2").hex())), allow())
    add("Revoked and expired: revocation is checked before time.", "verification.md#revocation",
        [REVOKE, ORDER], rv, ctx(revoked=(rid,)), deny("revoked"))
    s = bytearray(rv.sig)
    s[5] ^= 0x10
    f.add("Revoked token id, but the signature is wrong: bad_signature (the id of a forged "
          "token is not trusted).", "verification.md#revocation", [REVOKE, ORDER, SIG],
          keys=keys, **token_json(Raw(rv.ident, rv.caveats, bytes(s))),
          context=ctx(revoked=(rid,)), expected=deny("bad_signature"))
    add("Revoked token with an unknown caveat: unknown_caveat comes first.",
        "verification.md#revocation", [REVOKE, ORDER], tok("verify-revoked3", "region eu"),
        ctx(revoked=(tid("verify-revoked3").hex(),)), deny("unknown_caveat"), cross=False)
    bad = tok("verify-badsig-unknown", "region eu")
    s = bytearray(bad.sig)
    s[0] ^= 1
    f.add("An unknown caveat in a token whose signature does not match: bad_signature (caveats "
          "are only read after the chain verifies).", "verification.md#algorithm", [ORDER, SIG],
          keys=keys, **token_json(Raw(bad.ident, bad.caveats, bytes(s))), context=ctx(),
          expected=deny("bad_signature"))

    # Microunits (appended in revision 1.1).
    short = Micros(1000 * MICROS - 1)
    add("Budget 10.00 EUR, one microunit short of full (999999999 microunits used); a call "
        "costing 1 microunit fills it exactly.", "caveats.md#budget", [MICRO, BOUNDARY, VALID],
        bt, ctx(call(cost={"EUR": Micros(1)}), counters={k: short}),
        allow(debit("budget", t, bu, "2026-09", amount=Micros(1), limit=1000, used=short,
                    unit="EUR", resets_at=oct1)))
    add("Budget 10.00 EUR, 999999999 microunits used; a call costing 2 microunits does not fit.",
        "caveats.md#budget", [MICRO, BOUNDARY], bt,
        ctx(call(cost={"EUR": Micros(2)}), counters={k: short}),
        deny("budget_exceeded", hit("budget", t, bu, "2026-09", limit=1000, used=short,
                                    needed=Micros(2), unit="EUR", resets_at=oct1)))
    add("A cheap call is debited at its price, not rounded up to a cent: 1000 input and 500 "
        "output tokens at 0.15 and 0.60 EUR per million tokens cost 0.00045 EUR, 45000 "
        "microunits.", "caveats.md#currencies", [MICRO, VALID], bt,
        ctx(call(cost={"EUR": Micros(45_000)}), counters={k: Micros(123_456_789)}),
        allow(debit("budget", t, bu, "2026-09", amount=Micros(45_000), limit=1000,
                    used=Micros(123_456_789), unit="EUR", resets_at=oct1)))
    add("confirm-above 500 EUR, the call costs 5.00 EUR and 1 microunit (500000001 "
        "microunits): above the threshold, so an approval is needed.", "caveats.md#confirm-above",
        [MICRO, BOUNDARY], ca, ctx(call(cost={"EUR": Micros(500 * MICROS + 1)})),
        deny("confirmation_required"))
    bm = f"budget b000000000000022 {MAX_MINOR} EUR total"
    tm = tok("verify-budget-max", bm)
    km = ckey(tm.token_id, bm, "total")
    add(f"The largest budget, {MAX_MINOR} EUR minor units: its limit in microunits, "
        f"{MAX_MINOR * MICROS}, is still below 2^53. One microunit short of it, a call costing "
        "1 microunit fills it exactly.", "caveats.md#budget", [MICRO, BOUNDARY, VALID], tm,
        ctx(call(cost={"EUR": Micros(1)}), counters={km: Micros(MAX_MINOR * MICROS - 1)}),
        allow(debit("budget", tm.token_id, bm, "total", amount=Micros(1), limit=MAX_MINOR,
                    used=Micros(MAX_MINOR * MICROS - 1), unit="EUR", resets_at=None)))
    add(f"The largest confirm-above, {MAX_MINOR} EUR minor units; the call costs 1 microunit "
        "more than that.", "caveats.md#confirm-above", [MICRO, BOUNDARY],
        tok("verify-confirm-max", f"confirm-above {MAX_MINOR} EUR"),
        ctx(call(cost={"EUR": Micros(MAX_MINOR * MICROS + 1)})), deny("confirmation_required"))

    # The counter a denial names (appended in revision 1.2).
    cb_, cq_, cr_ = ("budget b000000000000023 1000 EUR month",
                     "token-quota a000000000000021 10000 day", "rate c000000000000022 5")
    co = tok("verify-counter-order", cb_, cq_, cr_)
    add("Budget, quota and rate caveats in that token order; the budget and the quota are both "
        "exhausted and the rate has room. The denial is quota_exceeded and names the quota: "
        "counters are checked rate, quota, budget, whatever their order in the token.",
        "verification.md#counters", [ORDER, COUNTER_ORDER], co,
        ctx(counters={ckey(co.token_id, cb_, "2026-09"): 1000,
                      ckey(co.token_id, cq_, "2026-09-21"): 9000,
                      ckey(co.token_id, cr_, "2026-09-21T14:13"): 4}),
        deny("quota_exceeded", hit("quota", co.token_id, cq_, "2026-09-21", limit=10000,
                                   used=9000, needed=1500, unit="tokens", resets_at=sep22)))
    b1, b2 = "budget b000000000000024 500 EUR month", "budget b000000000000025 100 EUR day"
    two = tok("verify-two-budgets", b1, b2)
    k1, k2 = ckey(two.token_id, b1, "2026-09"), ckey(two.token_id, b2, "2026-09-21")
    add("Two EUR budgets, monthly then daily, and neither has room for a 0.12 EUR call: the "
        "first in token order, the monthly one, is named.", "verification.md#decision",
        [COUNTER_ORDER], two, ctx(counters={k1: 495, k2: 95}),
        deny("budget_exceeded", hit("budget", two.token_id, b1, "2026-09", limit=500, used=495,
                                    needed=12, unit="EUR", resets_at=oct1)))
    add("The same two budgets, the monthly one with room: the daily one, the counter the call "
        "does not fit, is named, with its own period key and reset time.",
        "verification.md#decision", [], two, ctx(counters={k1: 100, k2: 95}),
        deny("budget_exceeded", hit("budget", two.token_id, b2, "2026-09-21", limit=100,
                                    used=95, needed=12, unit="EUR", resets_at=sep22)))
    add(f"The largest budget, one microunit short of full; a call costing 2 microunits is "
        f"denied, and the named counter states the limit {MAX_MINOR * MICROS} and the used "
        "amount exactly.", "verification.md#decision", [MICRO, BOUNDARY], tm,
        ctx(call(cost={"EUR": Micros(2)}), counters={km: Micros(MAX_MINOR * MICROS - 1)}),
        deny("budget_exceeded", hit("budget", tm.token_id, bm, "total", limit=MAX_MINOR,
                                    used=Micros(MAX_MINOR * MICROS - 1), needed=Micros(2),
                                    unit="EUR", resets_at=None)))
    bk = "budget b000000000000026 1000 INR day Asia/Kathmandu"
    kt = tok("verify-kathmandu", bk)
    add("A daily INR budget in Asia/Kathmandu (UTC+05:45), exhausted, at 18:14 UTC on 21 "
        "September, one minute before the local day ends: the named counter has the local "
        "day's key, 2026-09-21, and resets at 18:15 UTC.", "verification.md#decision", [TZF],
        kt, ctx(call(cost={"INR": 12}), now=utc(2026, 9, 21, 18, 14),
                counters={ckey(kt.token_id, bk, "2026-09-21"): 1000}),
        deny("budget_exceeded", hit("budget", kt.token_id, bk, "2026-09-21", limit=1000,
                                    used=1000, needed=12, unit="INR",
                                    resets_at=utc(2026, 9, 21, 18, 15))))
    return f


# ---------------------------------------------------------------------------------------------
# negative.json: caveat grammar. Every token is correctly signed; only the caveat text is bad.

UNKNOWN_TYPE = flag("UnknownType", "The caveat's name is not in the registry.")
NONCANON_INT = flag("NonCanonicalInteger", "An integer with a leading zero, a sign, a point, "
                    "an exponent, or outside 0..2^53-1.")
UNSORTED = flag("UnsortedList", "A name list not in strictly ascending byte order (unsorted or "
                "with duplicates), or empty where a value is required.")
PCT = flag("PercentEncoding", "A percent-escape that is not the one canonical spelling.")
SPACE = flag("Whitespace", "A space where the grammar has none, or two where it has one.")
NONASCII = flag("NonAscii", "Bytes outside ASCII in the caveat, or a decoded value that is not "
                "UTF-8.")
ARGS = flag("ArgumentCount", "Too few or too many arguments for the caveat type.")
BADVALUE = flag("BadValue", "An argument that is not one of the values the type accepts "
                "(period, currency, time zone, nonce, logging level).")
CONTROL = flag("Control", "A valid caveat next to the invalid ones it resembles.")
AMOUNT = flag("AmountRange", f"A budget or confirm-above amount above {MAX_MINOR} minor units, "
              "whose value in microunits would pass 2^53-1.")


@builder
def build_negative() -> File:
    f = File("negative", [
        "Caveat grammar (spec/caveats.md#grammar): every token here is correctly signed under",
        "K1, so the signature never decides; the caveat bytes do. A name that is not in the",
        "registry is unknown_caveat; a registered name whose arguments are not the one",
        "canonical spelling is invalid_caveat. A few valid controls are included.",
    ])
    keys = keys_json(K1)
    n = 0

    def add(desc: str, spec: str, flags: list[str], caveats: list[bytes],
            expected: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        nonlocal n
        n += 1
        t = tok(f"negative-{n}", *caveats)
        if expected["result"] == "allow":
            crosscheck_mint(t)
        f.add(desc, spec, flags, keys=keys, **token_json(t), context=ctx(request),
              expected=expected)

    dec, gr, ints = "caveats.md#decoding-a-caveat", "caveats.md#grammar", "caveats.md#integers"
    pct, lists = "caveats.md#percent-encoding", "caveats.md#name-lists"
    unk, inv = deny("unknown_caveat"), deny("invalid_caveat")
    add("An unknown caveat type.", dec, [UNKNOWN_TYPE], [b"frobnicate 1"], unk)
    add("A conventional macaroon caveat ('time < ...'), not in the registry.", dec,
        [UNKNOWN_TYPE], [b"time < 2030-01-01T00:00Z"], unk)
    add("A registered name in upper case: names are exact.", dec, [UNKNOWN_TYPE],
        [b"Expires 1790003600"], unk)
    add("An empty caveat: its name is empty.", dec, [UNKNOWN_TYPE], [b""], unk)
    add("A tab instead of a space: the name runs to the first space, so it is "
        "'expires\\t1790003600'.", dec, [UNKNOWN_TYPE], [b"expires\t1790003600"], unk)
    add("A leading space: the name is empty.", dec, [UNKNOWN_TYPE, SPACE], [b" models a"], unk)
    add("An invalid caveat before an unknown one: unknown_caveat, since every caveat's type is "
        "checked before any caveat's arguments.", dec, [UNKNOWN_TYPE, ORDER],
        [b"expires 01", b"frobnicate 1"], unk)
    add("An unknown caveat before an invalid one.", dec, [UNKNOWN_TYPE, ORDER],
        [b"frobnicate 1", b"expires 01"], unk)
    for text, why in [(b"expires 01", "a leading zero"), (b"expires 00", "two zeros"),
                      (b"expires -1", "a sign"), (b"expires +1", "a plus sign"),
                      (b"expires 1.0", "a decimal point"), (b"expires 1e9", "an exponent"),
                      (b"expires 0x10", "hex"), (b"max-output-tokens 0100", "a leading zero"),
                      (b"expires 9007199254740992", "2^53, one past the largest allowed"),
                      (b"expires 10000000000000000", "17 digits")]:
        add(f"An integer with {why}: '{text.decode()}'.", ints, [NONCANON_INT], [text], inv)
    add("expires with no argument.", gr, [ARGS], [b"expires"], inv)
    add("expires with two arguments.", gr, [ARGS], [b"expires 1 2"], inv)
    add("not-before with no argument.", gr, [ARGS], [b"not-before"], inv)
    add("models not sorted.", lists, [UNSORTED], [b"models b a"], inv)
    add("models with a duplicate.", lists, [UNSORTED], [b"models a a"], inv)
    add("models 'a' and 'B': byte order puts 'B' (0x42) first.", lists, [UNSORTED],
        [b"models a B"], inv)
    add("Control: 'models B a' is in byte order.", lists, [CONTROL, VALID], [b"models B a"],
        allow(), call(model="a"))
    add("models 'a{' (encoded a%7B) before 'a-': sorted as encoded text but not by decoded "
        "bytes ('-' 0x2D < '{' 0x7B).", lists, [UNSORTED, PCT], [b"models a%7B a-"], inv)
    add("Control: 'models a- a%7B' is sorted by decoded bytes; the call asks for 'a{'.", lists,
        [CONTROL, VALID, PCT], [b"models a- a%7B"], allow(), call(model="a{"))
    add("models with no value.", lists, [UNSORTED, ARGS], [b"models"], inv)
    add("providers with no value.", lists, [UNSORTED, ARGS], [b"providers"], inv)
    add("operations with no value.", lists, [UNSORTED, ARGS], [b"operations"], inv)
    add("ask-first with no value.", lists, [UNSORTED, ARGS], [b"ask-first"], inv)
    add("scopes with a duplicate.", lists, [UNSORTED], [b"scopes a a"], inv)
    add("A safe character percent-encoded: %61 is 'a'.", pct, [PCT], [b"models %61"], inv)
    add("A lower-case hex escape: %2c.", pct, [PCT], [b"models a%2c"], inv)
    add("A truncated escape: 'a%2'.", pct, [PCT], [b"models a%2"], inv)
    add("A non-hex escape: 'a%ZZ'.", pct, [PCT], [b"models a%ZZ"], inv)
    add("A raw ',' (outside the safe set; would be %2C).", pct, [PCT], [b"models a,b"], inv)
    add("Raw double quotes.", pct, [PCT], [b'models "a"'], inv)
    add("Control: ',' written as %2C.", pct, [CONTROL, VALID, PCT], [b"models a%2Cb"], allow(),
        call(model="a,b"))
    add("Two spaces between arguments.", gr, [SPACE], [b"models a  b"], inv)
    add("A trailing space.", gr, [SPACE], [b"models a "], inv)
    add("Two spaces after the name.", gr, [SPACE], [b"models  a"], inv)
    add("A tab inside an argument.", gr, [SPACE], [b"models a\tb"], inv)
    add("Raw UTF-8 (é) in an argument.", gr, [NONASCII], ["models é".encode()], inv)
    add("Control: é percent-encoded as %C3%A9.", pct, [CONTROL, VALID], [b"models %C3%A9"],
        allow(), call(model="é"))
    add("A percent-encoded byte that is not UTF-8 (%FF).", pct, [NONASCII], [b"models %FF"], inv)
    add("An overlong UTF-8 encoding of '/' (%C0%AF).", pct, [NONASCII], [b"models %C0%AF"], inv)
    add("A UTF-8-encoded surrogate (%ED%A0%80).", pct, [NONASCII], [b"models %ED%A0%80"], inv)
    nonce = "b000000000000001"
    budget, reg = "caveats.md#budget", "caveats.md#"
    for text, why in [
        (f"budget {nonce} 1000 EUR fortnight", "an unknown period"),
        (f"budget {nonce} 1000 EUR minute", "period 'minute' (only rate counts minutes)"),
        (f"budget {nonce} 1000 eur month", "a lower-case currency"),
        (f"budget {nonce} 1000 XXX month", "a currency with no known exponent"),
        (f"budget {nonce} 10.00 EUR month", "a decimal amount (amounts are minor units)"),
        ("budget b00000000000001 1000 EUR month", "a 15-digit nonce"),
        ("budget B000000000000001 1000 EUR month", "an upper-case nonce"),
        (f"budget {nonce} 1000 EUR month Mars/Olympus", "an unknown time zone"),
        (f"budget {nonce} 1000 EUR month europe/berlin", "a time zone in the wrong case"),
        (f"budget {nonce} 1000 EUR month localtime",
         "'localtime', a system file, not a tz database name"),
        (f"budget {nonce} 1000 EUR month Europe%2FBerlin", "a percent-encoded '/'"),
    ]:
        add(f"budget with {why}.", budget, [BADVALUE], [text.encode()], inv)
    add("budget naming UTC explicitly: UTC is written by omitting the time zone.",
        "caveats.md#time-zones", [BADVALUE], [f"budget {nonce} 1000 EUR month UTC".encode()], inv)
    add("budget without its nonce.", budget, [ARGS], [b"budget 1000 EUR month"], inv)
    add("budget with a sixth argument.", budget, [ARGS],
        [f"budget {nonce} 1000 EUR month Europe/Berlin x".encode()], inv)
    add("token-quota with period 'hour'.", reg + "token-quota", [BADVALUE],
        [b"token-quota a000000000000001 100 hour"], inv)
    add("rate without its nonce.", reg + "rate", [ARGS], [b"rate 60"], inv)
    add("rate with a period argument (rate is always per minute).", reg + "rate", [ARGS],
        [b"rate c000000000000001 60 minute"], inv)
    add("confirm-above with an unknown currency.", reg + "confirm-above", [BADVALUE],
        [b"confirm-above 500 XXX"], inv)
    add("confirm-above without a currency.", reg + "confirm-above", [ARGS],
        [b"confirm-above 500"], inv)
    add("logging with an unknown level.", reg + "logging", [BADVALUE], [b"logging verbose"], inv)
    add("logging with no level.", reg + "logging", [ARGS], [b"logging"], inv)
    add("logging with two levels.", reg + "logging", [ARGS], [b"logging metadata none"], inv)
    add("zero-retention with an argument.", reg + "zero-retention", [ARGS],
        [b"zero-retention yes"], inv)
    add("app with no argument.", reg + "app", [ARGS], [b"app"], inv)
    add("app with two arguments (a space inside a value is written %20).", reg + "app", [ARGS],
        [b"app My App"], inv)
    names = [f"p{i:03d}".encode() for i in range(129)]
    add("providers with 128 values: the most a caveat may hold.", gr, [CONTROL, VALID, BOUNDARY],
        [b"providers " + b" ".join(names[:128])], allow(), call("p127"))
    add("providers with 129 values.", gr, [ARGS, BOUNDARY],
        [b"providers " + b" ".join(names)], inv)
    add("An unknown caveat with 129 arguments: the type is checked first.", dec,
        [UNKNOWN_TYPE, BOUNDARY], [b"frobnicate " + b" ".join(names)], unk)
    etc = f"budget {nonce} 1000 EUR month Etc/UTC"
    add("Control: 'Etc/UTC' is a tz database name, so it is accepted; it counts the same "
        "periods as omitting the zone, but it is a different caveat with its own counter.",
        "caveats.md#time-zones", [CONTROL, VALID], [etc.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), etc, "2026-09", amount=12, limit=1000,
                    unit="EUR", resets_at=utc(2026, 10, 1))))
    tot = f"budget {nonce} 1000 EUR total Europe/Berlin"
    add("Control: a time zone on a total budget is accepted and has no effect.",
        "caveats.md#budget", [CONTROL, VALID], [tot.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), tot, "total", amount=12, limit=1000,
                    unit="EUR", resets_at=None)))
    add("budget in 'Factory', the tz database's placeholder for 'zone not set', which ICU (and "
        "so JavaScript's Intl) does not have.", "caveats.md#time-zones", [BADVALUE],
        [f"budget {nonce} 1000 EUR month Factory".encode()], inv)
    # Amount range (appended in revision 1.1).
    add(f"budget with amount {MAX_MINOR + 1}, one more than the largest: its limit in "
        "microunits would pass 2^53-1.", budget, [AMOUNT, BOUNDARY],
        [f"budget {nonce} {MAX_MINOR + 1} EUR month".encode()], inv)
    add("budget with amount 9007199254740991 (2^53-1, a valid integer, far above the largest "
        "amount).", budget, [AMOUNT], [f"budget {nonce} {MAX_SAFE} EUR month".encode()], inv)
    mx = f"budget {nonce} {MAX_MINOR} JPY month"
    add(f"Control: budget with amount {MAX_MINOR}, the largest.", budget,
        [CONTROL, VALID, BOUNDARY], [mx.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), mx, "2026-09", amount=7, limit=MAX_MINOR,
                    unit="JPY", resets_at=utc(2026, 10, 1))), call(cost={"JPY": 7}))
    add(f"confirm-above with amount {MAX_MINOR + 1}, one more than the largest.",
        reg + "confirm-above", [AMOUNT, BOUNDARY],
        [f"confirm-above {MAX_MINOR + 1} EUR".encode()], inv)
    add(f"Control: confirm-above with amount {MAX_MINOR}, the largest.", reg + "confirm-above",
        [CONTROL, VALID, BOUNDARY], [f"confirm-above {MAX_MINOR} EUR".encode()], allow())
    return f


# ---------------------------------------------------------------------------------------------
# budget.json: sequences of requests against shared counters; periods and time zones.

SEQ = flag("Sequence", "Steps share counter state: after an allowed step, each debit's amount "
           "is added to its counter (absent counters start at 0).")
TZF = flag("TimeZone", "A calendar period in an IANA time zone other than UTC.")
DST = flag("DaylightSaving", "The period boundary is next to a daylight-saving transition "
           "(a local time skipped or repeated).")
ROLL = flag("PeriodRollover", "The period changes between steps, so a new counter starts.")
ISOW = flag("IsoWeek", "ISO 8601 weeks: Monday first, week-numbering year.")


@dataclass
class Step:
    now: int
    request: dict[str, Any]
    expected: dict[str, Any]
    after: dict[str, int]
    token: Tok | None = None


@builder
def build_budget() -> File:
    f = File("budget", [
        "Budgets, quotas and rates over several requests (spec/budgets.md,",
        "spec/caveats.md#periods).",
        "Each vector is a sequence: the runner verifies each step with the current counters",
        "and, if the step is allowed, adds every debit's amount to its counter before the next",
        "step. counters_after is the state after the step. A step may use another token of the",
        "same family (parent, child, sibling), which shares the token id and so the counters.",
    ])
    keys = keys_json(K1)

    def seq(desc: str, spec: str, flags: list[str], t: Tok, steps: list[Step],
            counters: dict[str, int] | None = None) -> None:
        for s in [t, *[s.token for s in steps if s.token is not None]]:
            crosscheck_mint(s)
        out = []
        for s in steps:
            step: dict[str, Any] = {}
            if s.token is not None:
                step["token"] = s.token.s
            step.update(now=s.now, request=s.request, expected=s.expected,
                        counters_after=scale_counters(s.after))
            out.append(step)
        f.add(desc, spec, [SEQ, *flags], keys=keys, **token_json(t),
              counters=scale_counters(counters or {}), steps=out)

    eur = lambda n: call(cost={"EUR": n})  # noqa: E731
    b = "budget b000000000000030 100 EUR month"
    t = tok("budget-month", b)
    k = ckey(t.token_id, b, "2026-09")
    oct1 = utc(2026, 10, 1)

    def d(amount: int, used: int) -> dict[str, Any]:
        return debit("budget", t.token_id, b, "2026-09", amount=amount, limit=100, used=used,
                     unit="EUR", resets_at=oct1)

    def dh(needed: int, used: int) -> dict[str, Any]:
        return hit("budget", t.token_id, b, "2026-09", limit=100, used=used, needed=needed,
                   unit="EUR", resets_at=oct1)

    def one(caveat: str, tt: Tok, amount: int, used: int, limit: int, unit: str) -> dict[str, Any]:
        return debit("budget", tt.token_id, caveat, "total", amount=Micros(amount), limit=limit,
                     used=Micros(used), unit=unit, resets_at=None)

    seq("A 1.00 EUR monthly budget spent down: 0.40 + 0.40 fit, a third 0.40 does not, 0.20 "
        "fills it exactly, a free call passes, then 0.01 is refused (counters in microunits: "
        "the limit is 100000000).", "budgets.md#counter-keys",
        [ZERO, BOUNDARY], t, [
            Step(T, eur(40), allow(d(40, 0)), {k: 40}),
            Step(T + 1, eur(40), allow(d(40, 40)), {k: 80}),
            Step(T + 2, eur(40), deny("budget_exceeded", dh(40, 80)), {k: 80}),
            Step(T + 3, eur(20), allow(d(20, 80)), {k: 100}),
            Step(T + 4, eur(0), allow(d(0, 100)), {k: 100}),
            Step(T + 5, eur(1), deny("budget_exceeded", dh(1, 100)), {k: 100}),
        ])
    k10 = ckey(t.token_id, b, "2026-10")
    seq("The exhausted September budget refuses a call at 23:59:59 UTC on 30 September; at "
        "00:00:00 on 1 October the key is <id>/2026-10, a fresh counter.",
        "budgets.md#period-rollover", [ROLL], t, [
            Step(utc(2026, 9, 30, 23, 59, 59), eur(10), deny("budget_exceeded", dh(10, 100)),
                 {k: 100}),
            Step(utc(2026, 10, 1), eur(10),
                 allow(debit("budget", t.token_id, b, "2026-10", amount=10, limit=100,
                             unit="EUR", resets_at=utc(2026, 11, 1))),
                 {k: 100, k10: 10}),
        ], counters={k: 100})

    def tz_seq(desc: str, flags: list[str], label: str, caveat: str, unit: str,
               points: list[tuple[int, str, int | None]], limit: int) -> None:
        """Each point: (now, expected period key, expected resets_at); each call costs 1."""
        tt = tok(label, caveat, issued_at=min(p[0] for p in points) - 3600)
        steps, state = [], {}
        kind = caveat.split(" ")[0]
        kind = {"budget": "budget", "token-quota": "quota", "rate": "rate"}[kind]
        for now, key, resets in points:
            ck = ckey(tt.token_id, caveat, key)
            used = state.get(ck, 0)
            amount = 1 if kind == "rate" else 1500 if kind == "quota" else 1
            state = {**state, ck: used + amount}
            req = call(cost={unit: 1}) if kind == "budget" else call()
            steps.append(Step(now, req, allow(debit(kind, tt.token_id, caveat, key,
                                                    amount=amount, limit=limit, used=used,
                                                    unit=unit, resets_at=resets)),
                              dict(state)))
        seq(desc, "caveats.md#periods", flags, tt, steps)

    tz_seq("A daily USD budget in America/New_York (EDT, UTC-4): 03:59 UTC is still 21 "
           "September there; 04:00 UTC starts the 22nd.", [TZF, ROLL], "budget-ny",
           "budget b000000000000031 500 USD day America/New_York", "USD", [
               (utc(2026, 9, 22, 3, 30), "2026-09-21", utc(2026, 9, 22, 4)),
               (utc(2026, 9, 22, 3, 59, 59), "2026-09-21", utc(2026, 9, 22, 4)),
               (utc(2026, 9, 22, 4), "2026-09-22", utc(2026, 9, 23, 4)),
           ], 500)
    tz_seq("A monthly EUR budget in Europe/Berlin: 22:00 UTC on 30 September is already "
           "October there (CEST, UTC+2); October ends at 23:00 UTC on the 31st, after the "
           "switch to CET (UTC+1) on the 25th.", [TZF, ROLL, DST], "budget-berlin",
           "budget b000000000000032 2000 EUR month Europe/Berlin", "EUR", [
               (utc(2026, 9, 30, 21, 59), "2026-09", utc(2026, 9, 30, 22)),
               (utc(2026, 9, 30, 22), "2026-10", utc(2026, 10, 31, 23)),
           ], 2000)
    tz_seq("ISO weeks in UTC: Friday 1 January 2027 and Sunday 3 January belong to week 53 "
           "of 2026; Monday 4 January starts 2027-W01.", [ISOW, ROLL], "budget-week",
           "token-quota a000000000000030 100000 week", "tokens", [
               (utc(2027, 1, 1, 12), "2026-W53", utc(2027, 1, 4)),
               (utc(2027, 1, 3, 23, 59, 59), "2026-W53", utc(2027, 1, 4)),
               (utc(2027, 1, 4), "2027-W01", utc(2027, 1, 11)),
           ], 100000)
    tz_seq("A yearly NZD budget in Pacific/Auckland (NZDT, UTC+13): 2027 begins there at "
           "11:00 UTC on 31 December 2026.", [TZF, ROLL], "budget-auckland",
           "budget b000000000000033 100000 NZD year Pacific/Auckland", "NZD", [
               (utc(2026, 12, 31, 10, 59), "2026", utc(2026, 12, 31, 11)),
               (utc(2026, 12, 31, 11), "2027", utc(2027, 12, 31, 11)),
           ], 100000)
    tz_seq("A daily budget in Asia/Kathmandu (UTC+05:45): days turn at 18:15 UTC.", [TZF, ROLL],
           "budget-kathmandu", "budget b000000000000034 1000 INR day Asia/Kathmandu", "INR", [
               (utc(2026, 9, 21, 18, 14), "2026-09-21", utc(2026, 9, 21, 18, 15)),
               (utc(2026, 9, 21, 18, 15), "2026-09-22", utc(2026, 9, 22, 18, 15)),
           ], 1000)
    tz_seq("A daily quota in America/St_Johns (NDT, UTC-02:30): days turn at 02:30 UTC.",
           [TZF, ROLL], "budget-stjohns", "token-quota a000000000000031 50000 day America/St_Johns",
           "tokens", [
               (utc(2026, 9, 22, 2, 29), "2026-09-21", utc(2026, 9, 22, 2, 30)),
               (utc(2026, 9, 22, 2, 30), "2026-09-22", utc(2026, 9, 23, 2, 30)),
           ], 50000)
    tz_seq("America/New_York springs forward on Sunday 8 March 2026: Saturday the 7th ends at "
           "05:00 UTC (EST), the 23-hour Sunday ends at 04:00 UTC on the 9th (EDT).",
           [TZF, DST], "budget-ny-dst", "budget b000000000000035 500 USD day America/New_York",
           "USD", [
               (utc(2026, 3, 7, 12), "2026-03-07", utc(2026, 3, 8, 5)),
               (utc(2026, 3, 8, 12), "2026-03-08", utc(2026, 3, 9, 4)),
           ], 500)
    tz_seq("America/Santiago skips local midnight on 6 September 2026 (00:00 -04 becomes "
           "01:00 -03): the 6th begins at 04:00 UTC, the instant the gap ends.",
           [TZF, DST, ROLL], "budget-santiago",
           "budget b000000000000036 5000 CLP day America/Santiago", "CLP", [
               (utc(2026, 9, 5, 12), "2026-09-05", utc(2026, 9, 6, 4)),
               (utc(2026, 9, 6, 3, 59), "2026-09-05", utc(2026, 9, 6, 4)),
               (utc(2026, 9, 6, 4), "2026-09-06", utc(2026, 9, 7, 3)),
           ], 5000)
    tz_seq("America/Havana repeats the hour after midnight on 1 November 2026 (01:00 CDT "
           "becomes 00:00 CST): the day begins at the first midnight, 04:00 UTC, and both "
           "00:30s belong to the 1st.", [TZF, DST, ROLL], "budget-havana",
           "budget b000000000000037 900 USD day America/Havana", "USD", [
               (utc(2026, 11, 1, 3, 59), "2026-10-31", utc(2026, 11, 1, 4)),
               (utc(2026, 11, 1, 4, 30), "2026-11-01", utc(2026, 11, 2, 5)),
               (utc(2026, 11, 1, 5, 30), "2026-11-01", utc(2026, 11, 2, 5)),
           ], 900)
    tz_seq("A total budget: one counter for ever, key 'total', no reset.", [], "budget-total",
           "budget b000000000000038 5000 EUR total", "EUR", [
               (T, "total", None),
               (utc(2030, 1, 1), "total", None),
           ], 5000)
    tz_seq("A rate of 3 per minute counts UTC minutes; the key names the minute "
           "(YYYY-MM-DDTHH:MM).", [ROLL], "budget-rate",
           "rate c000000000000030 3", "requests", [
               (utc(2026, 9, 21, 14, 13), "2026-09-21T14:13", utc(2026, 9, 21, 14, 14)),
               (utc(2026, 9, 21, 14, 13, 59), "2026-09-21T14:13", utc(2026, 9, 21, 14, 14)),
               (utc(2026, 9, 21, 14, 14), "2026-09-21T14:14", utc(2026, 9, 21, 14, 15)),
           ], 3)

    r = "rate c000000000000031 2"
    rt = tok("budget-rate-limit", r)
    rk13, rk14 = (ckey(rt.token_id, r, "2026-09-21T14:13"), ckey(rt.token_id, r,
                                                                  "2026-09-21T14:14"))

    def rd(key: str, used: int, resets: int) -> dict[str, Any]:
        return debit("rate", rt.token_id, r, key, amount=1, limit=2, used=used, unit="requests",
                     resets_at=resets)

    m14, m15 = utc(2026, 9, 21, 14, 14), utc(2026, 9, 21, 14, 15)
    seq("Rate 2 per minute: a third call in the same minute is refused, the next minute "
        "is fresh; a resource access is not counted.", "caveats.md#rate", [ROLL, RESOURCE], rt, [
            Step(utc(2026, 9, 21, 14, 13), call(), allow(rd("2026-09-21T14:13", 0, m14)),
                 {rk13: 1}),
            Step(utc(2026, 9, 21, 14, 13, 30), call(), allow(rd("2026-09-21T14:13", 1, m14)),
                 {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 13, 59), call(),
                 deny("rate_limited", hit("rate", rt.token_id, r, "2026-09-21T14:13", limit=2,
                                          used=2, needed=1, unit="requests", resets_at=m14)),
                 {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 13, 59), access(), allow(), {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 14), call(), allow(rd("2026-09-21T14:14", 0, m15)),
                 {rk13: 2, rk14: 1}),
        ])

    q = "token-quota a000000000000032 3000 day"
    qt = tok("budget-quota", q)
    qk = ckey(qt.token_id, q, "2026-09-21")

    def qd(amount: int, used: int) -> dict[str, Any]:
        return debit("quota", qt.token_id, q, "2026-09-21", amount=amount, limit=3000, used=used,
                     unit="tokens", resets_at=utc(2026, 9, 22))

    seq("A daily token quota counts input + output tokens: 1500 + 1500 fill 3000; a call "
        "with no tokens still passes.", "caveats.md#token-quota", [ZERO], qt, [
            Step(T, call(input_tokens=1000, output_tokens=500), allow(qd(1500, 0)), {qk: 1500}),
            Step(T + 1, call(input_tokens=1200, output_tokens=300), allow(qd(1500, 1500)),
                 {qk: 3000}),
            Step(T + 2, call(input_tokens=1, output_tokens=0),
                 deny("quota_exceeded", hit("quota", qt.token_id, q, "2026-09-21", limit=3000,
                                            used=3000, needed=1, unit="tokens",
                                            resets_at=utc(2026, 9, 22))),
                 {qk: 3000}),
            Step(T + 3, call(input_tokens=0, output_tokens=0), allow(qd(0, 3000)), {qk: 3000}),
        ])

    pb, cb, gb = ("budget b000000000000040 1000 EUR month", "budget b000000000000041 300 EUR month",
                  "budget b000000000000042 100 EUR month")
    P = tok("budget-family", pb)
    C = P.child(cb)
    G = C.child(gb)
    ft = P.token_id
    kp, kc, kg = (ckey(ft, x, "2026-09") for x in (pb, cb, gb))

    def fd(caveat: str, limit: int, amount: int, used: int) -> dict[str, Any]:
        return debit("budget", ft, caveat, "2026-09", amount=amount, limit=limit, used=used,
                     unit="EUR", resets_at=oct1)

    def fh(caveat: str, limit: int, needed: int, used: int) -> dict[str, Any]:
        return hit("budget", ft, caveat, "2026-09", limit=limit, used=used, needed=needed,
                   unit="EUR", resets_at=oct1)

    seq("Parent (10.00 EUR), child (+3.00 EUR) and grandchild (+1.00 EUR) share counters: the "
        "grandchild's spend is debited on all three budgets, so no level outspends the one "
        "above it.", "budgets.md#attenuation-and-budgets", [CHAIN], P, [
            Step(T, eur(100), allow(fd(pb, 1000, 100, 0), fd(cb, 300, 100, 0),
                                    fd(gb, 100, 100, 0)), {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 1, eur(1), deny("budget_exceeded", fh(gb, 100, 1, 100)),
                 {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 2, eur(0), allow(fd(pb, 1000, 0, 100), fd(cb, 300, 0, 100),
                                      fd(gb, 100, 0, 100)), {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 3, eur(200), allow(fd(pb, 1000, 200, 100), fd(cb, 300, 200, 100)),
                 {kp: 300, kc: 300, kg: 100}, C),
            Step(T + 4, eur(1), deny("budget_exceeded", fh(cb, 300, 1, 300)),
                 {kp: 300, kc: 300, kg: 100}, C),
            Step(T + 5, eur(700), allow(fd(pb, 1000, 700, 300)), {kp: 1000, kc: 300, kg: 100}),
            Step(T + 6, eur(1), deny("budget_exceeded", fh(pb, 1000, 1, 1000)),
                 {kp: 1000, kc: 300, kg: 100}),
        ])
    sa, sb = "budget b0000000000000a4 600 EUR month", "budget b0000000000000b4 600 EUR month"
    A, B = P.child(sa), P.child(sb)
    ka, kb = ckey(ft, sa, "2026-09"), ckey(ft, sb, "2026-09")
    seq("Siblings with equal limits and different nonces: each has its own 6.00 EUR counter, "
        "and both draw on the parent's 10.00 EUR.", "budgets.md#siblings", [SIBLING], P, [
            Step(T, eur(600), allow(fd(pb, 1000, 600, 0), fd(sa, 600, 600, 0)),
                 {kp: 600, ka: 600}, A),
            Step(T + 1, eur(600), deny("budget_exceeded", fh(pb, 1000, 600, 600)),
                 {kp: 600, ka: 600}, B),
            Step(T + 2, eur(400), allow(fd(pb, 1000, 400, 600), fd(sb, 600, 400, 0)),
                 {kp: 1000, ka: 600, kb: 400}, B),
            Step(T + 3, eur(1), deny("budget_exceeded", fh(pb, 1000, 1, 1000)),
                 {kp: 1000, ka: 600, kb: 400}, A),
        ])
    ss = "budget b0000000000000c4 600 EUR month"
    S1, S2 = P.child(ss), P.child(ss)
    ks = ckey(ft, ss, "2026-09")
    seq("Two siblings given byte-identical budget caveats (same nonce) share one counter: "
        "what one spends, the other cannot. Minters give each grant a fresh nonce.",
        "budgets.md#identical-caveats", [SIBLING], P, [
            Step(T, eur(600), allow(fd(pb, 1000, 600, 0), fd(ss, 600, 600, 0)),
                 {kp: 600, ks: 600}, S1),
            Step(T + 1, eur(1), deny("budget_exceeded", fh(ss, 600, 1, 600)),
                 {kp: 600, ks: 600}, S2),
        ])
    db = "budget b000000000000043 100 EUR month"
    dt_ = tok("budget-dup", db, db)
    kd = ckey(dt_.token_id, db, "2026-09")
    seq("A token holding the same budget caveat twice debits its one counter once per call.",
        "budgets.md#identical-caveats", [], dt_, [
            Step(T, eur(60), allow(debit("budget", dt_.token_id, db, "2026-09", amount=60,
                                         limit=100, unit="EUR", resets_at=oct1)), {kd: 60}),
            Step(T + 1, eur(40), allow(debit("budget", dt_.token_id, db, "2026-09", amount=40,
                                             limit=100, used=60, unit="EUR", resets_at=oct1)),
                 {kd: 100}),
        ])
    be, bd = "budget b000000000000044 100 EUR month", "budget b000000000000045 100 USD month"
    mt = tok("budget-multi", be, bd)
    ke, ku = ckey(mt.token_id, be, "2026-09"), ckey(mt.token_id, bd, "2026-09")
    seq("Budgets in two currencies: the request is priced in both and both are debited; a "
        "request priced only in EUR is price_unknown.", "verification.md#counters", [], mt, [
            Step(T, call(cost={"EUR": 60, "USD": 65}),
                 allow(debit("budget", mt.token_id, be, "2026-09", amount=60, limit=100,
                             unit="EUR", resets_at=oct1),
                       debit("budget", mt.token_id, bd, "2026-09", amount=65, limit=100,
                             unit="USD", resets_at=oct1)), {ke: 60, ku: 65}),
            Step(T + 1, call(cost={"EUR": 30}), deny("price_unknown"), {ke: 60, ku: 65}),
            Step(T + 2, call(cost={"EUR": 30, "USD": 40}),
                 deny("budget_exceeded", hit("budget", mt.token_id, bd, "2026-09", limit=100,
                                             used=65, needed=40, unit="USD", resets_at=oct1)),
                 {ke: 60, ku: 65}),
        ])

    # Microunits (appended in revision 1.1).
    bc = "budget b000000000000046 1 USD total"
    ct = tok("budget-cent", bc)
    kc_ = ckey(ct.token_id, bc, "total")
    usd = lambda n: call(cost={"USD": Micros(n)})  # noqa: E731
    seq("A budget of one cent (1 USD minor unit, 1000000 microunits) pays for several cheap "
        "calls: three of 0.003 USD fit, a fourth does not, 0.001 USD fills it exactly, then "
        "1 microunit is refused. Counted in whole cents, the first call alone would have "
        "used it up.", "caveats.md#currencies", [MICRO, BOUNDARY], ct, [
            Step(T, usd(300_000), allow(one(bc, ct, 300_000, 0, 1, "USD")),
                 {kc_: Micros(300_000)}),
            Step(T + 1, usd(300_000), allow(one(bc, ct, 300_000, 300_000, 1, "USD")),
                 {kc_: Micros(600_000)}),
            Step(T + 2, usd(300_000), allow(one(bc, ct, 300_000, 600_000, 1, "USD")),
                 {kc_: Micros(900_000)}),
            Step(T + 3, usd(300_000),
                 deny("budget_exceeded", hit("budget", ct.token_id, bc, "total", limit=1,
                                             used=Micros(900_000), needed=Micros(300_000),
                                             unit="USD", resets_at=None)),
                 {kc_: Micros(900_000)}),
            Step(T + 4, usd(100_000), allow(one(bc, ct, 100_000, 900_000, 1, "USD")),
                 {kc_: Micros(1_000_000)}),
            Step(T + 5, usd(1),
                 deny("budget_exceeded", hit("budget", ct.token_id, bc, "total", limit=1,
                                             used=Micros(1_000_000), needed=Micros(1),
                                             unit="USD", resets_at=None)),
                 {kc_: Micros(1_000_000)}),
        ])
    by = "budget b000000000000047 1 JPY total"
    yt = tok("budget-yen", by)
    ky = ckey(yt.token_id, by, "total")
    jpy = lambda n: call(cost={"JPY": Micros(n)})  # noqa: E731
    seq("JPY has no minor unit (exponent 0), so a microunit is a millionth of a yen: a 1 JPY "
        "budget takes two calls of 0.4 yen (400000 microunits), refuses a third, and 0.2 yen "
        "fills it.", "caveats.md#currencies", [MICRO, BOUNDARY], yt, [
            Step(T, jpy(400_000), allow(one(by, yt, 400_000, 0, 1, "JPY")),
                 {ky: Micros(400_000)}),
            Step(T + 1, jpy(400_000), allow(one(by, yt, 400_000, 400_000, 1, "JPY")),
                 {ky: Micros(800_000)}),
            Step(T + 2, jpy(400_000),
                 deny("budget_exceeded", hit("budget", yt.token_id, by, "total", limit=1,
                                             used=Micros(800_000), needed=Micros(400_000),
                                             unit="JPY", resets_at=None)),
                 {ky: Micros(800_000)}),
            Step(T + 3, jpy(200_000), allow(one(by, yt, 200_000, 800_000, 1, "JPY")),
                 {ky: Micros(1_000_000)}),
        ])
    return f


# ---------------------------------------------------------------------------------------------
# approval.json: confirm-above and ask-first, the approval format, the request digest.

APPROVAL_F = flag("Approval", "The request carries an approval (cwa1_...); 'approval' gives "
                  "the fields it was issued from, so it can be rebuilt and compared.")
DIGEST_F = flag("RequestDigest", "'request_digest' gives a method, path and body and the "
                "SHA-256 request digest they must produce.")
BAD_APPROVAL = flag("BadApproval", "An approval that is expired, for another token or request, "
                    "under the wrong key, tampered or malformed.")
ASK = flag("AskFirst", "A scope named by ask-first is used.")


@builder
def build_approval() -> File:
    f = File("approval", [
        "Approvals (spec/approvals.md): a confirm-above or ask-first caveat makes a request wait",
        "for the user; the wallet then issues an approval bound to the token id, a digest of",
        "the exact request, and an expiry, MAC'd under a key derived from the token's root key.",
        "Single use is enforced by the store, not by these vectors: an allowed decision names",
        "the approval id to consume.",
    ])
    keys = keys_json(K1)
    body = (b'{"model":"gpt-4o","max_tokens":4000,'
            b'"messages":[{"role":"user","content":"Summarise this book."}]}')
    path = "/v1/chat/completions"
    D = digest_of("POST", path, body)
    rd = {"method": "POST", "path": path, "body_hex": body.hex(), "digest": D.hex()}
    TA = tok("approval-confirm", "confirm-above 500 EUR")
    crosscheck_mint(TA)
    aid = _h("approval-id/1")[:16]
    exp = T + 300

    def issue(key: RootKey, token_id: bytes, digest: bytes, expires: int,
              approval_id: bytes = aid) -> tuple[str, dict[str, Any]]:
        body_ = approval_body(key.key_id, approval_id, token_id, digest, expires)
        mac = approval_mac(key.secret, body_)
        text = approval_str(body_ + mac)
        impl = approvals.issue(key, token_id, digest, expires, approval_id=approval_id)
        if impl.serialize() != text:
            raise SystemExit("approvals.issue disagrees with the independent encoder")
        return text, {"key_id": key.key_id.hex(), "approval_id": approval_id.hex(),
                      "token_id": token_id.hex(), "digest": digest.hex(), "expires": expires,
                      "approval_key": hmac256(key.secret, b"capwallet-approval-v1").hex(),
                      "hex": (body_ + mac).hex(), "mac": mac.hex(), "string": text}

    good, good_info = issue(K1, TA.token_id, D, exp)

    def big(approval: str | None, digest: bytes | None = D, cost: int = 900) -> dict[str, Any]:
        return call(model="gpt-4o", output_tokens=4000, cost={"EUR": cost}, approval=approval,
                    digest=digest)

    def add(desc: str, spec: str, flags: list[str], t: Tok, context: dict[str, Any],
            expected: dict[str, Any], info: dict[str, Any] | None = None,
            digest: dict[str, Any] | None = None, keyring_: list[dict[str, str]] = keys) -> None:
        extra: dict[str, Any] = {}
        if info is not None:
            extra["approval"] = info
        if digest is not None:
            extra["request_digest"] = digest
        f.add(desc, spec, flags, keys=keyring_, **token_json(t), **extra, context=context,
              expected=expected)

    ca, ck = "approvals.md#when-an-approval-is-needed", "approvals.md#checking-an-approval"
    add("A 9.00 EUR call above confirm-above 5.00 EUR, with a valid approval for this token "
        "and this exact request. The decision names the approval id to consume.", ck,
        [APPROVAL_F, DIGEST_F, VALID], TA, ctx(big(good)), allow(approval_id=aid.hex()),
        good_info, rd)
    add("The same call without an approval.", ca, [], TA, ctx(big(None)),
        deny("confirmation_required"))
    add("The method is upper-cased before hashing: 'post' gives the same digest as 'POST'.",
        "approvals.md#request-digest", [APPROVAL_F, DIGEST_F, VALID], TA, ctx(big(good)),
        allow(approval_id=aid.hex()), good_info, {**rd, "method": "post"})
    add("Checked one second before the approval expires.", ck, [APPROVAL_F, BOUNDARY, VALID], TA,
        ctx(big(good), now=exp - 1), allow(approval_id=aid.hex()), good_info)
    add("Checked at the second the approval expires (approvals get no clock leeway).", ck,
        [APPROVAL_F, BOUNDARY, BAD_APPROVAL], TA, ctx(big(good), now=exp),
        deny("approval_invalid"), good_info)
    other, other_info = issue(K1, tid("approval-someone-else"), D, exp)
    add("An approval issued for another token id.", ck, [APPROVAL_F, BAD_APPROVAL], TA,
        ctx(big(other)), deny("approval_invalid"), other_info)
    D2 = digest_of("POST", path, body.replace(b"4000", b"8000"))
    odig, odig_info = issue(K1, TA.token_id, D2, exp)
    add("An approval for a different request (the body asks for 8000 tokens, not 4000).", ck,
        [APPROVAL_F, BAD_APPROVAL, DIGEST_F], TA, ctx(big(odig)), deny("approval_invalid"),
        odig_info, {"method": "POST", "path": path,
                    "body_hex": body.replace(b"4000", b"8000").hex(), "digest": D2.hex()})
    add("A valid approval, but the request states no digest.", ck, [APPROVAL_F, BAD_APPROVAL],
        TA, ctx(big(good, digest=None)), deny("approval_invalid"), good_info)
    raw = bytearray(bytes.fromhex(good_info["hex"]))
    raw[-1] ^= 1
    add("The approval's MAC with one bit flipped.", ck, [BAD_APPROVAL], TA,
        ctx(big(approval_str(bytes(raw)))), deny("approval_invalid"))
    raw = bytearray(bytes.fromhex(good_info["hex"]))
    raw[80] ^= 1  # the last byte of expires
    add("The approval's expiry changed without re-MACing.", ck, [BAD_APPROVAL], TA,
        ctx(big(approval_str(bytes(raw)))), deny("approval_invalid"))
    k9, k9_info = issue(K9, TA.token_id, D, exp)
    add("An approval under a root key the verifier does not hold.", ck,
        [APPROVAL_F, BAD_APPROVAL], TA, ctx(big(k9)), deny("approval_invalid"), k9_info)
    k2, k2_info = issue(K2, TA.token_id, D, exp)
    add("An approval under K2, which the verifier holds, for a token minted under K1: an "
        "approval must be made under the token's own root key.", ck,
        [APPROVAL_F, BAD_APPROVAL, ROTATION], TA, ctx(big(k2)), deny("approval_invalid"),
        k2_info, keyring_=keys_json(K1, K2))
    fmt = "approvals.md#approval-format"
    gb = bytes.fromhex(good_info["hex"])
    for text, why in [
        ("cwt1_" + good[5:], "the token prefix 'cwt1_' instead of 'cwa1_'"),
        (good + "=", "'=' padding"),
        (approval_str(gb[:-1]), "112 bytes (one MAC byte missing)"),
        (approval_str(gb + b"\x00"), "114 bytes"),
        ("cwa1_" + good[5:].replace("-", "+").replace("_", "/"), "the standard base64 alphabet")
        if ("-" in good[5:] or "_" in good[5:]) else (good + "\n", "a trailing newline"),
        ("", "nothing in it"),
    ]:
        add(f"An approval string with {why}.", fmt, [BAD_APPROVAL], TA, ctx(big(text)),
            deny("approval_invalid"))
    assert len(gb) % 3 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(good[-1])
    add("An approval whose last base64url character has a non-zero trailing bit.", fmt,
        [BAD_APPROVAL], TA, ctx(big(good[:-1] + alphabet[last + 1])), deny("approval_invalid"))
    v2body = approval_body(K1.key_id, aid, TA.token_id, D, exp, version=2)
    add("An approval with version byte 0x02, correctly MAC'd.", fmt, [BAD_APPROVAL], TA,
        ctx(big(approval_str(v2body + approval_mac(K1.secret, v2body)))),
        deny("approval_invalid"))
    hb = approval_body(K1.key_id, aid, TA.token_id, D, MAX_SAFE + 1)
    add("An approval expiring at 2^53, correctly MAC'd: out of range.", fmt,
        [BAD_APPROVAL, BOUNDARY], TA, ctx(big(approval_str(hb + approval_mac(K1.secret, hb)))),
        deny("approval_invalid"))
    add("A 4.00 EUR call (not above the threshold) with an approval: allowed without using "
        "the approval, which is not consumed.", ca, [APPROVAL_F], TA, ctx(big(good, cost=400)),
        allow(), good_info)
    add("A 4.00 EUR call with a malformed approval: the approval is not examined when none is "
        "needed.", ca, [], TA, ctx(big("cwa1_garbage", cost=400)), allow())
    bud = "budget b000000000000050 1000 EUR month"
    TB = tok("approval-budget", "confirm-above 500 EUR", bud)
    crosscheck_mint(TB)
    bgood, binfo = issue(K1, TB.token_id, D, exp)
    add("A valid approval does not lift a budget: 9.00 EUR with 2.00 EUR left.",
        "verification.md#confirmation", [APPROVAL_F, ORDER], TB,
        ctx(big(bgood), counters={ckey(TB.token_id, bud, "2026-09"): 800}),
        deny("budget_exceeded", hit("budget", TB.token_id, bud, "2026-09", limit=1000, used=800,
                                    needed=900, unit="EUR", resets_at=utc(2026, 10, 1))),
        binfo)
    add("With room in the budget, the same approval is accepted; the budget is debited and "
        "the approval id is named for consumption.", "verification.md#confirmation",
        [APPROVAL_F, VALID], TB, ctx(big(bgood)),
        allow(debit("budget", TB.token_id, bud, "2026-09", amount=900, limit=1000, unit="EUR",
                    resets_at=utc(2026, 10, 1)), approval_id=aid.hex()), binfo)
    add("A valid approval on an expired token: expired.", "verification.md#algorithm",
        [APPROVAL_F, ORDER], TA.child(f"expires {T - 3600}"), ctx(big(good)), deny("expired"),
        good_info)
    child = TA.child("models gpt-4o")
    crosscheck_mint(child)
    add("An approval issued for the parent's token id also serves its child: the whole "
        "attenuation chain shares one token id.", ck, [APPROVAL_F, CHAIN, VALID], child,
        ctx(big(good)), allow(approval_id=aid.hex()), good_info)

    TS = tok("approval-ask", "scopes email:send files:read", "ask-first email:send")
    crosscheck_mint(TS)
    mbody = b'{"to":"bob@example.com","subject":"Minutes"}'
    MD = digest_of("POST", "/mail/send", mbody)
    mrd = {"method": "POST", "path": "/mail/send", "body_hex": mbody.hex(), "digest": MD.hex()}
    aid2 = _h("approval-id/2")[:16]
    ma, ma_info = issue(K1, TS.token_id, MD, exp, aid2)
    af = "caveats.md#ask-first"
    add("A resource access using the ask-first scope email:send without an approval.", af,
        [ASK, RESOURCE], TS, ctx(access("email:send")), deny("confirmation_required"))
    add("The same access with an approval for this exact request.", af,
        [ASK, RESOURCE, APPROVAL_F, DIGEST_F, VALID], TS,
        ctx(access("email:send", approval=ma, digest=MD)), allow(approval_id=aid2.hex()),
        ma_info, mrd)
    add("A resource access using only files:read needs no approval.", af, [RESOURCE, VALID], TS,
        ctx(access("files:read")), allow())
    add("A model call that states the ask-first scope needs an approval too.", af, [ASK], TS,
        ctx(call(scopes=("email:send",))), deny("confirmation_required"))
    add("An approval for the mail request presented for a different mail body.", ck,
        [ASK, RESOURCE, APPROVAL_F, BAD_APPROVAL], TS,
        ctx(access("email:send", approval=ma,
                   digest=digest_of("POST", "/mail/send", mbody.replace(b"bob", b"eve")))),
        deny("approval_invalid"), ma_info)
    return f


# ---------------------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    FLAGS_SNAPSHOT = dict(FLAGS)
    files: dict[str, str] = {}
    for build in BUILDERS:
        f = build()
        for v in f.tests:
            check_vector(v)
        files[f.name + ".json"] = render(f.document())
    assert FLAGS == FLAGS_SNAPSHOT, "flags must be declared at module level"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if any file would change")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT / name).exists() or (OUT / name).read_text("utf-8") != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        for name in stale:
            print(f"{name}: differs from what the generator produces", file=sys.stderr)
        for name in extra:
            print(f"{name}: not produced by the generator", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text, "utf-8")
    total = sum(json.loads(t)["numberOfTests"] for t in files.values())
    print(f"wrote {len(files)} files, {total} vectors, to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
