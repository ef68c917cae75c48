"""A usage that gives the input count but leaves out the output's (a gateway that drops
``completion_tokens``, ``output_tokens``, or message_delta's count) is a missing usage for the
output: charged the reported input and the reserved worst case for the output, ledger status
usage_missing, one log line naming the token id (reference_relay.metering,
Usage.output_missing; reference_relay.calls, Call._settlement). Embeddings produce no output:
their usage, which has no output count, is charged as it says.

Before, the absent count was read as 0 output (chat, Responses) or as message_start's 1 (an
Anthropic stream): status ok, the call charged its input only (seen failing so); an Anthropic
answer without the count was charged the worst case already, but for the input estimate, not
the count it gave, and with no log line.

Behind the relay: the fake provider's ``no_output_count`` fault (its usage keeps the input
count, 10 tokens here, and drops the output's); the apps are the real openai and anthropic
SDKs, which read such answers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from relay_harness import HELLO_ANTHROPIC, HELLO_OPENAI, LogCapture, Relay, token_id

from capwallet import caveats as cav

MODEL = "fault-no_output_count"
CAP = 32  # the app's output cap: the fake answers 16 tokens, the worst case is 32
# 10 input tokens at 0.1 cent and 32 output tokens at 0.3 cent (the harness's test price),
# in microunits; charged 10 input tokens only (1 cent) before.
WORST = 10 * 100_000 + CAP * 300_000
LOG = "usage without an output count"


def _chat(relay: Relay, tok: str, stream: bool) -> None:
    client = relay.openai(tok)
    if not stream:
        r = client.chat.completions.create(model=MODEL, messages=HELLO_OPENAI, max_tokens=CAP)
        assert r.choices[0].message.content
        assert r.usage is not None and r.usage.prompt_tokens == 10
        return
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=HELLO_OPENAI, max_tokens=CAP, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [usage] = [c.usage for c in chunks if c.usage is not None]  # passed on as it came
    assert usage.prompt_tokens == 10


def _responses(relay: Relay, tok: str, stream: bool) -> None:
    client = relay.openai(tok)
    if not stream:
        r = client.responses.create(model=MODEL, input="hello there", max_output_tokens=CAP)
        assert r.output_text and r.usage is not None and r.usage.input_tokens == 10
        return
    with client.responses.stream(model=MODEL, input="hello there",
                                 max_output_tokens=CAP) as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        assert text and s.get_final_response().usage is not None


def _messages(relay: Relay, tok: str, stream: bool) -> None:
    if not stream:
        r = relay.anthropic(tok).messages.create(model=MODEL, max_tokens=CAP,
                                                 messages=HELLO_ANTHROPIC)
        assert r.content and r.usage.input_tokens == 10
        return
    with relay.anthropic(tok).messages.stream(model=MODEL, max_tokens=CAP,
                                              messages=HELLO_ANTHROPIC) as s:
        assert "".join(s.text_stream)
        final = s.get_final_message()
    # message_delta's usage came empty, and was passed on so: the SDK keeps message_start's
    # input count and has no output count.
    usage = final.usage.model_dump()  # output_tokens None, where the SDK's type says int
    assert (usage["input_tokens"], usage["output_tokens"]) == (10, None)


CALLS: dict[str, Callable[[Relay, str, bool], None]] = {
    "chat": _chat, "responses": _responses, "messages": _messages}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(CALLS))
def test_a_usage_without_its_output_count_is_charged_the_worst_case_for_the_output(
        relay: Relay, captured_logs: LogCapture, route: str, stream: bool) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    CALLS[route](relay, tok, stream)
    [row] = relay.wait_ledger(tok, 1)
    # Seen failing on the old code: ("ok", 10, 0, 1_000_000) for chat and Responses;
    # ("ok", 10, 1, 1_300_000) for an Anthropic stream (message_start's count); an Anthropic
    # answer was usage_missing already, but charged the input estimate (174 tokens), not
    # the count it gave, and logged nothing.
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "usage_missing", 10, CAP, WORST)
    assert list(relay.counters(tok).values()) == [WORST]
    lines = [line for line in captured_logs.lines[before:] if LOG in line]
    assert len(lines) == 1, lines
    assert f"token={token_id(tok)} " in lines[0] and tok not in lines[0]
    assert not [line for line in captured_logs.lines[before:] if "Traceback" in line
                or (line.startswith("reference_relay") and " ERROR " in line and LOG not in line)]


def test_the_same_call_with_its_output_count_is_charged_as_it_says(
        relay: Relay, captured_logs: LogCapture) -> None:
    # The control: the fake's usual answer (16 output tokens) is charged 16, status ok.
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    relay.openai(tok).chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                              max_tokens=CAP)
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 10, 16)
    assert not [line for line in captured_logs.lines[before:] if LOG in line]


def test_an_embeddings_usage_has_no_output_count_and_is_charged_as_it_says(
        relay: Relay, captured_logs: LogCapture) -> None:
    # Embeddings produce no output: {"prompt_tokens", "total_tokens"} is their whole usage
    # (the fault changes nothing there), charged as it says, status ok, no log line.
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    r = relay.post("/v1/embeddings", {"model": "text-embedding-3-small",
                                      "input": "hello there"}, tok)
    assert r.status_code == 200, r.text
    assert r.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 3, 0)
    assert not [line for line in captured_logs.lines[before:] if LOG in line]
