"""The relay's pure parts: prices and money, estimates, stream metering, configuration."""

from __future__ import annotations

import json
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capwallet.limits import EffectiveLimits
from capwallet.money import EXPONENTS
from reference_relay.config import ConfigError, load_config, parse_config
from reference_relay.errors import RelayError
from reference_relay.estimate import (
    DEFAULT_IMAGE_TOKENS,
    PER_MESSAGE_TOKENS,
    PER_REQUEST_TOKENS,
    TOOLS_TOKENS,
    anthropic_input,
    openai_chat_input,
    openai_embeddings_input,
    output_bound,
)
from reference_relay.metering import StreamMeter, answer_usage, usage_from_json
from reference_relay.prices import Converter, Price, PriceError, default_table, parse_rate
from reference_relay.routes.anthropic import Messages
from reference_relay.routes.openai import ChatCompletions

EXAMPLE = Path(__file__).resolve().parents[1] / "reference_relay" / "relay.example.toml"

# -- prices -------------------------------------------------------------------------------------

MINI = Price("USD", 1000, input=15_000, output=60_000, cached_input=7_500)


def test_cost_is_counted_in_microunits_in_integers() -> None:
    conv = Converter({})
    # One input token at 0.15 USD per million: 0.000015 cents = 15 microcents.
    assert conv.micros(MINI, MINI.raw_cost(input_tokens=1, output_tokens=0), "USD") == (15, None)
    assert conv.micros(MINI, MINI.raw_cost(input_tokens=0, output_tokens=0), "USD") == (0, None)
    # 1M input + 1M output tokens: 15 + 60 cents exactly.
    raw = MINI.raw_cost(input_tokens=10**6, output_tokens=10**6)
    assert conv.micros(MINI, raw, "USD") == (75_000_000, None)
    assert conv.micros(MINI, raw + 1, "USD") == (75_000_001, None)  # rounded up
    # Cached input is cheaper.
    assert MINI.raw_cost(input_tokens=0, output_tokens=0, cached_input_tokens=10) == 75_000


def test_conversion_uses_the_rate_and_rounds_against_the_user() -> None:
    rate = parse_rate("USD/EUR", "0.87")
    conv = Converter({("USD", "EUR"): rate})
    raw = 5_800_000_000  # 5.8 USD cents
    assert conv.micros(MINI, raw, "EUR") == (5_046_000, rate)
    assert conv.micros(MINI, raw + 1, "EUR") == (5_046_001, rate)
    # The inverse direction works from the same entry: 1 EUR cent is 1/0.87 USD cents.
    eur = Price("EUR", 1000, input=1_000_000, output=0)
    got = conv.micros(eur, eur.raw_cost(input_tokens=1000, output_tokens=0), "USD")
    assert got is not None and got[0] == math.ceil(Fraction(10**6) / Fraction(87, 100))
    assert conv.micros(MINI, raw, "GBP") is None
    assert rate.describe() == "1 USD = 0.87 EUR"


def test_one_converter_keeps_each_price_terms_apart() -> None:
    # The converter keeps one factor per (price currency, scale, target): prices of other
    # scales and currencies through the same converter each get their own.
    conv = Converter({("USD", "EUR"): parse_rate("USD/EUR", "0.5")})
    unscaled = Price("USD", 1, input=1, output=0)
    eur = Price("EUR", 1000, input=1, output=0)
    for _ in range(2):  # the second round is served from what the first worked out
        assert conv.micros(MINI, 1000, "USD") == (1, None)
        assert conv.micros(unscaled, 1000, "USD") == (1000, None)
        to_eur = conv.micros(unscaled, 1000, "EUR")
        assert to_eur is not None and to_eur[0] == 500
        to_usd = conv.micros(eur, 1000, "USD")
        assert to_usd is not None and to_usd[0] == 2
        assert conv.micros(eur, 1000, "GBP") is None


def test_currency_exponents_are_respected() -> None:
    conv = Converter({("USD", "JPY"): parse_rate("USD/JPY", "150.5"),
                      ("USD", "KWD"): parse_rate("USD/KWD", "0.307")})
    raw = 100 * 10**9  # 1 USD
    jpy = conv.micros(MINI, raw, "JPY")
    kwd = conv.micros(MINI, raw, "KWD")
    assert jpy is not None and jpy[0] == 150_500_000  # 150.5 yen (no minor unit)
    assert kwd is not None and kwd[0] == 307_000_000  # 0.307 KWD = 307 fils


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**9),
       st.integers(0, 10**9), st.sampled_from(["0.87", "1", "149.73", "0.0061", "3.6725"]),
       st.sampled_from(["EUR", "JPY", "KWD", "USD"]))
def test_cost_is_the_exact_ceiling(tin: int, tout: int, pin: int, pout: int, rate: str,
                                   cur: str) -> None:
    price = Price("USD", 1000, input=pin, output=pout)
    conv = Converter({} if cur == "USD" else {("USD", cur): parse_rate(f"USD/{cur}", rate)})
    got = conv.micros(price, price.raw_cost(input_tokens=tin, output_tokens=tout), cur)
    assert got is not None
    factor = Fraction(1) if cur == "USD" else Fraction(rate)
    exact = (Fraction(tin * pin + tout * pout, 1000) * factor
             * Fraction(10 ** EXPONENTS[cur], 10 ** EXPONENTS["USD"]))
    assert got[0] == math.ceil(exact)


