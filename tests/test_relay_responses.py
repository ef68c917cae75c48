"""POST /v1/responses through the official openai SDK: metering, worst case, refusals.

The fake provider counts Responses input as 3 + 4 per message + ceil(chars / 4), replies with
16 words, and spends 8 reasoning tokens first on a gpt-5* model (fake_provider.responses).
"""

from __future__ import annotations

import openai
import pytest
from openai.types.responses import ToolParam
from relay_harness import Relay, error_code, fake_requests

from capwallet import caveats as cav

# relay-test: 0.1 USD cent per input token, 0.3 per output token; in microunits:
IN, OUT = 100_000, 300_000
# "hello there" as a string input: 3 + 4 + 3 = 10 input tokens; 16 output tokens.
PLAIN_COST = 10 * IN + 16 * OUT


def test_create_is_metered_and_the_cap_is_injected(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.openai(tok).responses.create(model="relay-test", input="hello there")
    assert r.output_text.split()[:2] == ["alpha", "bravo"]
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (10, 16)
    [row] = relay.ledger(tok)
    assert (row.status, row.operation, row.input_tokens, row.output_tokens, row.cost) == (
        "ok", "chat", 10, 16, PLAIN_COST)
    # No cap from the app: the relay reserved for the model's largest output (64) and told
    # the provider so, in the field this API uses.
    assert fake_requests(relay)[-1]["body"]["max_output_tokens"] == 64


def test_reasoning_tokens_are_billed_as_output(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.openai(tok).responses.create(
        model="gpt-5-test", instructions="be brief",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hello there"}]}])
    assert r.usage is not None and r.usage.output_tokens_details.reasoning_tokens == 8
    # 3 + (4 + 2) instructions + (4 + 3) message = 16 in; 8 reasoning + 16 visible out.
    [row] = relay.ledger(tok)
    assert (row.input_tokens, row.output_tokens, row.cost) == (16, 24, 16 * IN + 24 * OUT)


def test_stream_is_metered_from_response_completed(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    client = relay.openai(tok)
    with client.responses.stream(model="gpt-5-test", input="hello there",
                                 max_output_tokens=20) as stream:
        events = list(stream)
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    # The cap (20) cut the reply after 8 reasoning tokens: 12 words, status incomplete.
    last = events[-1]
    assert len(deltas) == 12 and last.type == "response.incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 20
    [row] = relay.ledger(tok)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "ok", 10, 20, 10 * IN + 20 * OUT)
    # A plain create(stream=True) too, with the provider's request id passed through.
    raw = client.responses.with_raw_response.create(model="relay-test", input="hello there",
                                                    stream=True)
    assert raw.headers["x-request-id"].startswith("req_fake")
    plain_events = list(raw.parse())
    assert plain_events[-1].type == "response.completed"
    rows = relay.wait_ledger(tok, 2)
    assert [r.cost for r in rows if r.model == "relay-test"] == [PLAIN_COST]


def test_stream_cut_charges_the_worst_case(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    with pytest.raises(openai.APIError):
        with relay.openai(tok).responses.stream(model="fault-stream_cut:2",
                                                input="hello there") as stream:
            for _ in stream:
                pass
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "upstream_error"
    assert row.output_tokens == 64  # the reserved cap: what was streamed cannot bound it


def test_stored_context_is_refused(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    client = relay.openai(tok)
    for extra in ({"previous_response_id": "resp_abc"}, {"conversation": "conv_abc"},
                  {"prompt": {"id": "pmpt_abc"}}):
        with pytest.raises(openai.BadRequestError) as exc:
            client.responses.create(model="relay-test", input="hello there", **extra)
        assert exc.value.code == "unbounded_request"
        assert next(iter(extra)) in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="relay-test",
                                input=[{"type": "item_reference", "id": "msg_abc"}])
    assert "item_reference" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="relay-test", input="hello there", background=True)
    assert exc.value.code == "unsupported_feature"
    assert relay.ledger(tok) == []


def test_reasoning_item_by_id_counts_as_the_models_largest_output(relay: Relay) -> None:
    # A reasoning item without encrypted_content is expanded by the provider: the relay
    # reserves the model's largest output (64) for it, on top of the bytes.
    tok = relay.mint(cav.MaxInputTokens(300))
    item = {"type": "reasoning", "id": "rs_abc", "summary": []}
    body = {"model": "gpt-5-test", "input": [item, {"role": "user", "content": "hi"}]}
    assert relay.post("/v1/responses", body, tok).status_code == 200
    small = relay.mint(cav.MaxInputTokens(len(str(body)) + 100))
    r = relay.post("/v1/responses", body, small)
    assert r.status_code == 400 and error_code(r) == "input_too_large"


def test_built_in_tools(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    client = relay.openai(tok)
    # Web search on a model priced for it: max_tool_calls injected, the call fee settled.
    r = client.responses.create(model="relay-search", input="hello there",
                                tools=[{"type": "web_search"}], max_output_tokens=16)
    assert [o.type for o in r.output] == ["web_search_call", "message"]
    sent = fake_requests(relay)[-1]["body"]
    assert sent["max_tool_calls"] == 4
    [row] = relay.ledger(tok)
    fee = 1_000_000  # 10 USD per 1,000 calls: 1 cent a call, in microunits (micro-cents)
    assert row.cost == (10 + 100) * IN + 16 * OUT + fee
    # Unpriced for this model, or unboundable anywhere: refused, naming the tool.
    unpriced: list[ToolParam] = [
        {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "image_generation"}, {"type": "computer_use_preview",
         "display_width": 1, "display_height": 1, "environment": "browser"}]
    for tool in unpriced:
        with pytest.raises(openai.BadRequestError) as exc:
            client.responses.create(model="relay-test", input="hi", tools=[tool])
        assert exc.value.code == "unbounded_request"
        assert repr(tool["type"]) in exc.value.message
    # Worst case reserved: (k + 1) model passes over input, k results and the output cap.
    small = relay.mint(cav.MaxInputTokens(1000))
    r2 = relay.post("/v1/responses", {"model": "relay-search", "input": "hi",
                                      "tools": [{"type": "web_search"}], "max_tool_calls": 8,
                                      "max_output_tokens": 16}, small)
    assert r2.status_code == 400 and error_code(r2) == "input_too_large"


def test_stream_disconnect_settles_like_other_routes(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-slow_stream:40", "input": "hello there", "max_output_tokens": 32,
            "stream": True}
    relay.hang_up_stream("/v1/responses", body, tok)  # after one chunk
    [row] = relay.wait_ledger(tok, 1)
    # The relay read the stream to response.completed and charged its usage.
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "client_disconnected", 10, 16, PLAIN_COST)
