"""The relay judges exactly what it forwards (issue 13, F3 and parser differentials).

* A body with a duplicate key at any depth is refused (400 invalid_request) and never
  forwarded: Python's parse keeps the last duplicate, other parsers keep the first.
* Anthropic cache-write pricing is decided on the parsed body, so ``"cache\\u005fcontrol"``
  (the key ``cache_control`` to every JSON parser) gets the cache-write reservation.
* Property: for every body the relay admits, a first-key-wins parse and a last-key-wins parse
  agree on the whole body, and so on every field the relay judges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_harness import Relay, config_data, error_code, fake_requests

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.limits import EffectiveLimits
from capwallet.token import mint
from capwallet.verify import Verifier
from reference_relay.body import parse_body
from reference_relay.config import ModelConfig, ProviderConfig, parse_config
from reference_relay.errors import INVALID_REQUEST, RelayError
from reference_relay.routes import Endpoint
from reference_relay.routes.anthropic import Messages
from reference_relay.routes.openai import ChatCompletions

# The body from the issue: judged as gpt-4o-mini, n=1, 5 tokens; a first-key-wins provider
# would run gpt-4o with 128 x 16384 output tokens.
ISSUE_BODY = (b'{"model":"gpt-4o","n":128,"max_tokens":16384,'
              b'"messages":[{"role":"user","content":"hi"}],'
              b'"model":"gpt-4o-mini","n":1,"max_tokens":5}')


def post_raw(relay: Relay, path: str, raw: bytes, token: str) -> Any:
    return relay.post(path, raw, token, headers={"content-type": "application/json"})


def refused_unforwarded(relay: Relay, path: str, raw: bytes, token: str) -> str:
    before = len(fake_requests(relay))
    r = post_raw(relay, path, raw, token)
    assert r.status_code == 400, r.text
    assert error_code(r) == "invalid_request"
    assert len(fake_requests(relay)) == before, "a refused body must not reach the provider"
    return str(r.json()["error"]["message"])


def test_the_issues_duplicate_key_body_is_refused(relay: Relay) -> None:
    token = relay.mint(cav.Models(("gpt-4o-mini",)), cav.Budget(1, "USD", "day"))
    message = refused_unforwarded(relay, "/v1/chat/completions", ISSUE_BODY, token)
    assert "'model' twice" in message


@pytest.mark.parametrize(("path", "raw"), [
    # in a message, in a content part, in a nested tool schema, in an Anthropic block
    ("/v1/chat/completions", b'{"model":"relay-test","max_tokens":4,"messages":[{"role":"user",'
                             b'"content":"hi","content":[{"type":"text","text":"x"}]}]}'),
    ("/v1/chat/completions", b'{"model":"relay-test","max_tokens":4,"messages":[{"role":"user",'
                             b'"content":[{"type":"input_audio","type":"text","text":"x"}]}]}'),
    ("/v1/chat/completions", b'{"model":"relay-test","max_tokens":4,"messages":[{"role":"user",'
                             b'"content":"hi"}],"tools":[{"type":"function","function":{"name":'
                             b'"f","parameters":{"a":{"b":{"c":1,"c":2}}}}}]}'),
    ("/v1/messages", b'{"model":"claude-test","max_tokens":4,"messages":[{"role":"user",'
                     b'"content":[{"type":"text","text":"x","cache_control":null,'
                     b'"cache_control":{"type":"ephemeral"}}]}]}'),
    # the same key spelt two ways is still one key
    ("/v1/chat/completions", b'{"model":"relay-test","max_tokens":4,"max_tokens":64,'
                             b'"messages":[{"role":"user","content":"hi"}]}'),
    ("/v1/chat/completions", b'{"model":"relay-test","max_tokens":4,"max\\u005ftokens":64,'
                             b'"messages":[{"role":"user","content":"hi"}]}'),
])
def test_duplicate_keys_at_any_depth_are_refused(relay: Relay, path: str, raw: bytes) -> None:
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    refused_unforwarded(relay, path, raw, token)


@pytest.mark.parametrize("raw", [
    b'{"model":"relay-test","max_tokens":4,"temperature":NaN,'
    b'"messages":[{"role":"user","content":"hi"}]}',
    b'\xef\xbb\xbf{"model":"relay-test","max_tokens":4,"messages":[{"role":"user",'
    b'"content":"hi"}]}',
    '{"model":"relay-test","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}'
    .encode("utf-16"),
    b'{"model":"relay-test","max_tokens":4,"messages":[{"role":"user","content":"\xed\xa0\x80"}]}',
    b"[" * 100_000 + b"]" * 100_000,
])
def test_bodies_other_parsers_read_differently_are_refused(relay: Relay, raw: bytes) -> None:
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    refused_unforwarded(relay, "/v1/chat/completions", raw, token)


# A number literal beyond a double's range: Python and JavaScript read infinity, Go and Rust
# refuse it, an arbitrary-precision parser keeps the number. The relay judged infinity and,
# when it rewrote the body, forwarded `Infinity` (not JSON) in place of the app's literal.
# An integer literal too (Python reads it exactly, JavaScript as infinity): the smallest one
# that rounds to infinity, 2^1024 - 2^970, and longer ones.
BEYOND_INTS = [str(2**1024 - 2**970), "1" + "0" * 400, "-" + "9" * 309]


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5E+309", "123456789e999",
                                     *BEYOND_INTS])
@pytest.mark.parametrize("stream", [False, True])
def test_numbers_beyond_a_double_are_refused(relay: Relay, literal: str, stream: bool) -> None:
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    raw = ('{"model":"relay-test","max_tokens":4,"temperature":' + literal
           + (',"stream":true' if stream else '')
           + ',"messages":[{"role":"user","content":"hi"}]}').encode()
    assert "beyond the range of a double" in refused_unforwarded(
        relay, "/v1/chat/completions", raw, token)
    with pytest.raises(RelayError) as err:
        parse_body(raw.replace(b":", b": "))  # the strict path too (not compact)
    assert err.value.code == INVALID_REQUEST


def test_large_finite_numbers_still_pass() -> None:
    assert parse_body(b'{"a":1.7976931348623157e308,"b":-4.9e-324,"c":1e-400}') == {
        "a": 1.7976931348623157e308, "b": -4.9e-324, "c": 0.0}
    # the largest integer that rounds to a finite double (the largest double), and 2^64
    near = 2**1024 - 2**970 - 1
    for raw in (b'{"a":%d,"b":-%d,"c":%d}' % (near, near, 2**64),
                b'{"a": %d, "b": -%d, "c": %d}' % (near, near, 2**64)):
        assert parse_body(raw) == {"a": near, "b": -near, "c": 2**64}


# A \u escape of a lone surrogate: Python keeps an unpaired code point, other parsers put
# U+FFFD or refuse. The relay refused nothing here before: a body it had to rewrite (an
# OpenAI stream gets include_usage) failed re-encoding and answered 500, one it forwarded
# as sent reached the provider with a string the relay had read differently.
@pytest.mark.parametrize("text", ["\\ud800", "x\\uDC00", "\\ude00\\ud83d"])
@pytest.mark.parametrize("where", ["content", "key"])
def test_escaped_lone_surrogates_are_refused(relay: Relay, text: str, where: str) -> None:
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    field = f'"content":"{text}"' if where == "content" else f'"content":"hi","{text}":1'
    for extra in ("", ',"stream":true'):
        raw = ('{"model":"relay-test","max_tokens":4' + extra
               + ',"messages":[{"role":"user",' + field + '}]}').encode()
        assert "surrogate" in refused_unforwarded(relay, "/v1/chat/completions", raw, token)


def test_an_escaped_surrogate_pair_is_one_character_and_passes(relay: Relay) -> None:
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    raw = (b'{"model":"relay-test","max_tokens":4,"messages":[{"role":"user",'
           b'"content":"\\ud83d\\ude00 \\u00e9"}]}')
    r = post_raw(relay, "/v1/chat/completions", raw, token)
    assert r.status_code == 200, r.text


def _needed(relay: Relay, token: str, raw: bytes) -> int:
    """The worst case the relay reserves for an Anthropic call (from its budget refusal)."""
    r = post_raw(relay, "/v1/messages", raw, token)
    assert r.status_code != 200 and r.json()["error"]["reason"] == "budget_exceeded", r.text
    return int(r.json()["error"]["needed"])


def _anthropic(cache_key: str | None) -> bytes:
    block = '{"type":"text","text":"a long system prompt"'
    if cache_key is not None:
        block += f',"{cache_key}":{{"type":"ephemeral"}}'
    return ('{"model":"claude-test","max_tokens":8,"system":[' + block + '}],'
            '"messages":[{"role":"user","content":"hi"}]}').encode()


def test_escaped_cache_control_gets_the_cache_write_reservation(relay: Relay) -> None:
    token = relay.mint(cav.Budget(0, "USD", "month"))
    plain = _needed(relay, token, _anthropic(None))
    cached = _needed(relay, token, _anthropic("cache_control"))
    # 'cache\u005fcontrol' is the same length as 'cache_control' plus 5 bytes: reserve for
    # those too, so compare with a plain key of the same length.
    escaped = _needed(relay, token, _anthropic("cache\\u005fcontrol"))
    padded = _needed(relay, token, _anthropic("cache_control").replace(
        b'"a long', b'"12345a long'))
    assert cached > plain
    assert escaped == padded, "the escaped key must be reserved as a cache write"


# -- property: what the relay admits reads the same to every parser -------------------------

def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def first_wins(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=_first_wins)


def last_wins(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=dict)


class Obj(list[tuple[str, Any]]):
    """A JSON object as written: its members in order, duplicates allowed; keys are JSON text
    (so a key may be written with escapes)."""


def render(v: Any) -> str:
    if isinstance(v, Obj):
        return "{" + ",".join(f"{k}:{render(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(render(x) for x in v) + "]"
    return json.dumps(v)


JUDGED = ["model", "n", "max_tokens", "max_completion_tokens", "stream", "stream_options",
          "include_usage", "messages", "role", "content", "type", "text", "tools", "system",
          "cache_control", "service_tier", "audio", "modalities", "image_url", "url"]
KEY_TEXT = st.sampled_from([json.dumps(k) for k in JUDGED]
                           + ['"cache\\u005fcontrol"', '"mod\\u0065l"', '"max\\u005ftokens"'])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-1, 70),
                 st.sampled_from(["relay-test", "claude-test", "gpt-4o-mini", "user", "text",
                                  "image_url", "hi", "auto", "priority", "ephemeral"]))


def _obj(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    return st.lists(st.tuples(KEY_TEXT, children), max_size=4).map(Obj)


TREE = st.recursive(LEAF, lambda c: st.one_of(st.lists(c, max_size=3), _obj(c)),
                    max_leaves=12)
PART = st.one_of(
    st.builds(lambda t, extra: Obj([('"type"', "text"), ('"text"', t), *extra]),
              st.sampled_from(["hi", "there"]), st.lists(st.tuples(KEY_TEXT, TREE), max_size=2)),
    TREE)
MESSAGE = st.builds(
    lambda content, extra: Obj([('"role"', "user"), ('"content"', content), *extra]),
    st.one_of(st.just("hi"), st.lists(PART, min_size=1, max_size=3)),
    st.lists(st.tuples(KEY_TEXT, TREE), max_size=2))


@st.composite
def bodies(draw: st.DrawFn, model: str) -> bytes:
    messages = draw(st.lists(MESSAGE, min_size=1, max_size=2))
    members: list[tuple[str, Any]] = [('"model"', model), ('"messages"', messages)]
    if draw(st.booleans()):
        members.append(('"max_tokens"', draw(st.integers(1, 64))))
    members += draw(st.lists(st.tuples(KEY_TEXT, TREE), max_size=4))
    return render(Obj(draw(st.permutations(members)))).encode()


def _context() -> tuple[dict[tuple[str, str], tuple[ProviderConfig, ModelConfig]],
                        EffectiveLimits]:
    data = config_data("http://127.0.0.1:9")
    config = parse_config(data, Path("."))
    models = {(p.api, m.id): (p, m) for p in config.providers for m in p.models.values()}
    root = RootKey.generate()
    limits = Verifier(Keyring([root])).check_token(
        mint(root, [cav.Budget(1000, "USD", "month")]).serialize()).limits
    return models, limits


MODELS, LIMITS = _context()


def admitted(ep: Endpoint, raw: bytes) -> Any | None:
    """What the relay's own parse and estimate make of ``raw`` (None: refused)."""
    try:
        body = parse_body(raw)
        model = body.get("model")
        if not isinstance(model, str) or (ep.api, model) not in MODELS:
            return None
        provider, cfg = MODELS[(ep.api, model)]
        return ep.prepare(body, raw, provider, cfg, LIMITS)
    except RelayError:
        return None