def test_long_context_tier() -> None:
    p = Price("USD", 1000, input=300_000, output=1_500_000, long_context_above=200_000,
              input_long=600_000, output_long=2_250_000)
    assert p.tier(200_000) == (300_000, 1_500_000)
    assert p.tier(200_001) == (600_000, 2_250_000)
    # Without cached tokens the tier is chosen on the input alone.
    assert p.raw_cost(input_tokens=200_001, output_tokens=10) == (
        200_001 * 600_000 + 10 * 2_250_000)
    assert p.raw_cost(input_tokens=200_000, output_tokens=10) == (
        200_000 * 300_000 + 10 * 1_500_000)
    assert p.raw_cost(input_tokens=100_000, output_tokens=0, cached_input_tokens=100_001) == (
        100_000 * 600_000 + 100_001 * 600_000)  # cached defaults to the (long) input price


@pytest.mark.parametrize(("pair", "value"), [
    ("USD/EUR", 0.87), ("USD/EUR", "abc"), ("USD/EUR", "-1"), ("USD/EUR", "0"),
    ("USD/XXX", "1"), ("USDEUR", "1"), ("USD/EUR", "NaN"),
])
def test_bad_rates(pair: str, value: Any) -> None:
    with pytest.raises(PriceError):
        parse_rate(pair, value)


def test_default_table_is_dated_and_complete() -> None:
    t = default_table()
    assert t.date and "check" in t.note and t.scale == 1000
    assert set(t.sections) >= {"openai", "anthropic", "deepseek"}
    for section in t.sections.values():
        for model, price in section.items():
            assert price.max_output is not None, model
            assert price.currency == "USD"
    assert t.sections["openai"]["gpt-4o-mini"].input == 15_000


# -- estimates ----------------------------------------------------------------------------------

def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def test_chat_estimate_counts_every_byte_plus_overheads() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "héllo wörld " * 50}]}
    raw = _raw(body)
    est = openai_chat_input(body, len(raw))
    assert est.tokens == len(raw) + 2 * PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS
    # Never below the UTF-8 size of the text itself (one byte-level token >= one byte).
    assert est.tokens > len(("héllo wörld " * 50).encode())


def test_images_are_bounded_per_image_not_by_payload() -> None:
    data = "data:image/png;base64," + "A" * 200_000
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": data, "detail": "high"}}]}]}
    raw = _raw(body)
    est = openai_chat_input(body, len(raw))
    assert est.images == 1
    assert est.tokens == len(raw) - len(data) + DEFAULT_IMAGE_TOKENS + PER_MESSAGE_TOKENS + (
        PER_REQUEST_TOKENS)
    assert openai_chat_input(body, len(raw), 1234).tokens == est.tokens - (
        DEFAULT_IMAGE_TOKENS - 1234)


# OpenAI, "Images and vision", calculating costs: gpt-4o-mini bills a high-detail image at
# 2833 base + 5667 per 512 px tile, and an image has at most 8 tiles (fitted in 2048 x 2048,
# short side scaled to 768: 2 x 4 tiles).
GPT_4O_MINI_WORST_IMAGE = 2833 + 8 * 5667


def test_a_gpt_4o_mini_image_reserves_its_documented_worst_case() -> None:
    cfg = load_config(EXAMPLE)
    provider = cfg.providers[0]
    data = "data:image/png;base64," + "A" * 1000
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 1, "messages": [
        {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data, "detail": "high"}}]}]}
    raw = _raw(body)
    prepared = ChatCompletions().prepare(body, raw, provider, provider.models["gpt-4o-mini"],
                                         EffectiveLimits())
    text = len(raw) - len(data) + PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS
    assert prepared.input.tokens - text >= GPT_4O_MINI_WORST_IMAGE
    # Two images, twice the worst case.
    body["messages"][0]["content"] *= 2
    raw = _raw(body)
    prepared = ChatCompletions().prepare(body, raw, provider, provider.models["gpt-4o-mini"],
                                         EffectiveLimits())
    assert prepared.input.tokens - (len(raw) - 2 * len(data)) >= 2 * GPT_4O_MINI_WORST_IMAGE


