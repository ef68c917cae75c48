"""The relay through the real openai and anthropic SDKs: only base_url and api_key change."""

from __future__ import annotations

from typing import Any

import httpx
from relay_harness import (
    FAKE_KEY,
    HELLO_ANTHROPIC,
    HELLO_OPENAI,
    Relay,
    assert_no_key,
    fake_requests,
    token_id,
)

from capwallet import caveats as cav

HELLO = [{"role": "user", "content": "hello there"}]  # 10 input tokens at the fake
# relay-test: 10 in * 0.1 + 16 out * 0.3 = 5.8 cents, counted in microunits
COST_USD = 5_800_000


def test_openai_non_stream(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.App("https://app.example"))
    r = relay.openai(tok).chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                                  max_tokens=32)
    content = r.choices[0].message.content
    assert content is not None and content.split()[0] == "alpha"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (10, 16)
    [row] = relay.ledger(tok)
    assert (row.status, row.provider, row.model, row.app) == (
        "ok", "openai", "relay-test", "https://app.example")
    assert (row.input_tokens, row.output_tokens, row.cost, row.currency) == (
        10, 16, COST_USD, "USD")
    assert row.token_id == token_id(tok) and row.latency_ms >= 0
    assert row.request_body is None and row.response_body is None
    assert list(relay.counters(tok).values()) == [COST_USD]
    # The provider got the relay's key, not the token; the app's max_tokens went through, in
    # the field this provider's config says it honours (max_completion_tokens), alone.
    last = fake_requests(relay)[-1]
    assert last["auth_ok"] is True
    assert last["body"]["max_completion_tokens"] == 32
    assert "max_tokens" not in last["body"]