@pytest.mark.parametrize(("ep", "model"), [(ChatCompletions(), "relay-test"),
                                           (Messages(), "claude-test")])
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_first_and_last_key_wins_agree_on_every_admitted_body(
        ep: Endpoint, model: str, data: st.DataObject) -> None:
    raw = data.draw(bodies(model))
    prepared = admitted(ep, raw)
    if prepared is None:
        return
    first, last = first_wins(raw), last_wins(raw)
    assert first == last, raw
    # ... and so the relay's judgement is the same from either reading
    assert ep.prepare(first, raw, *MODELS[(ep.api, model)], LIMITS).input == prepared.input
    assert first_wins(prepared.body) == last_wins(prepared.body)
    # What is forwarded (an added output cap or include_usage written in front of the app's
    # own bytes, routes.BodyEdit) reads as the body the relay judged, with its edits.
    assert parse_body(prepared.body) == first


def test_a_key_the_app_did_not_send_is_added_in_front_of_its_own_bytes() -> None:
    provider, cfg = MODELS[("openai", "relay-test")]
    field = provider.max_tokens_field  # max_completion_tokens
    raw = (b' \n{"model":"relay-test", "messages":[{"role":"user","content":"hi"}],\n'
           b'"stream":true}')
    prepared = ChatCompletions().prepare(parse_body(raw), raw, provider, cfg, LIMITS)
    assert prepared.body.startswith(b'{"%s":' % field.encode())
    assert prepared.body.endswith(b',"stream_options":{"include_usage":true},' + raw[3:])
    # A cap the app sent in the other field: the body is encoded again, with the cap moved.
    raw = b'{"model":"relay-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    prepared = ChatCompletions().prepare(parse_body(raw), raw, provider, cfg, LIMITS)
    assert prepared.body == (b'{"model":"relay-test","messages":[{"role":"user","content":"hi"}],'
                             b'"%s":5}' % field.encode())


