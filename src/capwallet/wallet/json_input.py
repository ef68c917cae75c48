"""JSON that reaches the wallet from outside, read so that a hostile document is refused.

Everything the wallet parses from a request or a fetch (the sign-in body, a passkey answer,
a resource server's check, an app's authorization_details, an app's metadata document) goes
through ``loads``. It is ``json.loads`` with two failures turned into the ValueError every
caller already answers with its own 400 (or its own error page):

* a document nested past the parser's recursion limit (some 1,000 levels; a few KB of ``[``):
  ``json.loads`` raises RecursionError, which no caller caught, so the wallet answered 500
  with a traceback in its log;
* a lone UTF-16 surrogate (``"\\ud800"``, or its three UTF-8 bytes, which ``json.loads`` on
  bytes takes): Python keeps it as an unpaired code point that is no character, and it fails
  later, wherever the text is encoded (a session secret compared, a summary hashed, a name
  written to SQLite or to a page): a 500 again.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


class NotAcceptedJSON(ValueError):
    """A document ``json.loads`` reads but the wallet refuses (the module doc says why)."""


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``; ValueError (NotAcceptedJSON) for a document nested
    too deeply or holding a lone surrogate, as for one that is not JSON."""
    try:
        doc = json.loads(text, **kwargs)
    except RecursionError:
        raise NotAcceptedJSON("the JSON document is nested too deeply") from None
    if _lone_surrogate(doc):
        raise NotAcceptedJSON("the JSON document holds a lone UTF-16 surrogate, which is not "
                              "a character (escape a character outside the BMP as a pair)")
    return doc


def _lone_surrogate(value: Any) -> bool:
    """Whether a key or string anywhere in ``value`` holds a surrogate code point (after the
    parse an escaped pair is one character, so any surrogate left is a lone one)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and _SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