def test_openai_stream_without_usage_request(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    chunks = list(relay.openai(tok).chat.completions.create(
        model="relay-test", messages=HELLO_OPENAI, max_tokens=32, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split()[:2] == ["alpha", "bravo"] and len(text.split()) == 16
    # The app did not ask for usage: the usage chunk the relay requested is not passed on.
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)
    last = fake_requests(relay)[-1]
    assert last["body"]["stream_options"] == {"include_usage": True}
    [row] = relay.ledger(tok)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "ok", 10, 16, COST_USD)


def test_openai_stream_with_usage_request(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    chunks = list(relay.openai(tok).chat.completions.create(
        model="relay-test", messages=HELLO_OPENAI, max_tokens=32, stream=True,
        stream_options={"include_usage": True}))
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 16
    assert relay.ledger(tok)[0].cost == COST_USD


def test_openai_injects_output_cap(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.MaxOutputTokens(12))
    r = relay.openai(tok).chat.completions.create(model="relay-test", messages=HELLO_OPENAI)
    assert r.usage is not None and r.usage.completion_tokens == 12
    assert r.choices[0].finish_reason == "length"
    assert fake_requests(relay)[-1]["body"]["max_completion_tokens"] == 12
    # Without a token cap the model's limit is the bound (gpt-4o-mini: 16384).
    tok2 = relay.mint(cav.Budget(1000, "USD", "month"))
    relay.openai(tok2).chat.completions.create(model="gpt-4o-mini", messages=HELLO_OPENAI)
    assert fake_requests(relay)[-1]["body"]["max_completion_tokens"] == 16384


def test_output_cap_reaches_the_provider_in_the_field_it_honours(relay: Relay) -> None:
    # deepseek's config leaves max_tokens_field at max_tokens (the field DeepSeek reads). An
    # app's max_completion_tokens alone, or beside a larger max_tokens, must arrive as the one
    # max_tokens the reservation was made for; else the provider's default bounds the answer.
    cases: list[tuple[dict[str, Any], int]] = [
        ({"max_completion_tokens": 5}, 5),
        ({"max_tokens": 8000, "max_completion_tokens": 3}, 3),
        ({"max_tokens": 6}, 6)]
    for extra, cap in cases:
        tok = relay.mint(cav.Budget(1000, "USD", "month"))
        r = relay.openai(tok).chat.completions.create(model="deepseek-chat", messages=HELLO_OPENAI,
                                                      **extra)
        assert r.usage is not None and r.usage.completion_tokens == cap
        body = fake_requests(relay)[-1]["body"]
        assert body["max_tokens"] == cap and "max_completion_tokens" not in body
        [row] = relay.ledger(tok)
        assert row.output_tokens == cap
    # The reservation is for the smaller cap, and only that cap reaches the provider: a budget
    # of 1 cent affords 3 output tokens of relay-out (0.3 cent each, input free), not 8000.
    tok = relay.mint(cav.Budget(1, "USD", "month"))
    r2 = relay.post("/v1/chat/completions", {
        "model": "relay-out", "messages": HELLO, "max_tokens": 8000,
        "max_completion_tokens": 3}, tok)
    assert r2.status_code == 200, r2.text
    body = fake_requests(relay)[-1]["body"]
    assert body["max_completion_tokens"] == 3 and "max_tokens" not in body
    [row] = relay.ledger(tok)
    assert (row.output_tokens, row.cost) == (3, 900_000)


def test_openai_n_choices(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.openai(tok).chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                                  max_tokens=8, n=3)
    assert len(r.choices) == 3
    row = relay.ledger(tok)[0]
    assert row.output_tokens == 24  # 3 choices x 8
    assert row.cost == 8_200_000  # 10 * 0.1 + 24 * 0.3 = 8.2 cents


def test_anthropic_non_stream(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    m = relay.anthropic(tok).messages.create(model="claude-test", max_tokens=32,
                                             messages=HELLO_ANTHROPIC)
    assert m.content[0].type == "text" and m.content[0].text.startswith("alpha")
    assert (m.usage.input_tokens, m.usage.output_tokens) == (10, 16)
    [row] = relay.ledger(tok)
    assert (row.provider, row.model, row.input_tokens, row.output_tokens, row.cost) == (
        "anthropic", "claude-test", 10, 16, COST_USD)


def test_anthropic_stream(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    with relay.anthropic(tok).messages.stream(model="claude-test", max_tokens=32,
                                              messages=HELLO_ANTHROPIC) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert len(text.split()) == 16 and final.usage.output_tokens == 16
    [row] = relay.ledger(tok)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "ok", 10, 16, COST_USD)


def test_anthropic_injects_max_tokens(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.MaxOutputTokens(5))
    r = relay.post("/v1/messages", {"model": "claude-test", "messages": HELLO}, tok,
                   auth="x-api-key")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["output_tokens"] == 5


def test_embeddings(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    e = relay.openai(tok).embeddings.create(model="text-embedding-3-small",
                                            input=["one two", "three"])
    assert len(e.data) == 2
    [row] = relay.ledger(tok)
    assert row.operation == "embeddings" and row.output_tokens == 0
    assert row.input_tokens == e.usage.prompt_tokens
    assert row.cost == 2 * row.input_tokens  # 0.02 USD per million: 2 microcents a token


def test_models_lists_only_allowed(relay: Relay) -> None:
    tok = relay.mint(cav.Models(("gpt-4o-mini", "claude-test", "not-served")))
    # Listed per API: each SDK sees only the models it can call.
    ids = [m.id for m in relay.openai(tok).models.list()]
    assert ids == ["gpt-4o-mini"]
    assert [m.id for m in relay.anthropic(tok).models.list()] == ["claude-test"]
    tok2 = relay.mint(cav.Providers(("anthropic",)))
    ids2 = [m.id for m in relay.anthropic(tok2).models.list()]
    assert "claude-test" in ids2 and "gpt-4o-mini" not in ids2
    r = httpx.get(relay.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token"


def test_budget_in_another_currency(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "EUR", "month"))
    r = relay.chat(tok, max_tokens=32)
    assert r.status_code == 200
    assert r.headers["x-capwallet-fx"] == "1 USD = 0.87 EUR"
    [row] = relay.ledger(tok)
    # 5.8 USD cents * 0.87 = 5.046 EUR cents, in microunits.
    assert (row.cost, row.currency) == (5_046_000, "EUR")
    assert list(relay.counters(tok).values()) == [5_046_000]


def test_local_zero_price_model_is_never_blocked_by_budget(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(0, "EUR", "month"))
    r = relay.chat(tok, model="llama3.2")
    assert r.status_code == 200, r.text
    assert relay.ledger(tok)[0].cost == 0
    denied = relay.chat(tok, model="relay-test", max_tokens=4)
    assert denied.status_code == 429
    # Nor by a budget in a currency the config has no rate for (USD prices, a JPY budget): a
    # free call costs nothing in every currency. A priced model is still refused for want of
    # a rate.
    tok = relay.mint(cav.Budget(0, "JPY", "month"))
    r = relay.chat(tok, model="llama3.2")
    assert r.status_code == 200, r.text
    assert "x-capwallet-fx" not in r.headers
    unpriced = relay.chat(tok, model="relay-test", max_tokens=4)
    assert unpriced.status_code == 403
    assert unpriced.headers["x-capwallet-reason"] == "price_unknown"


def test_token_in_x_api_key_for_openai_route(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.post("/v1/chat/completions", {"model": "relay-test", "messages": HELLO,
                                            "max_tokens": 4}, tok, auth="x-api-key")
    assert r.status_code == 200
    assert FAKE_KEY not in r.text
    assert_no_key(r)


def test_healthz(relay: Relay) -> None:
    r = httpx.get(relay.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