def test_a_body_edit_of_an_empty_object_adds_no_comma() -> None:
    from reference_relay.routes import BodyEdit
    edit = BodyEdit({})
    edit.set("a", 1)
    assert edit.bytes(b" { \n } ") == b'{"a":1 \n } '
    edit.pop("a")
    assert edit.bytes(b"{}") == b"{}"
    kept = BodyEdit({"a": 1})
    assert kept.bytes(b'{"a":1}') == b'{"a":1}'
    kept.set("a", 2)
    assert kept.bytes(b'{"a":1}') == b'{"a":2}'


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(), _JSON_VALUES, max_size=6))
def test_a_re_encoded_body_reads_as_the_json_encoders_output(body: dict[str, Any]) -> None:
    """routes.dump (orjson, json where orjson would differ: integers beyond 64 bits, infinite
    floats) gives bytes that every parser reads as the body: the same values as the json
    encoder's compact output, byte for byte where the body has no float."""
    from reference_relay.routes import _dumps, dump
    out, reference = dump(body), _dumps(body).encode("utf-8")
    assert json.loads(out) == json.loads(reference)
    if not _has_float(body):  # a float may be written otherwise (1e-7 for 1e-07)
        assert out == reference


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return isinstance(value, list) and any(_has_float(v) for v in value)


