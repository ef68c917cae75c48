"""No chunk held back: the relay passes each stream event on as soon as it has metered it.

A chat UI shows what arrives; a relay that buffered a stream (waiting for a second event before
sending the first, or for a burst to end) would add the provider's gap between tokens to what
the user waits for. The provider here is a stand-in that sends its first content event and then
stops, until the test says the client has it: if the relay held that event back waiting for
another, the client would never see it while the provider is paused. The provider gives up
waiting after PAUSE_LIMIT seconds and sends the rest, so a relay that re-buffers fails the test
(``released`` is False) instead of hanging it.

Metering still sees every event: the ledger row carries the usage the provider reported last.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from relay_harness import Relay, ServerThread, start_relay, token_id
from starlette.types import Receive, Scope, Send

from capwallet import caveats as cav

PAUSE_LIMIT = 10.0  # seconds the provider waits for the client to see its first event
PROMPT_TOKENS, REPLY = 11, ["Hello", " there", " again"]


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _openai_events() -> tuple[list[bytes], list[bytes]]:
    """(events up to and including the first content delta, the rest of the stream)."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({"id": "chatcmpl-gate", "object": "chat.completion.chunk", "created": 0,
                     "model": "relay-test", "usage": None,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    first = [chunk({"role": "assistant", "content": ""}), chunk({"content": REPLY[0]})]
    rest = [*(chunk({"content": w}) for w in REPLY[1:]), chunk({}, "stop"),
            _sse({"id": "chatcmpl-gate", "object": "chat.completion.chunk", "created": 0,
                  "model": "relay-test", "choices": [],
                  "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(REPLY),
                            "total_tokens": PROMPT_TOKENS + len(REPLY)}}),
            b"data: [DONE]\n\n"]
    return first, rest


def _anthropic_events() -> tuple[list[bytes], list[bytes]]:
    message: dict[str, Any] = {
        "id": "msg_gate", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}}
    first = [_sse({"type": "message_start", "message": message}, "message_start"),
             _sse({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}, "content_block_start"),
             _sse({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": REPLY[0]}}, "content_block_delta")]
    rest = [*(_sse({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}}, "content_block_delta")
              for w in REPLY[1:]),
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                     "stop_sequence": None},
                  "usage": {"output_tokens": len(REPLY)}}, "message_delta"),
            _sse({"type": "message_stop"}, "message_stop")]
    return first, rest


class GatedProvider:
    """An SSE provider (OpenAI chat and Anthropic messages) that pauses after its first
    content event until ``release`` is set (or PAUSE_LIMIT passes)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.second_sent = threading.Event()
        self.released: bool | None = None  # whether the pause ended by release, not timeout

    def reset(self) -> None:
        self.release.clear()
        self.second_sent.clear()
        self.released = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        while (await receive()).get("more_body"):
            pass
        first, rest = (_anthropic_events() if scope["path"] == "/v1/messages"
                       else _openai_events())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for event in first:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PAUSE_LIMIT
        while not self.release.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.005)
        self.released = self.release.is_set()
        self.second_sent.set()
        for event in rest:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def gated() -> Iterator[tuple[GatedProvider, str]]:
    provider = GatedProvider()
    server = ServerThread(provider).start()
    try:
        yield provider, server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gated_relay(gated: tuple[GatedProvider, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    relay = start_relay(gated[1], tmp_path_factory.mktemp("gated"))
    try:
        yield relay
    finally:
        relay.close()


def _openai_text(relay: Relay, token: str) -> Iterator[str]:
    """The reply's text pieces as the openai SDK yields them from a chat completion stream."""
    client = relay.openai(token, timeout=PAUSE_LIMIT * 3)
    for chunk in client.chat.completions.create(
            model="relay-test", messages=[{"role": "user", "content": "hi"}], max_tokens=16,
            stream=True):
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            yield content


def _anthropic_text(relay: Relay, token: str) -> Iterator[str]:
    """The reply's text pieces as the anthropic SDK yields them from a messages stream."""
    client = relay.anthropic(token, timeout=PAUSE_LIMIT * 3)
    with client.messages.stream(model="claude-test", max_tokens=16,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        yield from stream.text_stream


@pytest.mark.parametrize("sdk_text", [_openai_text, _anthropic_text],
                         ids=["openai", "anthropic"])
def test_stream_first_chunk_reaches_the_client_while_the_provider_pauses(
        sdk_text: Callable[[Relay, str], Iterator[str]],
        gated: tuple[GatedProvider, str], gated_relay: Relay) -> None:
    provider, _ = gated
    provider.reset()
    token = gated_relay.mint(cav.Budget(1000, "USD", "month"))
    seen_while_paused = None
    text = []
    for piece in sdk_text(gated_relay, token):
        if piece and seen_while_paused is None:
            seen_while_paused = not provider.second_sent.is_set()
            provider.release.set()
        text.append(piece)
    assert seen_while_paused is True
    assert provider.released is True  # the provider did not give up waiting
    assert "".join(text) == "".join(REPLY)
    # relay-test (relay_harness.TEST_PRICE): 100_000 per input token, 300_000 per output token.
    [row] = gated_relay.wait_ledger(token, 1)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "ok", PROMPT_TOKENS, len(REPLY), PROMPT_TOKENS * 100_000 + len(REPLY) * 300_000)
    assert row.token_id == token_id(token)
