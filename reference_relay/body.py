"""The request body as the relay reads it: one strict JSON parse that every decision uses.

Rule: the relay judges exactly what it forwards. It forwards the app's bytes (unless it must
add an output cap), so its reading of those bytes must be the only reading a provider can
have. JSON leaves room for parsers to disagree, and each such room is closed here by refusing
the body (reason ``invalid_request``) rather than by picking one reading:

* duplicate keys in an object, at any depth: Python keeps the last, other parsers the first
  (or refuse). ``{"model": "gpt-4o", ..., "model": "gpt-4o-mini"}`` would be judged as one
  model and run as the other;
* bytes that are not UTF-8 (``json.loads`` on bytes also accepts UTF-16/32 and encoded
  surrogates, which other parsers reject or replace), and a byte-order mark;
* ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON, and a number literal beyond a
  double's range (``1e400``): Python reads it as infinity, JavaScript too, Go and Rust refuse
  it, an arbitrary-precision parser keeps it; re-encoded it became ``Infinity``, which no
  provider reads as the app's number. An integer literal too (``1`` and 400 zeros): Python
  reads it exactly, JavaScript as infinity;
* a ``\\u`` escape of a lone UTF-16 surrogate (``"\\ud800"``), which names no character:
  Python keeps it as an unpaired code point, other parsers replace it or refuse, and the relay
  could not re-encode a body holding one as UTF-8 (it answered 500 when it had to rewrite it).

After this parse nothing about cost or routing is decided by searching the raw bytes
(``has_key`` walks the parsed body instead: ``"cache\\u005fcontrol"`` is the key
``cache_control`` to every parser).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from reference_relay.errors import INVALID_REQUEST, RelayError


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKey(k)
            seen.add(k)
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class NumberOutOfRange(ValueError):
    """A number literal too large for a double (parsers disagree on what it is)."""


def _float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf - inf is NaN (a literal can only overflow, never be NaN)
        raise NumberOutOfRange(text)
    return value


def _int(text: str) -> int:
    """An integer literal, refused beyond a double's range as a float literal is: Python
    reads ``1`` and 400 zeros exactly, JavaScript as infinity, Go and Rust refuse it. (The
    strict parse only: the compact path never admits one, orjson reads it as infinity and
    refuses it, and an integer past 64 bits it reads as a float, which comes back as another
    text.)"""
    value = int(text)
    if len(text) > 308:  # shorter ones are below 10^308, within range
        try:
            float(value)  # rounds as a correctly rounding parser reads the literal
        except OverflowError:
            raise NumberOutOfRange(text) from None
    return value


# After the parse, an escaped surrogate pair is one character: a surrogate left is a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> bool:
    """Whether any key or string anywhere in a parsed body holds a lone surrogate."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


# Built once: json.loads(s, **kw) would build a decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant,
                            parse_float=_float, parse_int=_int)
# A body whose start has a colon and a space after a key was not written compactly (Python's
# json.dumps and requests' default): _canonical would not match it, so it is not tried.
_SPACED = b'": '
_PROBE = 256


def _canonical(raw: bytes) -> dict[str, Any] | None:
    """The body, when ``raw`` is exactly how orjson writes the object it parses to (as most
    SDKs send a body: compact, UTF-8, no escapes but the required ones); else None.

    Then every rule of parse_body holds with no per-object hook: orjson writes each key of an
    object once, so a text it wrote has no duplicate key; it writes no NaN or Infinity (an
    infinite float, from a literal beyond a double, it writes as null, which that literal is
    not) and fails on a lone surrogate rather than writing one; its output is UTF-8 with nothing
    around the object. And the reading is the json module's: orjson writes a float as the
    shortest text that reads back as it, so a float whose text came back unchanged is the
    one every correctly rounding parser reads; an integer past 64 bits, which orjson reads
    as a float, comes back as another text. The hook that counts each object's keys
    (_object) costs a Python call per object, most of the parse of a long conversation; this
    check is two C calls and a comparison. (orjson's parse, on the bytes, rather than the
    json module's C scanner on the decoded text: some 4.5 K instructions less for a short
    chat body, callgrind.)"""
    if raw.find(_SPACED, 0, _PROBE) >= 0:
        return None
    try:
        body = orjson.loads(raw)  # not UTF-8, not JSON, nested past 1024: parse_body says what
        if type(body) is dict and orjson.dumps(body) == raw:
            return body
    except (ValueError, TypeError):  # orjson.JSONDecodeError, orjson.JSONEncodeError
        pass
    return None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or RelayError(invalid_request) saying what is wrong."""
    canonical = _canonical(raw)
    if canonical is not None:
        return canonical
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RelayError(INVALID_REQUEST, "the request body is not UTF-8") from None
    try:
        body = _DECODER.decode(text)
    except DuplicateKey as dup:
        name = dup.key if len(dup.key) <= 64 else dup.key[:64] + "..."
        raise RelayError(INVALID_REQUEST, f"the request body has the key {name!r} twice in "
                         "one object; JSON parsers disagree on which one counts, so the "
                         "relay refuses it (send each key once)") from None
    except NumberOutOfRange as big:
        literal = str(big) if len(str(big)) <= 32 else str(big)[:32] + "..."
        raise RelayError(INVALID_REQUEST, f"the request body has the number {literal}, beyond "
                         "the range of a double; JSON parsers disagree on its value, so the "
                         "relay refuses it") from None
    except ValueError:  # JSONDecodeError, a BOM, NaN/Infinity
        raise RelayError(INVALID_REQUEST, "the request body is not valid JSON") from None
    except RecursionError:
        raise RelayError(INVALID_REQUEST, "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RelayError(INVALID_REQUEST, "the request body must be a JSON object")
    # Only an escape can make a surrogate (the text is strict UTF-8): walk the body only then.
    if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(body):
        raise RelayError(INVALID_REQUEST, "the request body has a \\u escape of a lone UTF-16 "
                         "surrogate, which is not a character; JSON parsers disagree on it, so "
                         "the relay refuses it (escape a character outside the BMP as a pair)")
    return body


def has_key(value: Any, key: str) -> bool:
    """Whether ``key`` names a member of any object anywhere in a parsed body."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if key in v:
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
