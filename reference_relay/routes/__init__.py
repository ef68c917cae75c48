"""Endpoints: what each API's request looks like, how big it can get, how it is rewritten.

An Endpoint turns an app's parsed request into a Prepared call: the worst-case input and
output, whether it streams, and the exact bytes to send upstream (the app's own bytes unless
the relay had to add an output cap or ask for streamed usage, so most requests are never
re-serialised).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import orjson

from capwallet.limits import EffectiveLimits
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.estimate import InputEstimate, OutputBound, output_bound


class Prepared(NamedTuple):
    """One call as the relay forwards it. A NamedTuple (immutable, like the frozen dataclass it
    was, but built several times cheaper: a frozen dataclass sets each of its nine fields
    through object.__setattr__, on every call)."""

    input: InputEstimate
    output_tokens: int  # worst case, all choices together
    stream: bool
    body: bytes  # what is sent upstream
    client_wants_usage: bool = True  # an OpenAI stream's usage chunk is kept for the app
    fees_worst: int = 0  # per-call tool fees at their worst, in Price raw units
    call_fees: tuple[tuple[str, int], ...] = ()  # (output item type, raw fee per call)
    headers: tuple[tuple[str, str], ...] = ()  # told to the app, e.g. a lowered output cap
    output_clamped: bool = False  # the app's own output cap was lowered


class Endpoint(Protocol):
    route: str  # the relay's path, e.g. /v1/chat/completions
    upstream_path: str  # appended to the provider's base_url
    api: str  # the provider API flavor it needs
    errors: str  # error body shape: openai | anthropic
    operation: str  # the name checked against the token's operations caveat
    meter: str  # how usage is read (metering): openai | embeddings | anthropic | responses | free

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        """``ceiling``: a further bound on the whole request's output tokens (what the
        remaining budget affords), below which the app's cap is lowered."""
        ...


OUTPUT_CAP_HEADER = "x-capwallet-output-cap"


def cap_note(bound: OutputBound, field: str) -> tuple[tuple[str, str], ...]:
    """The response header that tells the app its output cap was lowered, and to what."""
    if bound.clamped is None or bound.inject is None:
        return ()
    return ((OUTPUT_CAP_HEADER, f"requested={bound.clamped}; applied={bound.inject}; "
                                f"field={field}; reason=max-output-tokens"),)


def _compact_encoder() -> Callable[[Any], str]:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``, with the C encoder
    built once: json.dumps with arguments builds an encoder, and the C one under it, on every
    call (a third of dump's time for a small body)."""
    from json import encoder

    plain = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    # No circular check (markers None): a parsed body has no cycles, and a markers dict shared
    # by every call would keep entries from an encode that failed half way.
    c_encode = make(None, plain.default, encoder.encode_basestring, None, ":", ",", False,
                    False, True)
    return lambda obj: "".join(c_encode(obj, 0))


_dumps = _compact_encoder()


def dump(body: dict[str, Any]) -> bytes:
    """A rewritten body, compact: what json.dumps gives with these separators, read by any
    parser as the same values.

    orjson writes it several times faster (for a short chat body, most of re-encoding one whose
    output cap was renamed to the provider's field). Where it would write something else, the
    json encoder writes it, as it always did: an integer beyond 64 bits (orjson refuses it) and
    an infinite float, which orjson writes as null (any null in its output sends the body to
    json, which tells them apart). parse_body refuses the number literal that would give one
    (reference_relay.body), so only a body built by the relay itself could hold it.
    """
    try:
        out = orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits
        return _dumps(body).encode("utf-8")
    if out.find(b"null") >= 0:  # not `in`: see reference_relay.metering's note on it
        return _dumps(body).encode("utf-8")
    return out


_REST_IS_EMPTY = re.compile(rb"[ \t\r\n]*}")


class BodyEdit:
    """The changes an endpoint makes to an app's body, and the bytes that carry them.

    The usual change adds a top-level key the app did not send (an output cap, an OpenAI
    stream's ``include_usage``): such keys are written in front of the app's own bytes, which
    are otherwise sent as they came, instead of re-encoding the whole body (for a long
    conversation, most of a streamed call's work before it is sent). parse_body admitted the
    body as one JSON object with each key once, so the result reads as the edited body to
    every parser. Any other change (a key the app sent, changed or removed) re-encodes.
    """

    __slots__ = ("added", "body", "changed")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.added: dict[str, Any] = {}
        self.changed = False

    def set(self, key: str, value: Any) -> None:
        if key in self.added:
            self.added[key] = value
        elif key in self.body:
            self.changed = True
        else:
            self.added[key] = value
        self.body[key] = value

    def pop(self, key: str) -> None:
        if key in self.added:
            del self.added[key]
        elif key in self.body:
            self.changed = True
        self.body.pop(key, None)

    def bytes(self, raw: bytes) -> bytes:
        """What is sent upstream: ``raw`` itself when nothing changed."""
        if self.changed:
            return dump(self.body)
        if not self.added:
            return raw
        return _prepend(raw, self.added)


def set_alone(body: dict[str, Any], raw: bytes, key: str, value: Any,
              others: tuple[str, ...]) -> bytes:
    """The bytes a BodyEdit of ``body`` gives when its one change is ``key`` set to
    ``value`` with each of ``others`` removed (pop of each, then set): ``body`` is changed
    the same way. One call instead of BodyEdit's five, on every call whose output cap moves
    to the provider's field (tests/test_relay_parse.py checks they agree)."""
    for other in others:
        if other in body:  # a key the app sent is removed: encoded again
            for k in others:
                body.pop(k, None)
            body[key] = value
            return dump(body)
    if key in body:  # a key the app sent is changed: encoded again
        body[key] = value
        return dump(body)
    body[key] = value
    return _prepend(raw, {key: value})


def _prepend(raw: bytes, added: dict[str, Any]) -> bytes:
    """``raw`` (an object parse_body admitted) with the keys ``added``, which it does not
    have, written in front of its own bytes."""
    start = raw.index(b"{") + 1  # only whitespace can come before the opening brace
    sep = b"" if _REST_IS_EMPTY.match(raw, start) else b","
    return b"{" + dump(added)[1:-1] + sep + raw[start:]


def unbounded_ok(model: ModelConfig, limits: EffectiveLimits) -> bool:
    """A free model with no token quota to protect needs no output bound."""
    return model.price.is_free and not any(c.kind == "quota" for c in limits.counters)


def bound_output(requested: int | None, n: int, model: ModelConfig, limits: EffectiveLimits,
                 ceiling: int | None, *, tools: bool = False) -> OutputBound:
    """estimate.output_bound for a request to ``model`` under ``limits``: a request with no
    cap anywhere may go unbounded only on a free model with no token quota and no priced
    tool calls (``tools``); whether it may is asked only when the app set no cap."""
    return output_bound(requested, n, limits.max_output_tokens, model.price.max_output,
                        unbounded_ok=requested is None and not tools
                        and unbounded_ok(model, limits), ceiling=ceiling)
