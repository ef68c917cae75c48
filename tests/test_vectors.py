"""Conformance: run every vector in test_vectors/v1 against the Python implementation.

This runner reads only the JSON files (and spec/), never the generator, so it is the same
check another implementation would make. It also validates each file against the JSON Schema,
checks that the vectors cover every reason code and caveat type and point at real spec
sections, and that regenerating the vectors would change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet import macaroon
from capwallet.identifier import Identifier
from capwallet.keys import Keyring, RootKey
from capwallet.reasons import Reason, TokenError
from capwallet.token import Token
from capwallet.verify import Decision, Request, verify

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "test_vectors" / "v1"
SPEC = REPO / "spec"
FILES = ("encoding", "mint", "attenuate", "verify", "negative", "budget", "approval")


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text("utf-8"))
    return data


DOCS = {name: _load(name) for name in FILES}
ALL = [v for name in FILES for v in DOCS[name]["tests"]]


def _expectations(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["expected"] for s in v["steps"]] if "steps" in v else [v["expected"]]


# --- the files as a whole ------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_file_matches_schema(name: str) -> None:
    schema = json.loads((SPEC / "test-vectors.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(DOCS[name])


@pytest.mark.parametrize("name", FILES)
def test_file_header_is_consistent(name: str) -> None:
    doc = DOCS[name]
    tests = doc["tests"]
    assert doc["numberOfTests"] == len(tests)
    assert [t["id"] for t in tests] == [f"{name}-{i:03d}" for i in range(1, len(tests) + 1)]
    used = {f for t in tests for f in t["flags"]}
    assert used == set(doc["notes"]), "notes must describe exactly the flags used"


def test_at_least_100_vectors() -> None:
    assert len(ALL) >= 100


def test_every_reason_code_is_expected_somewhere() -> None:
    seen = {e["reason"] for v in ALL for e in _expectations(v) if e["result"] == "deny"}
    assert seen == {r.value for r in Reason}


def test_every_counter_kind_is_named_by_a_denial() -> None:
    """Each kind of counter denial names its counter in some vector (the schema requires the
    counter on every counter denial and forbids it on any other)."""
    named = {(e["counter"]["kind"], e["reason"]) for v in ALL for e in _expectations(v)
             if "counter" in e}
    assert named == {("rate", "rate_limited"), ("quota", "quota_exceeded"),
                     ("budget", "budget_exceeded")}


def test_every_caveat_type_allows_and_denies() -> None:
    """Each registered type appears in an allowed vector and in a denied one."""
    def names(v: dict[str, Any]) -> set[str]:
        return {bytes.fromhex(c["hex"]).split(b" ", 1)[0].decode("ascii", "replace")
                for c in v.get("caveats", [])}

    allowed = {n for v in ALL if any(e["result"] == "allow" for e in _expectations(v))
               for n in names(v)}
    denied = {n for v in ALL if any(e["result"] == "deny" for e in _expectations(v))
              for n in names(v)}
    assert set(cav.REGISTRY) <= allowed
    assert set(cav.REGISTRY) <= denied


def _anchors(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text("utf-8").splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_spec_references_exist() -> None:
    cache: dict[str, set[str]] = {}
    for v in ALL:
        file, anchor = v["spec"].split("#")
        path = SPEC / file
        assert path.exists(), f"{v['id']}: no spec/{file}"
        if file not in cache:
            cache[file] = _anchors(path)
        assert anchor in cache[file], f"{v['id']}: spec/{file} has no section #{anchor}"


def test_spec_examples_are_real_vectors() -> None:
    """Every token, approval and hex example quoted in spec/ comes from a vector file."""
    corpus = "".join((VECTORS / f"{n}.json").read_text("utf-8") for n in FILES)
    quoted = set()
    for path in SPEC.glob("*.md"):
        text = path.read_text("utf-8")
        quoted |= set(re.findall(r"cw[ta]1_[A-Za-z0-9_-]{20,}", text))
        quoted |= {h for h in re.findall(r"\b[0-9a-f]{64,}\b", text)}
    assert quoted, "the spec quotes at least one example"
    missing = sorted(q for q in quoted if q not in corpus)
    assert not missing, f"spec examples not found in any vector: {missing}"


def test_generator_would_change_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "test_vectors" / "generate.py"), "--check"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout


# --- one vector ----------------------------------------------------------------------------


def _keyring(v: dict[str, Any]) -> Keyring:
    return Keyring(RootKey(bytes.fromhex(k["key_id"]), bytes.fromhex(k["root_key"]))
                   for k in v["keys"])


def _request(r: dict[str, Any]) -> Request:
    model_call = r["kind"] == "model_call"
    return Request(
        provider=r["provider"] if model_call else None,
        model=r["model"] if model_call else None,
        operation=r["operation"] if model_call else None,
        scopes=tuple(r["scopes"]), input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"], cost=dict(r["cost"]),
        zero_retention=r["zero_retention"], approval=r["approval"],
        digest=None if r["digest"] is None else bytes.fromhex(r["digest"]),
        origin=r.get("origin"),
    )


def _check_decision(where: str, expected: dict[str, Any], d: Decision) -> None:
    named = None if d.counter is None else d.counter.to_json()
    if expected["result"] == "deny":
        assert not d.allowed, f"{where}: allowed, expected {expected['reason']}"
        assert d.reason is not None and d.reason.value == expected["reason"], (
            f"{where}: {d.reason} ({d.message})")
        assert named == expected.get("counter"), where
        return
    assert d.allowed, f"{where}: denied {d.reason} ({d.message})"
    assert d.reason is None
    assert named is None, where
    assert [x.to_json() for x in d.debits] == expected["debits"], where
    assert d.approval_id == expected["approval_id"], where
    if "limits" in expected:
        assert d.limits is not None and d.limits.to_json() == expected["limits"], where
        # Dicts compare unordered; confirm_above's order is specified (currency codes).
        assert list(d.limits.to_json()["confirm_above"]) == list(
            expected["limits"]["confirm_above"]), where


def _check_parts(v: dict[str, Any]) -> None:
    """The decoded parts a vector states must be what the token parses to."""
    text = v["token"]
    if "token_hex" in v:
        body = text[len("cwt1_"):]
        assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).hex() == v["token_hex"]
    if "identifier" not in v:
        parse_reasons = {"malformed", "unsupported_version"}
        if v.get("expected", {}).get("reason") in parse_reasons:
            with pytest.raises(TokenError) as info:
                Token.parse(text)
            assert info.value.reason.value == v["expected"]["reason"]
        return
    t = Token.parse(text)
    assert t.to_bytes().hex() == v["token_hex"]
    ident = v["identifier"]
    assert t.raw.identifier.hex() == ident["hex"]
    rebuilt = Identifier(key_id=bytes.fromhex(ident["key_id"]),
                         token_id=bytes.fromhex(ident["token_id"]),
                         issued_at=ident["issued_at"], version=ident["version"])
    assert rebuilt.encode().hex() == ident["hex"]
    assert t.token_id == ident["token_id"]
    assert [c.hex() for c in t.raw_caveats] == [c["hex"] for c in v["caveats"]]
    for c in v["caveats"]:
        if c["text"] is not None:
            assert c["text"].encode("utf-8").hex() == c["hex"]
    assert t.raw.signature.hex() == v["signature"]


def _check_mint(v: dict[str, Any]) -> None:
    secret = bytes.fromhex(v["keys"][0]["root_key"])
    assert v["keys"][0]["key_id"] == v["identifier"]["key_id"]
    assert macaroon.derive_key(secret).hex() == v["mint"]["derived_key"]
    ident = bytes.fromhex(v["identifier"]["hex"])
    caveats = [bytes.fromhex(c["hex"]) for c in v["caveats"]]
    chain = [macaroon.chain(secret, ident, caveats[:i]).hex() for i in range(len(caveats) + 1)]
    assert chain == v["mint"]["chain"]
    raw = macaroon.RawMacaroon(ident, tuple(caveats), bytes.fromhex(chain[-1]))
    encoded = base64.urlsafe_b64encode(macaroon.encode(raw)).rstrip(b"=").decode()
    assert "cwt1_" + encoded == v["token"]


def _check_attenuation(v: dict[str, Any]) -> None:
    parent = Token.parse(v["parent"])
    sig = parent.raw.signature
    added = [bytes.fromhex(c["hex"]) for c in v["attenuate"]]
    for c in added:
        sig = macaroon.extend(sig, c)
    raw = macaroon.RawMacaroon(parent.raw.identifier, parent.raw.caveats + tuple(added), sig)
    assert Token(parent.identifier, raw).serialize() == v["token"]


def _check_approval(v: dict[str, Any]) -> None:
    a = v["approval"]
    data = bytes.fromhex(a["hex"])
    assert approvals.PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode() == a["string"]
    parsed = approvals.Approval.parse(a["string"])
    assert (parsed.kind.label, parsed.key_id.hex(), parsed.approval_id.hex(),
            parsed.token_id.hex(), parsed.digest.hex(), parsed.expires, parsed.mac.hex()) == (
        a["kind"], a["key_id"], a["approval_id"], a["token_id"], a["digest"], a["expires"],
        a["mac"])
    mac = hmac.new(bytes.fromhex(a["approval_key"]), data[:82], hashlib.sha256).digest()
    assert mac.hex() == a["mac"]
    keys = {k["key_id"]: bytes.fromhex(k["root_key"]) for k in v["keys"]}
    if a["key_id"] in keys:
        key = RootKey(bytes.fromhex(a["key_id"]), keys[a["key_id"]])
        issued = approvals.issue(key, bytes.fromhex(a["token_id"]), bytes.fromhex(a["digest"]),
                                 a["expires"], approval_id=bytes.fromhex(a["approval_id"]),
                                 kind=approvals.Kind.of(a["kind"]))
        assert issued.serialize() == a["string"]


def _check_digest(v: dict[str, Any]) -> None:
    r = v["request_digest"]
    got = approvals.request_digest(r["method"], r["path"], bytes.fromhex(r["body_hex"]))
    assert got.hex() == r["digest"]


def _check_access_digest(v: dict[str, Any]) -> None:
    r = v["access_digest"]
    got = approvals.access_digest(r["scopes"], r["summary"], bytes.fromhex(r["request"]))
    assert got.hex() == r["digest"]


@pytest.mark.parametrize("v", ALL, ids=[v["id"] for v in ALL])
def test_vector(v: dict[str, Any]) -> None:
    _check_parts(v)
    if "mint" in v:
        _check_mint(v)
    if "parent" in v:
        _check_attenuation(v)
    if "approval" in v:
        _check_approval(v)
    if "request_digest" in v:
        _check_digest(v)
    if "access_digest" in v:
        _check_access_digest(v)
    keys = _keyring(v)
    if "steps" not in v:
        c = v["context"]
        d = verify(v["token"], keys, _request(c["request"]), c["now"], c["counters"],
                   c["revoked"])
        _check_decision(v["id"], v["expected"], d)
        return
    counters: dict[str, int] = dict(v["counters"])
    for i, step in enumerate(v["steps"], 1):
        token = step.get("token", v["token"])
        d = verify(token, keys, _request(step["request"]), step["now"], dict(counters), [])
        _check_decision(f"{v['id']} step {i}", step["expected"], d)
        if d.allowed:
            for x in step["expected"]["debits"]:
                counters[x["counter_key"]] = counters.get(x["counter_key"], 0) + x["amount"]
        assert counters == step["counters_after"], f"{v['id']} step {i}"