def test_the_default_image_allowance_covers_every_shipped_model() -> None:
    table = default_table()
    values = [p.max_image_tokens for sec in table.sections.values() for p in sec.values()
              if p.max_image_tokens is not None]
    assert max(values) >= GPT_4O_MINI_WORST_IMAGE
    assert DEFAULT_IMAGE_TOKENS >= max(values)
    # A vision model priced inline without the field gets the default, never less.
    cfg = load_config(EXAMPLE)
    local = next(p for p in cfg.providers if p.id == "local")
    body = {"model": "llama3.2", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    raw = _raw(body)
    est = ChatCompletions().prepare(body, raw, local, local.models["llama3.2"],
                                    EffectiveLimits()).input
    assert est.tokens >= DEFAULT_IMAGE_TOKENS


def test_max_image_tokens_survives_an_inline_override(tmp_path: Path) -> None:
    d = _base()
    d["providers"][0]["price_table"] = "openai"
    d["providers"][0]["models"] = [{"id": "gpt-4o-mini", "output": 1}]
    p = parse_config(d, tmp_path).providers[0].models["gpt-4o-mini"].price
    assert p.max_image_tokens is not None and p.max_image_tokens >= GPT_4O_MINI_WORST_IMAGE
    d["providers"][0]["models"] = [{"id": "gpt-4o-mini", "max_image_tokens": 60_000}]
    p = parse_config(d, tmp_path).providers[0].models["gpt-4o-mini"].price
    assert p.max_image_tokens == 60_000
    d["providers"][0]["models"] = [{"id": "gpt-4o-mini", "max_image_tokens": -1}]
    with pytest.raises(ConfigError, match="max_image_tokens"):
        parse_config(d, tmp_path)


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "f"}},
    {"type": "video", "video": {}},
])
def test_unboundable_openai_inputs_are_refused(part: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    with pytest.raises(RelayError) as exc:
        openai_chat_input(body, len(_raw(body)))
    assert exc.value.code == "unbounded_request"


@pytest.mark.parametrize("extra", [
    {"modalities": ["text", "audio"]}, {"web_search_options": {}},
    {"prediction": {"type": "content", "content": "x"}}, {"service_tier": "priority"},
    {"tools": [{"type": "code_interpreter"}]},
])
def test_unboundable_openai_options_are_refused(extra: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(RelayError) as exc:
        openai_chat_input(body, len(_raw(body)))
    assert exc.value.code == "unbounded_request"


def test_anthropic_estimate() -> None:
    body = {"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "sys",
                                                       "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "B" * 5000}},
                {"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    raw = _raw(body)
    est = anthropic_input(body, raw)
    assert est.images == 2 and est.cache_write
    assert est.tokens == (len(raw) - 5000 - len("https://x/y.png") + 2 * DEFAULT_IMAGE_TOKENS
                          + PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS + 1024)
    for bad in ({"type": "document", "source": {}},):
        b2 = {**body, "messages": [{"role": "user", "content": [bad]}]}
        with pytest.raises(RelayError):
            anthropic_input(b2, _raw(b2))
    b3 = {**body, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    with pytest.raises(RelayError):
        anthropic_input(b3, _raw(b3))


# Anthropic, tool use pricing and the computer use / text editor / bash tool pages: the tool-use
# system prompt (346 tokens on Claude 4 models), computer use's extra system prompt (up to 499)
# and definition (735), the text editor's (700) and bash's (245) are billed as hidden input.
ANTHROPIC_HIDDEN_TOOL_TOKENS = 346 + 499 + 735 + 700 + 245


def test_anthropic_defined_tools_reserve_their_hidden_tokens() -> None:
    cfg = load_config(EXAMPLE)
    provider = cfg.providers[1]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1,
            "messages": [{"role": "user", "content": "open the file"}],
            "tools": [{"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
                       "display_height_px": 768},
                      {"type": "bash_20250124", "name": "bash"},
                      {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]}
    raw = _raw(body)
    est = Messages().prepare(body, raw, provider, provider.models["claude-sonnet-4-5"],
                             EffectiveLimits()).input
    visible = len(raw) + PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS
    assert est.tokens - visible >= ANTHROPIC_HIDDEN_TOOL_TOKENS
    # Each kind adds its own allowance on top of the tool-use base.
    alone = {**body, "tools": [{"type": "bash_20250124", "name": "bash"}]}
    raw1 = _raw(alone)
    est1 = anthropic_input(alone, raw1)
    assert est1.tokens - (len(raw1) + PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS) >= (
        TOOLS_TOKENS + 245)


@pytest.mark.parametrize("tool", [
    {"type": "memory_20250818", "name": "memory"},  # typed, hidden size unknown here
    {"type": "web_fetch_20250910", "name": "web_fetch"},  # a server tool
    {"type": "customized", "name": "x"},
    {"type": None, "name": "x"},
])
def test_unknown_typed_anthropic_tools_are_refused(tool: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool]}
    with pytest.raises(RelayError) as exc:
        anthropic_input(body, _raw(body))
    assert exc.value.code == "unbounded_request"


def test_embeddings_estimate() -> None:
    assert openai_embeddings_input({"input": [1, 2, 3]}).tokens == 3 + PER_REQUEST_TOKENS
    assert openai_embeddings_input({"input": [[1, 2], [3]]}).tokens == 3 + PER_REQUEST_TOKENS
    assert openai_embeddings_input({"input": ["ab", "é"]}).tokens == 4 + 4 + PER_REQUEST_TOKENS
    with pytest.raises(RelayError):
        openai_embeddings_input({"input": {"x": 1}})


def test_output_bound() -> None:
    b = output_bound(50, 3, None, None, unbounded_ok=False)
    assert (b.total, b.inject) == (150, None)
    b = output_bound(None, 3, 100, 4096, unbounded_ok=False)
    assert (b.total, b.inject) == (99, 33)
    b = output_bound(None, 1, None, 4096, unbounded_ok=False)
    assert (b.total, b.inject) == (4096, 4096)
    b = output_bound(None, 1, 10_000, 4096, unbounded_ok=False)
    assert (b.total, b.inject) == (4096, 4096)
    b = output_bound(None, 1, None, None, unbounded_ok=True)
    assert (b.total, b.inject) == (0, None)
    with pytest.raises(RelayError):
        output_bound(None, 1, None, None, unbounded_ok=False)
    with pytest.raises(RelayError):
        output_bound(None, 5, 3, None, unbounded_ok=False)


# -- stream metering ------------------------------------------------------------------------------

def _openai_stream(usage_chunk: bool = True, sep: bytes = b"\n\n") -> tuple[bytes, bytes]:
    events = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + sep for e in events)
    usage = (b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
             b'"prompt_tokens_details":{"cached_tokens":3}}}' + sep)
    done = b"data: [DONE]" + sep
    return body + (usage if usage_chunk else b"") + done, body + done


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_openai_stream_meter_any_chunking(sep: bytes) -> None:
    full, without_usage = _openai_stream(sep=sep)
    for size in (1, 2, 3, 7, 64, len(full)):
        meter = StreamMeter("openai", drop_usage_chunk=True)
        out = b"".join(meter.feed(full[i:i + size]) for i in range(0, len(full), size))
        out += meter.flush()
        assert out == without_usage
        assert meter.final and meter.done and meter.saw_event
        assert meter.usage is not None
        assert (meter.usage.input_tokens, meter.usage.cached_input_tokens,
                meter.usage.output_tokens) == (4, 3, 2)
        keep = StreamMeter("openai", drop_usage_chunk=False)
        assert keep.feed(full) + keep.flush() == full


def test_openai_stream_cut() -> None:
    full, _ = _openai_stream(usage_chunk=False)
    cut = full[: len(full) // 2]
    meter = StreamMeter("openai", drop_usage_chunk=True)
    meter.feed(cut)
    meter.flush()
    assert meter.saw_event and not meter.final and not meter.done


def test_anthropic_stream_meter() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 2}}}),
        ("content_block_delta", {"type": "content_block_delta",
                                 "delta": {"type": "text_delta", "text": "message_delta"}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 16}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    data = b"".join(f"event: {n}\ndata: {json.dumps(e)}\n\n".encode() for n, e in events)
    meter = StreamMeter("anthropic", drop_usage_chunk=False)
    assert b"".join(meter.feed(data[i:i + 5]) for i in range(0, len(data), 5)) == data
    assert meter.final and meter.done and meter.usage is not None
    u = meter.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (
        10, 16, 4, 2)
    start_only = StreamMeter("anthropic", drop_usage_chunk=False)
    start_only.feed(data.split(b"event: content_block_delta")[0])
    assert start_only.usage is not None and start_only.usage.input_tokens == 10
    assert not start_only.final


def test_usage_from_json() -> None:
    u = usage_from_json("openai", {"usage": {"prompt_tokens": 10, "completion_tokens": 3,
                                             "prompt_cache_hit_tokens": 6}})
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (
        4, 6, 3)
    assert usage_from_json("openai", {"choices": []}) is None
    a = usage_from_json("anthropic", {"usage": {"input_tokens": 5, "output_tokens": 9}})
    assert a is not None and (a.input_tokens, a.output_tokens) == (5, 9)
    # The input count without the output's: a missing usage for the output
    # (test_a_usage_without_its_output_count_is_marked_so).
    a = usage_from_json("anthropic", {"usage": {"input_tokens": 5}})
    assert a is not None and a.output_missing and (a.input_tokens, a.output_tokens) == (5, None)
    # The output count without the input's: a usage without its input count (charged the
    # worst case, and logged: test_relay_absurd_usage); no count at all: no usage.
    a = usage_from_json("anthropic", {"usage": {"output_tokens": 5}})
    assert a is not None and (a.input_tokens, a.output_tokens, a.unreadable) == (None, 5, False)
    assert usage_from_json("anthropic", {"usage": {"cache_read_input_tokens": 5}}) is None
    for flavor, usage in (("openai", {"completion_tokens": 5}),
                          ("openai", {"prompt_tokens": None, "total_tokens": 5}),
                          ("responses", {"output_tokens": 5})):
        body: dict[str, object] = {"usage": usage, "output": []}
        a = usage_from_json(flavor, body)
        assert a is not None and (a.input_tokens, a.output_tokens) == (None, 5), flavor
    assert usage_from_json("openai", {"usage": {"completion_tokens": -1}}).unreadable  # type: ignore[union-attr]
    assert usage_from_json("openai", {"usage": {}}) is None


def test_answer_usage_reads_what_the_json_module_reads() -> None:
    # orjson reads an integer past 64 bits as a float (no tokens, read so): such a usage
    # object is read again by the json module, and the count is exact.
    big = 2**64 + 1
    u = answer_usage("openai", b'{"usage":{"prompt_tokens":10,"completion_tokens":%d}}' % big)
    assert u is not None and (u.input_tokens, u.output_tokens) == (10, big)
    # Text orjson refuses and json reads (NaN, UTF-16 with its byte-order mark): read as json
    # reads it.
    u = answer_usage("openai", b'{"x":NaN,"usage":{"prompt_tokens":3,"completion_tokens":4}}')
    assert u is not None and (u.input_tokens, u.output_tokens) == (3, 4)
    u = answer_usage("anthropic",
                     '{"usage":{"input_tokens":5,"output_tokens":9}}'.encode("utf-16"))
    assert u is not None and (u.input_tokens, u.output_tokens) == (5, 9)
    assert answer_usage("openai", b'{"choices":[]}') is None
    for not_an_object in (b"[1]", b'{"usage":', b"", b'"x"'):
        with pytest.raises(ValueError):
            answer_usage("openai", not_an_object)


def test_token_counts_written_as_floats_are_charged_rounded_up_not_as_no_tokens() -> None:
    # An OpenAI-compatible layer may write its counts as floats (15.0). Its provider bills
    # them; read as no tokens (the old reading), such a call was charged nothing for them and
    # a budget could be spent past its limit. A fraction is charged as the next whole token;
    # a float past 2^53 (no exact count), NaN, text and negative numbers are unreadable
    # (test_an_unreadable_count_marks_the_usage_unreadable).
    u = answer_usage("openai", b'{"usage":{"prompt_tokens":10.0,"completion_tokens":2.5,'
                               b'"total_tokens":12.5}}')
    assert u is not None and (u.input_tokens, u.output_tokens) == (10, 3)
    u = answer_usage("openai", b'{"usage":{"prompt_tokens":8.0,"completion_tokens":4.0,'
                               b'"prompt_tokens_details":{"cached_tokens":3.0}}}')
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (
        5, 3, 4)
    a = answer_usage("anthropic", b'{"usage":{"input_tokens":5.0,"output_tokens":9.25,'
                                  b'"cache_read_input_tokens":2.0}}')
    assert a is not None and (a.input_tokens, a.output_tokens, a.cached_input_tokens) == (
        5, 10, 2)
    r = answer_usage("responses", b'{"usage":{"input_tokens":4.0,"output_tokens":6.5}}')
    assert r is not None and (r.input_tokens, r.output_tokens) == (4, 7)
    for zero in (b"0.0", b"-0.0"):
        u = answer_usage("openai", b'{"usage":{"prompt_tokens":%s,"completion_tokens":1}}'
                         % zero)
        assert u is not None and (u.input_tokens, u.output_tokens, u.unreadable) == (
            0, 1, False), zero
    for flavor, events in (
            ("openai", b'data: {"choices":[],"usage":{"prompt_tokens":7.0,'
                       b'"completion_tokens":2.5}}\n\ndata: [DONE]\n\n'),
            ("anthropic", b'event: message_start\ndata: {"type":"message_start","message":'
                          b'{"usage":{"input_tokens":7.0,"output_tokens":1}}}\n\n'
                          b'event: message_delta\ndata: {"type":"message_delta","usage":'
                          b'{"output_tokens":2.5}}\n\n')):
        meter = StreamMeter(flavor, drop_usage_chunk=False)
        meter.feed(events)
        assert meter.final and meter.usage is not None, flavor
        assert (meter.usage.input_tokens, meter.usage.output_tokens) == (7, 3), flavor


# Values no count reads: negative, NaN, infinite, a float past 2^53, bool, text, objects.
_JUNK = (b"-1", b"-4.0", b"NaN", b"Infinity", b"1e300", b"9007199254740994.0", b"true",
         b"false", b'"9"', b"[]", b'{"n":1}')
# Per flavor: a usage body with every count it reads readable (%s marks where each one goes,
# in turn given a value no count reads).
_USAGE_BODIES = {
    "openai": (b'{"usage":{"prompt_tokens":%s,"completion_tokens":%s,"total_tokens":%s,'
               b'"prompt_cache_hit_tokens":%s,"prompt_tokens_details":{"cached_tokens":%s}}}'),
    "anthropic": (b'{"usage":{"input_tokens":%s,"output_tokens":%s,'
                  b'"cache_read_input_tokens":%s,"cache_creation_input_tokens":%s}}'),
    "responses": (b'{"usage":{"input_tokens":%s,"output_tokens":%s,'
                  b'"input_tokens_details":{"cached_tokens":%s},'
                  b'"output_tokens_details":{"reasoning_tokens":%s}},"output":[]}'),
}


@pytest.mark.parametrize("flavor", sorted(_USAGE_BODIES))
def test_an_unreadable_count_marks_the_usage_unreadable(flavor: str) -> None:
    # Read as 0 before (metering._int), a garbled count charged the call nothing for it; an
    # unreadable count now marks the usage unreadable, and the call is charged as for a
    # missing usage (Call._settlement; test_relay_absurd_usage.py runs it through the relay).
    body = _USAGE_BODIES[flavor]
    slots = body.count(b"%s")
    good = answer_usage(flavor, body % ((b"3",) * slots))
    assert good is not None and not good.unreadable and good.complete
    for i in range(slots):
        for junk in _JUNK:
            values = [b"3"] * slots
            values[i] = junk
            u = answer_usage(flavor, body % tuple(values))
            assert u is not None and u.unreadable, (flavor, i, junk)
        values = [b"3"] * slots
        values[i] = b"null"  # null is an absent count: no input count for the first, no
        u = answer_usage(flavor, body % tuple(values))  # output count for output_tokens
        if i == 0:  # (the worst case, as no usage: Call._settlement)
            assert u is not None and u.input_tokens is None and not u.unreadable, (flavor, i)
        elif i == 1 and flavor != "openai":  # (OpenAI's total_tokens gives the output)
            assert u is not None and u.output_missing and not u.unreadable, (flavor, i)
        else:
            assert u is not None and not u.unreadable and u.complete, (flavor, i)


@pytest.mark.parametrize("junk", _JUNK)
def test_an_unreadable_count_in_a_stream_marks_its_usage_unreadable(junk: bytes) -> None:
    openai = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":%s}}\n\n'
              b"data: [DONE]\n\n")
    anthropic_in = (b'event: message_start\ndata: {"type":"message_start","message":'
                    b'{"usage":{"input_tokens":%s,"output_tokens":1}}}\n\n'
                    b'event: message_delta\ndata: {"type":"message_delta","usage":'
                    b'{"output_tokens":5}}\n\nevent: message_stop\n'
                    b'data: {"type":"message_stop"}\n\n')
    anthropic_out = (b'event: message_start\ndata: {"type":"message_start","message":'
                     b'{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n'
                     b'event: message_delta\ndata: {"type":"message_delta","usage":'
                     b'{"output_tokens":%s}}\n\nevent: message_stop\n'
                     b'data: {"type":"message_stop"}\n\n')
    responses = (b'event: response.completed\ndata: {"type":"response.completed","response":'
                 b'{"output":[],"usage":{"input_tokens":7,"output_tokens":%s}}}\n\n')
    for flavor, events in (("openai", openai), ("anthropic", anthropic_in),
                           ("anthropic", anthropic_out), ("responses", responses)):
        meter = StreamMeter(flavor, drop_usage_chunk=True)
        out = meter.feed(events % junk)
        assert meter.final and meter.done, (flavor, junk)
        assert meter.usage is not None and meter.usage.unreadable, (flavor, junk)
        if flavor == "openai":  # the usage chunk the app did not ask for is still dropped
            assert b"usage" not in out


