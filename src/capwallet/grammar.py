"""The text grammar of a caveat: ``name SP arg SP arg ...`` (spec/caveats.md, "Encoding").

pymacaroons and most macaroon tools treat a caveat as a UTF-8 string, and people read caveats
in logs and inspectors, so caveats are text. Model ids contain ':', '/', '.', '@', so every
argument is percent-encoded over a fixed safe set; a decoder re-encodes and compares, so each
caveat has exactly one accepted spelling. There is no prefix matching and no comma splitting.
"""

from __future__ import annotations

import re
from itertools import pairwise

from capwallet.identifier import MAX_SAFE_INTEGER

SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/@+")
MAX_CAVEAT_BYTES = 1024
MAX_ARGS = 128
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_INT = re.compile(r"0|[1-9][0-9]{0,15}")
_ENCODED_ARG = re.compile(r"(?:[A-Za-z0-9\-._~:/@+]|%[0-9A-F]{2})+")
# A whole caveat in one match: name, then single-space-separated encoded arguments.
_CAVEAT = re.compile(
    rb"[a-z][a-z0-9-]{0,31}(?: (?:[A-Za-z0-9\-._~:/@+]|%[0-9A-F]{2})+)*"
)


class GrammarError(ValueError):
    """The caveat bytes do not follow the grammar (maps to reason invalid_caveat)."""


def encode_arg(value: str) -> str:
    if not value:
        raise ValueError("caveat arguments cannot be empty")
    raw = value.encode("utf-8")
    if all(b in SAFE for b in raw):
        return value
    return "".join(chr(b) if b in SAFE else f"%{b:02X}" for b in raw)


def decode_arg(text: str) -> str:
    if not _ENCODED_ARG.fullmatch(text):
        raise GrammarError(f"argument {text!r} has characters outside the grammar")
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            b = int(text[i + 1 : i + 3], 16)
            if b in SAFE:
                raise GrammarError(f"argument {text!r} percent-encodes a safe character")
            out.append(b)
            i += 3
        else:
            out.append(ord(text[i]))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GrammarError(f"argument {text!r} is not UTF-8 once decoded") from exc


def join(name: str, args: list[str] | tuple[str, ...]) -> bytes:
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad caveat name {name!r}")
    data = " ".join([name, *(encode_arg(a) for a in args)]).encode("ascii")
    if len(data) > MAX_CAVEAT_BYTES:
        raise ValueError(f"caveat is longer than {MAX_CAVEAT_BYTES} bytes")
    if len(args) > MAX_ARGS:
        raise ValueError(f"caveat has more than {MAX_ARGS} arguments")
    return data


def split(data: bytes) -> tuple[str, list[str]]:
    """Name and decoded arguments. Raises GrammarError; the name may be unknown to the caller.

    One regular expression checks the whole caveat, so only arguments holding a '%' need a
    second look (to refuse an encoded safe character and to decode UTF-8).
    """
    if _CAVEAT.fullmatch(data) is None:
        raise GrammarError("caveat does not follow the grammar (name SP arg SP arg ...)")
    parts = data.decode("ascii").split(" ")
    if len(parts) - 1 > MAX_ARGS:
        raise GrammarError(f"caveat has more than {MAX_ARGS} arguments")
    return parts[0], [decode_arg(p) if "%" in p else p for p in parts[1:]]


def parse_int(text: str, what: str) -> int:
    if not _INT.fullmatch(text) or int(text) > MAX_SAFE_INTEGER:
        raise GrammarError(f"{what} {text!r} is not a canonical integer in 0..2^53-1")
    return int(text)


def sorted_unique(values: list[str], what: str) -> tuple[str, ...]:
    raw = [v.encode("utf-8") for v in values]
    if any(a >= b for a, b in pairwise(raw)):
        raise GrammarError(f"{what} must be unique and in ascending byte order")
    return tuple(values)
