"""Output caps the relay lowers instead of refusing (spec/budgets.md, "Output caps").

Frameworks send large default caps the app never chose (langchain-anthropic, litellm's
anthropic/ and @ai-sdk/anthropic send max_tokens=64000; ChatOpenAI(max_tokens=1000) is common):
the token's max-output-tokens and the remaining budget lower them, and the relay says so in
the x-capwallet-output-cap response header. These run each framework with its real defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import openai
from relay_harness import HELLO_ANTHROPIC, HELLO_OPENAI, Relay, error_code, fake_requests

from capwallet import caveats as cav

HELLO = [{"role": "user", "content": "hello there"}]


def test_token_cap_lowers_the_apps_cap(relay: Relay) -> None:
    tok = relay.mint(cav.MaxOutputTokens(8))
    raw = relay.openai(tok).chat.completions.with_raw_response.create(
        model="relay-test", messages=HELLO_OPENAI, max_tokens=1000)
    assert raw.headers["x-capwallet-output-cap"] == (
        "requested=1000; applied=8; field=max_completion_tokens; reason=max-output-tokens")
    r = raw.parse()
    assert r.choices[0].finish_reason == "length" and r.usage is not None
    assert r.usage.completion_tokens == 8
    assert fake_requests(relay)[-1]["body"]["max_completion_tokens"] == 8
    # Anthropic: stop_reason max_tokens; Responses: status incomplete.
    m = relay.anthropic(tok).messages.with_raw_response.create(
        model="claude-test", max_tokens=4000, messages=HELLO_ANTHROPIC)
    assert m.headers["x-capwallet-output-cap"].startswith("requested=4000; applied=8;")
    assert m.parse().stop_reason == "max_tokens"
    tok16 = relay.mint(cav.MaxOutputTokens(16))
    resp = relay.openai(tok16).responses.create(model="gpt-5-test", input="hello there",
                                                max_output_tokens=4000)
    assert resp.status == "incomplete" and resp.usage is not None
    assert resp.usage.output_tokens == 16


def test_budget_lowers_the_cap_to_what_it_affords(fresh_relay: Callable[..., Relay]) -> None:
    r = fresh_relay()
    # relay-nolimit: 0.1 cent per input token, 0.3 cent per output token, no max_output.
    # 5 USD left: 10 input tokens (estimate ~150) leave room for about 1,600 output tokens.
    tok = r.mint(cav.Budget(500, "USD", "month"))
    body = {"model": "relay-nolimit", "messages": HELLO, "max_tokens": 64000}
    ok = r.post("/v1/chat/completions", body, tok)
    assert ok.status_code == 200, ok.text
    note = ok.headers["x-capwallet-output-cap"]
    applied = int(note.split("applied=")[1].split(";")[0])
    assert note.startswith("requested=64000;") and "reason=budget" in note
    assert 256 <= applied < 1700
    sent = fake_requests(r)[-1]["body"]["max_completion_tokens"]
    assert sent == applied
    # Never an overspend: the reservation at the applied cap fit the budget.
    [row] = r.ledger(tok)
    assert row.cost <= 500 * 1_000_000
    # The app may choose a refusal instead.
    refused = r.post("/v1/chat/completions", body, tok,
                     headers={"x-capwallet-output-cap": "refuse"})
    assert refused.status_code == 429 and error_code(refused) == "budget_exceeded"
    # Below the useful minimum (256 tokens) the call is refused as before.
    poor = r.mint(cav.Budget(50, "USD", "month"))
    low = r.post("/v1/chat/completions", body, poor)
    assert low.status_code == 429 and error_code(low) == "budget_exceeded"


def test_langchain_anthropic_default_max_tokens(relay: Relay) -> None:
    from langchain_anthropic import ChatAnthropic

    tok = relay.mint(cav.MaxOutputTokens(12), cav.Budget(1000, "USD", "month"))
    httpx.delete(relay.fake + "/_fake/requests")
    # pydantic model: its typed __init__ names the field model_name (model is its alias) and
    # api_key a SecretStr (a str is converted), so mypy refuses what users write.
    llm = ChatAnthropic(model="claude-sonnet-4-5", api_key=tok,  # type: ignore[call-arg,arg-type]
                        base_url=relay.url, max_retries=0)
    out = llm.invoke("hello there")
    assert out.content == " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
                                    "golf", "hotel", "india", "juliet", "kilo", "lima"])
    assert out.response_metadata["stop_reason"] == "max_tokens"
    sent = fake_requests(relay)[-1]["body"]
    assert sent["max_tokens"] == 12
    # Token counting (POST /v1/messages/count_tokens) works through the relay too.
    from langchain_core.messages import HumanMessage

    assert llm.get_num_tokens_from_messages([HumanMessage("hello there")]) == 10


def test_litellm_anthropic_default_max_tokens(relay: Relay) -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of its price list
    import litellm

    tok = relay.mint(cav.MaxOutputTokens(12))
    httpx.delete(relay.fake + "/_fake/requests")
    r = litellm.completion(model="anthropic/claude-sonnet-4-5", messages=HELLO,
                           api_key=tok, api_base=relay.url, num_retries=0)
    assert r.choices[0].finish_reason == "length"  # litellm maps max_tokens to length
    sent = fake_requests(relay)[-1]["body"]
    assert sent["max_tokens"] == 12
    assert len(r.choices[0].message.content.split()) == 12


def test_chat_openai_max_tokens_1000(relay: Relay) -> None:
    tok = relay.mint(cav.MaxOutputTokens(300))
    r = relay.openai(tok).chat.completions.create(model="relay-nolimit", messages=HELLO_OPENAI,
                                                  max_tokens=1000)
    assert r.choices[0].finish_reason == "stop"  # 16 words fit under 300
    assert fake_requests(relay)[-1]["body"]["max_completion_tokens"] == 300
    assert isinstance(r, openai.types.chat.ChatCompletion)
