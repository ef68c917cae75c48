"""Gemini through its OpenAI-compatible endpoint (the example config's preset), with the
fake provider's Gemini flavour: thinking tokens in total_tokens but not completion_tokens."""

from __future__ import annotations

from relay_harness import HELLO_OPENAI, Relay, fake_requests

from capwallet import caveats as cav


def test_gemini_preset_meters_thinking_tokens(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.openai(tok).chat.completions.create(model="gemini-2.5-flash", messages=HELLO_OPENAI,
                                                  max_tokens=32)
    assert r.usage is not None and r.usage.completion_tokens == 16
    assert r.usage.total_tokens == 10 + 16 + 8
    last = fake_requests(relay)[-1]
    assert last["path"] == "/v1beta/openai/chat/completions"
    assert last["body"]["max_tokens"] == 32  # this provider's default cap field
    [row] = relay.ledger(tok)
    # 8 thinking tokens are billed as output: 10 in at $0.30/M, 24 out at $2.50/M, in
    # microunits of a cent: 10 x 30 + 24 x 250.
    assert (row.provider, row.input_tokens, row.output_tokens, row.cost) == (
        "gemini", 10, 24, 6300)
    # Streamed: the usage chunk is metered the same way.
    list(relay.openai(tok).chat.completions.create(model="gemini-2.5-flash", messages=HELLO_OPENAI,
                                                   max_tokens=32, stream=True))
    rows = relay.wait_ledger(tok, 2)
    assert [x.output_tokens for x in rows] == [24, 24]


def test_gemini_has_no_responses_api(relay: Relay) -> None:
    import openai
    import pytest

    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    before = len(fake_requests(relay))
    with pytest.raises(openai.BadRequestError) as exc:
        relay.openai(tok).responses.create(model="gemini-2.5-flash", input="hello there")
    assert exc.value.code == "wrong_api" and "/v1/chat/completions" in exc.value.message
    assert len(fake_requests(relay)) == before  # refused up front, nothing forwarded
