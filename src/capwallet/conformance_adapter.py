"""The Python implementation behind the conformance adapter protocol (spec/conformance.md).

    python -m capwallet.conformance_adapter

One JSON request per line on standard input, one JSON response per line on standard output,
in order. Each request carries every input it needs (keys, token, time, request, counters),
so the adapter keeps no state. It is glue only: every answer comes from capwallet's own
functions (Token.parse, verify, macaroon.chain, approval.issue, approval.request_digest,
approval.access_digest).
Tokens and keys are test data here; nothing is logged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from capwallet import __version__, macaroon
from capwallet import approval as approvals
from capwallet.identifier import Identifier
from capwallet.keys import Keyring, RootKey
from capwallet.reasons import TokenError
from capwallet.token import MAX_CAVEATS, MAX_TOKEN_CHARS, Token
from capwallet.verify import Request, verify

PROTOCOL = 1
IMPLEMENTATION = {"name": "capwallet-python", "version": __version__, "language": "Python"}


class BadRequest(ValueError):
    """The request does not follow the adapter protocol (not a verification failure)."""


def _field(req: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = req.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field {name} is missing or has the wrong type")
    return value


def _int(req: dict[str, Any], name: str) -> int:
    value: int = _field(req, name, int)
    if value < 0:
        raise BadRequest(f"field {name} must be a non-negative integer")
    return value


def _hex(text: Any, name: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"field {name} must be a hex string")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"field {name} must be a hex string") from None


def _keyring(keys: list[dict[str, str]]) -> Keyring:
    return Keyring(RootKey(_hex(k.get("key_id"), "key_id"), _hex(k.get("root_key"), "root_key"))
                   for k in keys)


def _request(r: dict[str, Any]) -> Request:
    kind = r.get("kind")
    if kind not in ("model_call", "resource_access"):
        raise BadRequest("request.kind must be model_call or resource_access")
    model_call = kind == "model_call"
    return Request(
        provider=_field(r, "provider", str) if model_call else None,
        model=_field(r, "model", str) if model_call else None,
        operation=_field(r, "operation", str) if model_call else None,
        scopes=tuple(_field(r, "scopes", list)),
        input_tokens=_int(r, "input_tokens"),
        output_tokens=_int(r, "output_tokens"),
        cost=dict(_field(r, "cost", dict)),
        zero_retention=_field(r, "zero_retention", bool),
        approval=r.get("approval"),
        digest=None if r.get("digest") is None else _hex(r["digest"], "digest"),
        origin=None if r.get("origin") is None else _field(r, "origin", str),
    )


def op_hello(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("protocol") != PROTOCOL:
        raise BadRequest(f"this adapter speaks protocol {PROTOCOL}")
    return {"protocol": PROTOCOL, "implementation": IMPLEMENTATION, "ops": list(OPS)}


def op_verify(req: dict[str, Any]) -> dict[str, Any]:
    d = verify(
        _field(req, "token", str), _keyring(_field(req, "keys", list)),
        _request(_field(req, "request", dict)), _int(req, "now"),
        dict(_field(req, "counters", dict)), list(_field(req, "revoked", list)),
    )
    return d.to_json()


def op_parse(req: dict[str, Any]) -> dict[str, Any]:
    try:
        t = Token.parse(_field(req, "token", str))
    except TokenError as exc:
        return {"ok": False, "reason": exc.reason.value, "message": exc.message}
    i = t.identifier
    return {
        "ok": True,
        "token_hex": t.to_bytes().hex(),
        "identifier": {"hex": t.raw.identifier.hex(), "version": i.version,
                       "key_id": i.key_id.hex(), "token_id": i.token_id.hex(),
                       "issued_at": i.issued_at},
        "caveats": [c.hex() for c in t.raw.caveats],
        "signature": t.raw.signature.hex(),
    }


def _caveats(req: dict[str, Any]) -> list[bytes]:
    return [_hex(c, "caveats") for c in _field(req, "caveats", list)]


def _token(ident: Identifier, raw: macaroon.RawMacaroon) -> str:
    """Serialize raw parts, within the limits parse enforces.

    The caveats are raw bytes, not typed values, because vectors also attenuate with caveats
    a verifier must reject (unknown or invalid): Token.attenuate takes typed caveats only.
    """
    text = Token(ident, raw).serialize()
    if len(raw.caveats) > MAX_CAVEATS or len(text) > MAX_TOKEN_CHARS:
        raise BadRequest("the token would exceed the size limits")
    return text


def op_mint(req: dict[str, Any]) -> dict[str, Any]:
    secret = _hex(req.get("root_key"), "root_key")
    ident = Identifier(key_id=_hex(req.get("key_id"), "key_id"),
                       token_id=_hex(req.get("token_id"), "token_id"),
                       issued_at=_int(req, "issued_at"))
    caveats = _caveats(req)
    id_bytes = ident.encode()
    steps = [macaroon.chain(secret, id_bytes, caveats[:n]) for n in range(len(caveats) + 1)]
    token = _token(ident, macaroon.RawMacaroon(id_bytes, tuple(caveats), steps[-1]))
    return {"token": token, "derived_key": macaroon.derive_key(secret).hex(),
            "chain": [s.hex() for s in steps]}


def op_attenuate(req: dict[str, Any]) -> dict[str, Any]:
    parent = Token.parse(_field(req, "token", str))
    added = _caveats(req)
    sig = parent.raw.signature
    for c in added:
        sig = macaroon.extend(sig, c)
    raw = macaroon.RawMacaroon(parent.raw.identifier, parent.raw.caveats + tuple(added), sig)
    return {"token": _token(parent.identifier, raw), "chain_id": macaroon.chain_id(sig)}


def op_request_digest(req: dict[str, Any]) -> dict[str, Any]:
    digest = approvals.request_digest(_field(req, "method", str), _field(req, "path", str),
                                      _hex(req.get("body_hex"), "body_hex"))
    return {"digest": digest.hex()}


def op_access_digest(req: dict[str, Any]) -> dict[str, Any]:
    scopes = req.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
        raise ValueError("scopes must be a list of strings")
    digest = approvals.access_digest(scopes, _field(req, "summary", str),
                                     _hex(req.get("request"), "request"))
    return {"digest": digest.hex()}


def op_issue_approval(req: dict[str, Any]) -> dict[str, Any]:
    key = RootKey(_hex(req.get("key_id"), "key_id"), _hex(req.get("root_key"), "root_key"))
    a = approvals.issue(key, _hex(req.get("token_id"), "token_id"),
                        _hex(req.get("digest"), "digest"), _int(req, "expires"),
                        approval_id=_hex(req.get("approval_id"), "approval_id"),
                        kind=approvals.Kind.of(_field(req, "kind", str)))
    return {"approval": a.serialize()}


OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "hello": op_hello, "verify": op_verify, "parse": op_parse, "mint": op_mint,
    "attenuate": op_attenuate, "request_digest": op_request_digest,
    "access_digest": op_access_digest, "issue_approval": op_issue_approval,
}


def handle(line: str) -> dict[str, Any]:
    """One response object for one request line; never raises."""
    try:
        req = json.loads(line)
    except ValueError:
        return {"id": None, "error": {"message": "request is not JSON"}}
    if not isinstance(req, dict):
        return {"id": None, "error": {"message": "request is not a JSON object"}}
    rid = req.get("id")
    op = OPS.get(req.get("op"))  # type: ignore[arg-type]
    if op is None:
        return {"id": rid, "error": {"message": f"unknown op {req.get('op')!r}"}}
    try:
        return {"id": rid, "result": op(req)}
    except Exception as exc:  # any failure is an answer: the adapter never dies
        return {"id": rid, "error": {"message": f"{type(exc).__name__}: {exc}"}}


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    for line in stdin:
        if line.strip():
            stdout.write(json.dumps(handle(line)) + "\n")
            stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