def test_a_re_encoded_body_keeps_what_orjson_would_change() -> None:
    from reference_relay.routes import dump
    # An infinite float (only the relay's own edits could put one in a body: parse_body
    # refuses the literal) is written as json writes it, never as orjson's null.
    assert dump({"model": "m", "temperature": float("inf"), "user": None}) == (
        b'{"model":"m","temperature":Infinity,"user":null}')
    body = parse_body(b'{"model":"m","seed":123456789012345678901234567890}')
    assert dump(body) == b'{"model":"m","seed":123456789012345678901234567890}'


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(), _JSON_VALUES, min_size=1, max_size=6),
       data=st.data())
def test_the_compact_fast_path_reads_as_the_strict_parse(body: dict[str, Any],
                                                         data: st.DataObject) -> None:
    """parse_body takes a body written exactly as orjson writes it without its per-object
    hook (body._canonical): it gives the strict parse's result, and a duplicate key, NaN or
    a lone surrogate in such a body is still refused."""
    import orjson

    from reference_relay.body import _DECODER
    for raw in {json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                json.dumps(body).encode()} | ({orjson.dumps(body)} if _orjson_ok(body) else set()):
        try:
            strict = _DECODER.decode(raw.decode())
        except ValueError:
            with pytest.raises(RelayError):
                parse_body(raw)
            continue
        assert parse_body(raw) == strict
    # The same key twice in the top object, written compactly: refused.
    key = data.draw(st.sampled_from(sorted(body)))
    dup = orjson.dumps({"x": 1}).replace(b'"x":1', json.dumps(
        {key: 1}, ensure_ascii=False, separators=(",", ":")).encode()[1:-1] + b"," +
        json.dumps({key: 2}, ensure_ascii=False, separators=(",", ":")).encode()[1:-1])
    with pytest.raises(RelayError, match="twice"):
        parse_body(dup)


