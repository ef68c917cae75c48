"""Vector files: flags (each declared once, with its note), ids, the document layout."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

from .encoder import Tok, caveat_json, tokstr, v2

SCHEMA = "../../spec/test-vectors.schema.json"
ALGORITHM = "capwallet-token-v1"

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