# A usage that gives the input count but not the output's, per flavor (answer bodies).
_WITHOUT_OUTPUT = {
    "openai": (b'{"usage":{"prompt_tokens":7}}',
               b'{"usage":{"prompt_tokens":7,"completion_tokens":null,"total_tokens":null}}',
               b'{"usage":{"prompt_tokens":7,"total_tokens":5}}',  # a total below the prompt
               b'{"usage":{"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":2},'
               b'"completion_tokens_details":{"reasoning_tokens":4}}}'),
    "anthropic": (b'{"usage":{"input_tokens":7}}',
                  b'{"usage":{"input_tokens":7,"output_tokens":null,'
                  b'"cache_read_input_tokens":2}}'),
    "responses": (b'{"output":[],"usage":{"input_tokens":7}}',
                  b'{"output":[],"usage":{"input_tokens":7,"total_tokens":19,'
                  b'"output_tokens_details":{"reasoning_tokens":4},'
                  b'"input_tokens_details":{"cached_tokens":2}}}'),
}


# ... and one that gives both.
_WITH_OUTPUT = {
    "openai": (b'{"usage":{"prompt_tokens":7,"completion_tokens":0}}',
               b'{"usage":{"prompt_tokens":7,"total_tokens":9}}',
               b'{"usage":{"prompt_tokens":7,"total_tokens":7}}'),
    "anthropic": (b'{"usage":{"input_tokens":7,"output_tokens":0}}',),
    "responses": (b'{"output":[],"usage":{"input_tokens":7,"output_tokens":0}}',),
}