def _orjson_ok(body: Any) -> bool:
    import orjson
    try:
        orjson.dumps(body)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("raw", [b'{"a":NaN}', b'{"a":"\\ud800"}', b'{"a":1,"a":2}',
                                 b'{"a":{"b":1,"b":1}}', b'[1]', b'{"a":1}x', b'\xef\xbb\xbf{}'])
def test_compact_bodies_the_strict_rules_refuse_are_refused(raw: bytes) -> None:
    with pytest.raises(RelayError):
        parse_body(raw)


@pytest.mark.parametrize("raw", [
    b'{"a":1.0000000000000002}', b'{"a":0.1}', b'{"a":-0.0}', b'{"a":5e-324}', b'{"a":1e16}',
    b'{"a":1.7976931348623157e308}', b'{"a":1e-400}', b'{"a":9223372036854775807}',
    b'{"a":18446744073709551615}', b'{"a":18446744073709551616}', b'{"a":-9223372036854775809}',
    b'{"a":123456789012345678901234567890}', b'{"a":1.0}', b'{"a":10000000000000000.0}',
    b'{"a":"\\u00e9\\n"}', '{"a":"\u00e9"}'.encode()])
def test_the_compact_fast_path_reads_numbers_as_the_json_module(raw: bytes) -> None:
    """body._canonical reads with orjson: a body it admits reads as the json module reads it,
    type and value (an integer past 64 bits, which orjson reads as a float, and a float whose
    text orjson would write otherwise, go to the strict parse)."""
    from reference_relay.body import _DECODER, _canonical
    strict = _DECODER.decode(raw.decode())
    assert repr(parse_body(raw)) == repr(strict)
    fast = _canonical(raw)
    assert fast is None or repr(fast) == repr(strict)


def test_an_sdk_shaped_body_takes_the_compact_path() -> None:
    from reference_relay.body import _canonical
    body = {"model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 16, "messages": [
        {"role": "user", "content": "Say hello, \u00e9t\u00e9 \U0001f600 \"quoted\"\n"}]}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert _canonical(raw) == body
    spaced = json.dumps(body).encode()  # requests' default: the strict parse alone
    assert _canonical(spaced) is None
    assert parse_body(spaced) == body


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True),
       others=st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
       key=st.sampled_from(["a", "b", "c", "d"]), spaced=st.booleans())
def test_set_alone_gives_what_a_body_edit_gives(keys: list[str], others: list[str], key: str,
                                                spaced: bool) -> None:
    """routes.set_alone (ChatCompletions.prepare's one call for a cap moved to the provider's
    field) changes the body and gives the bytes a BodyEdit does: pop of each other, then set."""
    from reference_relay.routes import BodyEdit, set_alone
    body = {k: i for i, k in enumerate(keys)}
    raw = (json.dumps(body) if spaced else json.dumps(body, separators=(",", ":"))).encode()
    one, two = parse_body(raw), parse_body(raw)
    edit = BodyEdit(two)
    for k in others:
        edit.pop(k)
    edit.set(key, 7)
    out = set_alone(one, raw, key, 7, tuple(others))
    assert out == edit.bytes(raw)
    assert one == two and list(one) == list(two)
    assert parse_body(out) == one
