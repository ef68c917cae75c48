"""The fake provider, driven by the real openai/anthropic SDKs and a raw httpx client.

Expected token counts are worked out by hand from the documented formula
(3 per request + per message 4 + ceil(chars / 4); output = min(max_tokens, 16)),
so a change to the formula or to the wire shapes fails here first.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from fake_provider import REPLY_WORDS, running_fake_provider

KEY = "sk-test-fake-0123456789"
WRONG = "sk-test-wrong-000"
BEARER = {"authorization": f"Bearer {KEY}"}
XKEY = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

# "You are terse." is 14 chars -> 4 tokens; "Say hello to the world, please." is 31 chars -> 8.
SYSTEM = "You are terse."
PROMPT = "Say hello to the world, please."
CHAT: list[ChatCompletionMessageParam] = [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": PROMPT}]
INPUT_TOKENS = 3 + (4 + 4) + (4 + 8)  # = 23, for both flavors (Anthropic system is a message)
USER_ONLY: list[MessageParam] = [{"role": "user", "content": PROMPT}]


def words(n: int) -> str:
    return " ".join(REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_fake_provider(KEY) as url:
        yield url


# Clients are module-wide: building one (its TLS context) costs ~0.1 s.
@pytest.fixture(scope="module")
def shared_raw(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as client:
        yield client


@pytest.fixture
def raw(shared_raw: httpx.Client) -> httpx.Client:
    """The raw client, on a provider with no recorded requests and no queued faults."""
    shared_raw.delete("/_fake/requests").raise_for_status()
    shared_raw.delete("/_fake/faults").raise_for_status()
    return shared_raw


@pytest.fixture(scope="module")
def shared_oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def shared_claude(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)


@pytest.fixture
def oai(shared_oai: openai.OpenAI, raw: httpx.Client) -> openai.OpenAI:
    return shared_oai


@pytest.fixture
def claude(shared_claude: anthropic.Anthropic, raw: httpx.Client) -> anthropic.Anthropic:
    return shared_claude


def chat(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post("/v1/chat/completions", headers=BEARER,
                    json={"model": "gpt-4o-mini", "messages": CHAT, **body})


def message(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post("/v1/messages", headers=XKEY,
                    json={"model": "claude-haiku-4-5", "max_tokens": 100, "system": SYSTEM,
                          "messages": USER_ONLY, **body})


def sse_data(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


def stream_until_dropped(raw: httpx.Client, path: str, headers: dict[str, str],
                         body: dict[str, Any]) -> tuple[list[str], Exception | None]:
    """The SSE data lines received before the stream ended, and how it ended."""
    lines: list[str] = []
    try:
        with raw.stream("POST", path, headers=headers, json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(line[len("data: "):])
    except httpx.TransportError as exc:
        return lines, exc
    return lines, None


# --- OpenAI flavor through the openai SDK -------------------------------------------------


def test_openai_chat_usage_and_text_follow_the_formula(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == words(16)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens,
            reply.usage.total_tokens) == (INPUT_TOKENS, 16, INPUT_TOKENS + 16)


def test_openai_caps_are_honoured_and_reported_as_length(oai: openai.OpenAI) -> None:
    capped = oai.chat.completions.create(model="m", messages=CHAT, max_tokens=5)
    assert capped.choices[0].message.content == words(5)
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 5
    newer = oai.chat.completions.create(model="m", messages=CHAT,
                                        max_completion_tokens=3)
    assert newer.usage is not None and newer.usage.completion_tokens == 3
    both = oai.chat.completions.create(model="m", messages=CHAT,
                                       max_tokens=7, max_completion_tokens=2)
    assert both.usage is not None and both.usage.completion_tokens == 2
    roomy = oai.chat.completions.create(model="m", messages=CHAT, max_tokens=500)
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.usage is not None and roomy.usage.completion_tokens == 16


def test_openai_n_choices_multiply_completion_tokens(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="m", messages=CHAT, n=3, max_tokens=4)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content == words(4) for c in reply.choices)
    assert reply.usage is not None and reply.usage.completion_tokens == 12


def test_openai_stream_with_include_usage_ends_with_a_usage_only_chunk(
        oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT, stream=True, max_tokens=6,
        stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.total_tokens) == (INPUT_TOKENS, 6, INPUT_TOKENS + 6)
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    contents = [c.choices[0].delta.content for c in body if c.choices[0].delta.content]
    assert len(contents) == 6
    assert "".join(contents) == words(6)
    assert body[0].choices[0].delta.role == "assistant"
    assert body[-1].choices[0].finish_reason == "length"


def test_openai_stream_without_include_usage_sends_no_usage(oai: openai.OpenAI,
                                                            raw: httpx.Client) -> None:
    chunks = list(oai.chat.completions.create(model="m", messages=CHAT, stream=True))
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    lines = sse_data(chat(raw, stream=True).text)
    assert lines[-1] == "[DONE]"
    assert all("usage" not in json.loads(line) for line in lines[:-1])


def test_openai_stream_with_n_interleaves_choices(raw: httpx.Client) -> None:
    lines = sse_data(chat(raw, stream=True, n=2, max_tokens=2,
                          stream_options={"include_usage": True}).text)
    chunks = [json.loads(line) for line in lines[:-1]]
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        choice = chunk["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == {0: words(2), 1: words(2)}
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_openai_rejects_stream_options_without_stream(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="m", messages=CHAT,
                                    stream_options={"include_usage": True})
    assert caught.value.status_code == 400


def test_embeddings_are_deterministic_and_metered(oai: openai.OpenAI) -> None:
    # "hello world" is 11 chars -> 3 tokens, "abc" -> 1.
    first = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "abc"])
    again = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "abc"],
                                  encoding_format="float")
    assert (first.usage.prompt_tokens, first.usage.total_tokens) == (4, 4)
    assert [d.index for d in first.data] == [0, 1]
    assert [d.embedding for d in first.data] == [d.embedding for d in again.data]  # base64==float
    vector = first.data[0].embedding
    assert len(vector) == 8
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-5
    assert first.data[0].embedding != first.data[1].embedding
    single = oai.embeddings.create(model="e", input="hello world", dimensions=32)
    assert len(single.data[0].embedding) == 32
    assert single.usage.prompt_tokens == 3
    tokens = oai.embeddings.create(model="e", input=[[1, 2, 3], [4, 5]])
    assert tokens.usage.prompt_tokens == 5


def test_models_list_in_both_flavors(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    openai_ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in openai_ids
    anthropic_ids = [m.id for m in claude.models.list()]
    assert "claude-haiku-4-5" in anthropic_ids


# --- Anthropic flavor through the anthropic SDK -------------------------------------------


def test_anthropic_message_usage_and_text_follow_the_formula(
        claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, system=SYSTEM,
                                   messages=USER_ONLY)
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.content[0].type == "text" and reply.content[0].text == words(16)
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (INPUT_TOKENS, 16)
    capped = claude.messages.create(model="claude-haiku-4-5", max_tokens=4,
                                    messages=USER_ONLY)
    assert capped.stop_reason == "max_tokens"
    assert capped.content[0].type == "text" and capped.content[0].text == words(4)
    assert (capped.usage.input_tokens, capped.usage.output_tokens) == (3 + 4 + 8, 4)


def test_anthropic_stream_has_the_real_event_sequence(claude: anthropic.Anthropic) -> None:
    events = list(claude.messages.create(model="claude-haiku-4-5", max_tokens=5, system=SYSTEM,
                                         messages=USER_ONLY, stream=True))
    assert [e.type for e in events] == (
        ["message_start", "content_block_start"] + ["content_block_delta"] * 5
        + ["content_block_stop", "message_delta", "message_stop"])
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.input_tokens == INPUT_TOKENS
    assert delta.type == "message_delta" and delta.usage.output_tokens == 5
    assert delta.delta.stop_reason == "max_tokens"
    text = "".join(e.delta.text for e in events
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == words(5)


def test_anthropic_stream_helper_accumulates_the_final_message(
        claude: anthropic.Anthropic, raw: httpx.Client) -> None:
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=64, system=SYSTEM,
                                messages=USER_ONLY) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == words(16)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT_TOKENS, 16)
    assert final.stop_reason == "end_turn"
    assert "event: ping" in message(raw, stream=True).text  # the real API pings too


def test_anthropic_count_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="claude-haiku-4-5", system=SYSTEM,
                                           messages=USER_ONLY)
    assert counted.input_tokens == INPUT_TOKENS


def test_anthropic_requires_max_tokens(raw: httpx.Client) -> None:
    response = raw.post("/v1/messages", headers=XKEY,
                        json={"model": "claude-haiku-4-5", "messages": USER_ONLY})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


# --- auth and observability ---------------------------------------------------------------


def test_wrong_keys_get_401_in_each_providers_shape(base_url: str, raw: httpx.Client) -> None:
    bad_openai = openai.OpenAI(api_key=WRONG, base_url=f"{base_url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as oa:
        bad_openai.chat.completions.create(model="m", messages=CHAT)
    assert oa.value.status_code == 401
    assert oa.value.code == "invalid_api_key"
    bad_claude = anthropic.Anthropic(api_key=WRONG, base_url=base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as an:
        bad_claude.messages.create(model="c", max_tokens=5, messages=USER_ONLY)
    assert an.value.status_code == 401
    assert isinstance(an.value.body, dict)
    assert an.value.body["error"]["type"] == "authentication_error"

    missing = raw.post("/v1/chat/completions", json={"model": "m", "messages": CHAT})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    # the right key in Anthropic's header is refused by the OpenAI routes, and never echoed
    crossed = raw.post("/v1/chat/completions", headers={"x-api-key": KEY},
                       json={"model": "m", "messages": CHAT})
    assert crossed.status_code == 401
    assert crossed.json()["error"]["type"] == "invalid_request_error"
    assert KEY not in crossed.text and WRONG not in oa.value.response.text
    # Anthropic takes x-api-key, or the Bearer form its current SDK sends
    bearer = raw.post("/v1/messages", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "c", "max_tokens": 5, "messages": USER_ONLY})
    assert bearer.status_code == 200
    wrong_x = raw.post("/v1/messages", headers={"x-api-key": WRONG, **BEARER},
                       json={"model": "c", "max_tokens": 5, "messages": USER_ONLY})
    assert wrong_x.status_code == 401
    assert wrong_x.json()["error"]["type"] == "authentication_error"
    assert raw.get("/v1/models", headers={"x-api-key": WRONG}).status_code == 401


def test_requests_are_recorded_without_the_key(oai: openai.OpenAI,
                                               claude: anthropic.Anthropic,
                                               raw: httpx.Client) -> None:
    oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT, max_tokens=3)
    claude.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=USER_ONLY)
    raw.post("/v1/chat/completions", headers={"authorization": f"Bearer {WRONG}",
                                              "x-echo": f"leak {KEY}"},
             json={"model": "m", "messages": CHAT})
    listing = raw.get("/_fake/requests")
    assert KEY not in listing.text and WRONG not in listing.text
    first, second, third = listing.json()
    assert (first["method"], first["path"], first["auth_ok"], first["status"]) == (
        "POST", "/v1/chat/completions", True, 200)
    assert first["body"] == {"model": "gpt-4o-mini", "messages": CHAT, "max_tokens": 3}
    assert "authorization" not in first["headers"]
    assert first["headers"]["content-type"] == "application/json"
    assert first["auth_header"] == "authorization"
    assert second["path"] == "/v1/messages" and second["auth_ok"] is True
    assert second["headers"]["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert "x-api-key" not in second["headers"] and "authorization" not in second["headers"]
    assert (third["auth_ok"], third["status"]) == (False, 401)
    assert third["headers"]["x-echo"] == "[redacted]"
    assert raw.delete("/_fake/requests").json() == {"cleared": 3}
    assert raw.get("/_fake/requests").json() == []


def test_unknown_route_is_a_json_404(raw: httpx.Client) -> None:
    response = raw.post("/v1/completions", headers=BEARER, json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"


# --- fault modes, observed from a raw client -----------------------------------------------


def test_fault_delay(raw: httpx.Client) -> None:
    started = time.monotonic()
    response = chat(raw, model="fault-delay:300")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 16


def test_fault_http500_in_both_shapes(raw: httpx.Client) -> None:
    response = chat(raw, model="fault-http500")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    response = message(raw, model="fault-http500")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"


def test_fault_http429_in_both_shapes(raw: httpx.Client) -> None:
    response = chat(raw, model="fault-http429")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    response = message(raw, model="fault-http429")
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("stream", [False, True])
def test_fault_reset_drops_the_connection_without_a_response(raw: httpx.Client,
                                                             stream: bool) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        chat(raw, model="fault-reset", stream=stream)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        message(raw, model="fault-reset", stream=stream)
    assert chat(raw).status_code == 200  # the server itself is fine
    recorded = raw.get("/_fake/requests").json()
    assert [r["fault"] for r in recorded] == ["reset", "reset", None]
    assert [r["status"] for r in recorded] == [None, None, 200]


def test_fault_malformed(raw: httpx.Client, oai: openai.OpenAI) -> None:
    for response in (chat(raw, model="fault-malformed"),
                     message(raw, model="fault-malformed"),
                     raw.post("/v1/embeddings", headers=BEARER,
                              json={"model": "fault-malformed", "input": "x"})):
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    for response in (chat(raw, model="fault-malformed", stream=True),
                     message(raw, model="fault-malformed", stream=True)):
        assert response.status_code == 200
        lines = sse_data(response.text)
        broken = 0
        for line in lines:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                broken += line != "[DONE]"
        assert broken == 1
    with pytest.raises(json.JSONDecodeError):
        list(oai.chat.completions.create(model="fault-malformed", messages=CHAT, stream=True))


def test_fault_stream_cut_openai(raw: httpx.Client) -> None:
    lines, ended = stream_until_dropped(
        raw, "/v1/chat/completions", BEARER,
        {"model": "fault-stream_cut:3", "messages": CHAT, "stream": True,
         "stream_options": {"include_usage": True}})
    assert isinstance(ended, httpx.RemoteProtocolError)
    chunks = [json.loads(line) for line in lines]  # no [DONE] among them
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents == ["", "alpha", " bravo", " charlie"]
    assert all(c["usage"] is None and c["choices"][0]["finish_reason"] is None for c in chunks)


def test_fault_stream_cut_anthropic(raw: httpx.Client, claude: anthropic.Anthropic) -> None:
    lines, ended = stream_until_dropped(
        raw, "/v1/messages", XKEY,
        {"model": "fault-stream_cut:2", "max_tokens": 50, "messages": USER_ONLY, "stream": True})
    assert isinstance(ended, httpx.RemoteProtocolError)
    types = [json.loads(line)["type"] for line in lines]
    assert types == ["message_start", "content_block_start", "ping",
                     "content_block_delta", "content_block_delta"]
    with pytest.raises(Exception, match="peer closed connection"):  # the SDK lets it through
        list(claude.messages.create(model="fault-stream_cut:2", max_tokens=50,
                                    messages=USER_ONLY, stream=True))


def test_fault_no_usage(raw: httpx.Client) -> None:
    assert "usage" not in chat(raw, model="fault-no_usage").json()
    assert "usage" not in message(raw, model="fault-no_usage").json()
    embedded = raw.post("/v1/embeddings", headers=BEARER,
                        json={"model": "fault-no_usage", "input": "x"})
    assert "usage" not in embedded.json() and embedded.json()["data"]
    lines = sse_data(chat(raw, model="fault-no_usage", stream=True,
                          stream_options={"include_usage": True}).text)
    assert lines[-1] == "[DONE]"
    assert all("usage" not in json.loads(line) and json.loads(line)["choices"]
               for line in lines[:-1])
    events = [json.loads(line) for line in sse_data(message(raw, model="fault-no_usage",
                                                            stream=True).text)]
    assert events[-1]["type"] == "message_stop"
    assert "usage" not in events[0]["message"]
    assert next(e for e in events if e["type"] == "message_delta").keys() == {"type", "delta"}


def test_fault_no_output_count(raw: httpx.Client) -> None:
    # The usage keeps its input count and drops the output's (as a gateway that drops it).
    model = "fault-no_output_count"
    assert chat(raw, model=model).json()["usage"].keys() == {
        "prompt_tokens", "prompt_tokens_details", "completion_tokens_details"}
    lines = sse_data(chat(raw, model=model, stream=True,
                          stream_options={"include_usage": True}).text)
    [usage] = [json.loads(line)["usage"] for line in lines[:-1]
               if json.loads(line).get("usage")]
    assert "completion_tokens" not in usage and "total_tokens" not in usage
    assert usage["prompt_tokens"] > 0
    answer = message(raw, model=model).json()["usage"]
    assert "output_tokens" not in answer and answer["input_tokens"] > 0
    events = [json.loads(line) for line in sse_data(message(raw, model=model,
                                                            stream=True).text)]
    assert events[0]["message"]["usage"]["output_tokens"] == 1  # as the real API sends it
    assert next(e for e in events if e["type"] == "message_delta")["usage"] == {}
    for stream in (False, True):
        got = raw.post("/v1/responses", headers=BEARER,
                       json={"model": model, "input": "x", "stream": stream})
        if stream:
            got_usage = [json.loads(line) for line in sse_data(got.text)][-1]["response"]["usage"]
        else:
            got_usage = got.json()["usage"]
        assert "output_tokens" not in got_usage and "total_tokens" not in got_usage
        assert got_usage["input_tokens"] > 0
    embedded = raw.post("/v1/embeddings", headers=BEARER, json={"model": model, "input": "x"})
    assert embedded.json()["usage"] == {"prompt_tokens": 1, "total_tokens": 1}  # unchanged


def test_fault_slow_stream(raw: httpx.Client) -> None:
    # 1 role chunk + 3 content chunks + finish chunk + [DONE] = 6 frames, 5 gaps of 60 ms
    arrivals: list[float] = []
    started = time.monotonic()
    with raw.stream("POST", "/v1/chat/completions", headers=BEARER,
                    json={"model": "fault-slow_stream:60", "messages": CHAT, "stream": True,
                          "max_tokens": 3}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    assert arrivals[-1] >= 5 * 0.06  # the server slept before each frame after the first
    # a non-stream call is not slowed (one 500 ms sleep would show)
    started = time.monotonic()
    assert chat(raw, model="fault-slow_stream:500").status_code == 200
    assert time.monotonic() - started < 0.5


def test_fault_long_ignores_the_cap(raw: httpx.Client, oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="fault-long:40", messages=CHAT, max_tokens=5)
    assert reply.choices[0].message.content == words(40)
    assert reply.usage is not None and reply.usage.completion_tokens == 40
    events = [json.loads(line) for line in sse_data(
        message(raw, model="fault-long:40", max_tokens=5, stream=True).text)]
    deltas = [e for e in events if e["type"] == "content_block_delta"]
    assert len(deltas) == 40
    assert next(e for e in events if e["type"] == "message_delta")["usage"] == {
        "output_tokens": 40}


def test_queued_faults_apply_to_the_next_n_calls_in_order(raw: httpx.Client) -> None:
    assert raw.post("/_fake/faults", json={"mode": "http500", "count": 2}).status_code == 200
    queued = raw.post("/_fake/faults", json={"mode": "http429"}).json()["queued"]
    assert queued == [{"mode": "http500", "remaining": 2}, {"mode": "http429", "remaining": 1}]
    # an unauthenticated call does not consume a fault
    assert raw.post("/v1/chat/completions", json={"model": "m", "messages": CHAT}).status_code \
        == 401
    statuses = [chat(raw).status_code, message(raw).status_code,
                raw.post("/v1/embeddings", headers=BEARER,
                         json={"model": "e", "input": "x"}).status_code,
                chat(raw).status_code]
    assert statuses == [500, 500, 429, 200]
    assert raw.get("/_fake/faults").json() == {"queued": []}
    raw.post("/_fake/faults", json={"mode": "delay:5", "count": 9})
    assert raw.delete("/_fake/faults").json() == {"queued": []}
    assert chat(raw).status_code == 200


def test_queued_fault_waits_for_a_call_that_names_no_fault_model(raw: httpx.Client) -> None:
    raw.post("/_fake/faults", json={"mode": "long:30"})
    assert chat(raw, model="fault-http429").status_code == 429
    assert chat(raw, max_tokens=2).json()["usage"]["completion_tokens"] == 30


def test_bad_fault_modes_are_refused(raw: httpx.Client) -> None:
    for body in ({"mode": "explode"}, {"mode": "delay"}, {"mode": "delay:-5"},
                 {"mode": "http500:3"}, {"mode": "http500", "count": 0},
                 {"mode": "long:0"}, {"count": 1}):
        response = raw.post("/_fake/faults", json=body)
        assert response.status_code == 400, body
        assert "error" in response.json()
    unknown = chat(raw, model="fault-explode")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


# --- command line ---------------------------------------------------------------------------


def test_command_line_server_announces_its_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fake_provider", "--port", "0",
         "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, process.kill)  # a server that never announces fails, not hangs
    watchdog.start()
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"fake provider listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, line
        response = httpx.get(f"{match[1]}/v1/models", headers=BEARER, timeout=5)
        assert response.status_code == 200
        assert response.json()["object"] == "list"
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(timeout=10)