@pytest.mark.parametrize("flavor", sorted(_WITHOUT_OUTPUT))
def test_a_usage_without_its_output_count_is_marked_so(flavor: str) -> None:
    # Read as 0 output before (an absent count read as 0): a gateway that dropped the count
    # got the call charged no output. Now the usage says the output count is missing, and
    # the call is charged the reserved worst case for it (Call._settlement;
    # test_relay_usage_without_output.py runs it through the relay).
    for body in _WITHOUT_OUTPUT[flavor]:
        u = answer_usage(flavor, body)
        assert u is not None and u.output_missing and not u.unreadable, body
        assert u.output_tokens is None and not u.complete, body
        cached = 2 if b"cache" in body else 0
        fresh = 7 if flavor == "anthropic" else 7 - cached  # Anthropic's excludes the cached
        assert (u.input_tokens, u.cached_input_tokens) == (fresh, cached), body
    # An output count of 0 is a count; OpenAI's total_tokens gives the output too.
    for body in _WITH_OUTPUT[flavor]:
        u = answer_usage(flavor, body)
        assert u is not None and u.complete and not u.output_missing, (flavor, body)


def test_an_embeddings_usage_has_no_output_count_and_reads_as_no_output() -> None:
    # Embeddings produce no output: their usage (prompt_tokens, often total_tokens) reads as
    # 0 output, not as a missing count.
    for body in (b'{"data":[],"usage":{"prompt_tokens":7}}',
                 b'{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}'):
        u = answer_usage("embeddings", body)
        assert u is not None and u.complete and not u.output_missing, body
        assert (u.input_tokens, u.output_tokens) == (7, 0), body
        chat = answer_usage("openai", body)
        assert chat is not None and (chat.output_missing, chat.output_tokens) == (
            b"total" not in body, None if b"total" not in body else 0), body


def test_a_stream_whose_usage_lacks_the_output_count_is_marked_so() -> None:
    openai = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":7}}\n\n'
              b"data: [DONE]\n\n")
    anthropic = (b'event: message_start\ndata: {"type":"message_start","message":'
                 b'{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n'
                 b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                 b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
                 b'event: message_delta\ndata: {"type":"message_delta",'
                 b'"delta":{"stop_reason":"end_turn"}%s}\n\n'
                 b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    responses = (b'event: response.completed\ndata: {"type":"response.completed","response":'
                 b'{"output":[],"usage":{"input_tokens":7}}}\n\n')
    for flavor, events in (("openai", openai), ("responses", responses),
                           ("anthropic", anthropic % b""),
                           ("anthropic", anthropic % b',"usage":{}'),
                           ("anthropic", anthropic % b',"usage":{"output_tokens":null}')):
        meter = StreamMeter(flavor, drop_usage_chunk=True)
        meter.feed(events)
        assert meter.done and meter.usage is not None, (flavor, events)
        u = meter.usage
        assert u.output_missing and not u.unreadable and u.output_tokens is None, events
        assert u.input_tokens == 7, events
    # A later message_delta with the count: the count stands.
    meter = StreamMeter("anthropic", drop_usage_chunk=False)
    meter.feed(anthropic.replace(b"event: message_stop", b'event: message_delta\ndata: '
                                 b'{"type":"message_delta","usage":{"output_tokens":5}}\n\n'
                                 b"event: message_stop") % b"")
    assert meter.final and meter.usage is not None and not meter.usage.output_missing
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (7, 5)


def test_answer_usage_of_openai_answers_is_openai_usage_of_the_json_modules_reading() -> None:
    # answer_usage reads an OpenAI answer's usage fields itself (metering._openai_answer):
    # every combination of the values a field may hold (absent, null, bool, negative, zero,
    # positive, in-range float, float past 64 bits, huge integer, text, object) gives what
    # openai_usage gives for the json module's reading of the same bytes.
    import itertools
    import json

    from reference_relay.metering import openai_usage

    values = ["ABSENT", None, True, -3, 0, 7, 12, 2.0, 1e30, 2**64 + 5, "9", {"x": 1}]
    fields = ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_hit_tokens")
    checked = 0
    for combo in itertools.product(values, repeat=len(fields)):
        details: object
        for details in ("ABSENT", None, [], {}, {"cached_tokens": 5}, {"cached_tokens": 1e30},
                        {"cached_tokens": 2**64}, {"cached_tokens": 99}):
            u: dict[str, object] = {k: v for k, v in zip(fields, combo, strict=True)
                                    if v != "ABSENT"}
            if details != "ABSENT":
                u["prompt_tokens_details"] = details
            body = json.dumps({"id": "x", "usage": u}).encode()
            want = openai_usage(json.loads(body)["usage"])
            assert answer_usage("openai", body) == want, body
            checked += 1
    assert checked == len(values) ** len(fields) * 8
    for usage in (b"null", b"[]", b'"x"', b"{}", b'{"prompt_tokens":null}'):
        assert answer_usage("openai", b'{"usage":%s}' % usage) is None
    got = answer_usage("openai", b'{"usage":{"completion_tokens":3}}')  # no input count
    assert got is not None and (got.input_tokens, got.output_tokens) == (None, 3)


def test_a_calls_ledger_entry_is_the_one_a_keyword_build_makes() -> None:
    # Call._entry builds its LedgerEntry positionally (cheaper): every field lands where a
    # keyword build puts it, whatever order the fields are declared in.
    from capwallet.store import LedgerEntry
    from reference_relay.calls import Call

    call = Call.__new__(Call)
    for name, value in (("token_id", "tid"), ("app", "app"), ("reservation_id", "rid"),
                        ("ledger_currency", "EUR"), ("chain_id", "chain"),
                        ("log_bodies", True), ("max_log_bytes", 3), ("request_body", b"abcd"),
                        ("started", 0.0)):
        setattr(call, name, value)
    call.provider = type("P", (), {"id": "prov"})()
    call.model = type("M", (), {"id": "mod"})()
    call.endpoint = type("E", (), {"operation": "op"})()
    e = call._entry("ok", 11, 22, 33, b"wxyz")
    want = LedgerEntry(time=e.time, token_id="tid", app="app", provider="prov", model="mod",
                       operation="op", input_tokens=11, output_tokens=22, cost=33,
                       currency="EUR", status="ok", latency_ms=e.latency_ms,
                       reservation_id="rid", request_body="abc", response_body="wxy",
                       chain_id="chain")
    assert e == want and e.count == 1
    assert abs(e.time - time.time()) < 5 and e.latency_ms > 0


@given(st.integers(0, 300_000), st.integers(0, 5000), st.integers(0, 300_000),
       st.integers(0, 300_000), st.sampled_from([(), (("web_search_call", 25_000),)]),
       st.integers(0, 3))
def test_a_calls_answered_cost_is_the_price_s_keyword_cost(
        tin: int, tout: int, cached: int, written: int,
        call_fees: tuple[tuple[str, int], ...], searches: int) -> None:
    # Call.raw_cost prices an answer without caching by position (Price.plain_cost) and
    # skips the fees when the call has none: the same as the keyword build in every case.
    from reference_relay.calls import Call
    from reference_relay.metering import Usage

    price = Price("USD", 1000, input=15_000, output=60_000, cached_input=7_500,
                  long_context_above=200_000, input_long=30_000, output_long=90_000)
    call = Call.__new__(Call)
    call.model = type("M", (), {"price": price})()
    call.prepared = type("P", (), {"call_fees": call_fees})()
    tools = {"web_search_call": searches} if searches else None
    usage = Usage(tin, tout, cached, written, tools)
    fees = sum(searches * fee for _, fee in call_fees)
    want = price.raw_cost(input_tokens=tin, output_tokens=tout, cached_input_tokens=cached,
                          cache_write_tokens=written) + fees
    assert call.raw_cost(usage, True) == (want, tin + cached + written, tout)


# -- configuration ------------------------------------------------------------------------------

def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.store_url == f"sqlite:///{EXAMPLE.parent / 'relay.db'}"
    assert cfg.root_keys == (EXAMPLE.parent / "root.key",)
    assert [p.id for p in cfg.providers] == ["openai", "anthropic", "gemini", "deepseek",
                                             "local"]
    openai_p = cfg.providers[0]
    assert openai_p.max_tokens_field == "max_completion_tokens"
    assert openai_p.models["gpt-4o-mini"].price.input == 15_000
    local = cfg.providers[4]
    assert local.models["llama3.2"].price.is_free and local.zero_retention
    gemini = cfg.providers[2]
    assert gemini.base_url.endswith("/v1beta/openai") and gemini.api == "openai"
    assert gemini.models["gemini-2.5-flash"].price.output == 250_000
    assert local.api_key_env is None and cfg.default_provider_keys("local") == ""
    assert cfg.rates[("USD", "EUR")].text == "0.87" and cfg.rates_date
    assert cfg.prices_date == default_table().date
    assert cfg.lease_seconds(openai_p) > cfg.upstream_timeout


def _base() -> dict[str, Any]:
    return {"relay": {"root_keys": ["k"]},
            "providers": [{"id": "p", "api": "openai", "base_url": "http://127.0.0.1:1/v1",
                           "models": [{"id": "m", "input": 1, "output": 2, "currency": "USD"}]}]}


def test_inline_prices_use_the_table_scale_and_override_the_table(tmp_path: Path) -> None:
    cfg = parse_config(_base(), tmp_path)
    assert cfg.providers[0].models["m"].price.scale == 1000
    d = _base()
    d["providers"][0]["price_table"] = "openai"
    d["providers"][0]["models"] = [{"id": "gpt-4o", "output": 1}]
    p = parse_config(d, tmp_path).providers[0].models["gpt-4o"].price
    assert (p.input, p.output, p.max_output) == (250_000, 1, 16384)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["providers"][0].update(api="grpc"), "api must be"),
    (lambda d: d["providers"][0].update(base_url="ftp://x"), "base_url"),
    (lambda d: d["providers"][0].update(colour="red"), "unknown setting"),
    (lambda d: d["providers"][0].update(models=["nope"]), "has no price"),
    (lambda d: d["providers"][0].update(models=[]), "serves no models"),
    (lambda d: d["providers"].append(dict(d["providers"][0])), "unique"),
    (lambda d: d.update(rates={"USD/EUR": 0.9}), "decimal string"),
    (lambda d: d.update(extra={}), "unknown top-level"),
    (lambda d: d["relay"].update(root_keys=[]), "root_keys"),
    (lambda d: d["relay"].update(max_body_bytes=10), "limits"),
    (lambda d: d["providers"][0]["models"][0].update(input=-1), "non-negative"),
    (lambda d: d["providers"][0]["models"][0].pop("currency"), "currency"),
])
def test_config_errors(tmp_path: Path, change: Any, message: str) -> None:
    d = _base()
    change(d)
    with pytest.raises(ConfigError, match=message):
        parse_config(d, tmp_path)


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[relay\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_long_context_tier_raises_cache_prices_too() -> None:
    """Anthropic: prompt-caching multipliers apply on top of long-context prices, and the
    200K threshold counts cache reads and writes (prices.toml cites the page and date)."""
    sonnet = default_table().section("anthropic")["claude-sonnet-4-5"]
    short = sonnet.raw_cost(input_tokens=0, output_tokens=0, cached_input_tokens=100_000,
                            cache_write_tokens=100_000)
    assert short == 100_000 * 30_000 + 100_000 * 600_000
    # 200,001 input tokens in all, most of them cache reads and writes: the long tier
    long = sonnet.raw_cost(input_tokens=1, output_tokens=0, cached_input_tokens=100_000,
                           cache_write_tokens=100_000)
    assert long == 1 * 600_000 + 100_000 * 60_000 + 100_000 * 1_200_000
    # without explicit long cache prices, the short ones are scaled by input_long / input
    p = Price("USD", 1000, input=300_000, output=1_500_000, cached_input=30_000,
              cache_write=375_000, long_context_above=200_000, input_long=600_000,
              output_long=2_250_000)
    assert p.raw_cost(input_tokens=0, output_tokens=0, cached_input_tokens=200_001) == (
        200_001 * 60_000)
    assert p.raw_cost(input_tokens=0, output_tokens=0, cache_write_tokens=200_001) == (
        200_001 * 750_000)
    assert p.raw_cost(input_tokens=0, output_tokens=0, cache_write_tokens=200_000) == (
        200_000 * 375_000)
