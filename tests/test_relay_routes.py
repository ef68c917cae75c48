"""The smaller OpenAI/Anthropic routes real clients call: models.retrieve, per-API model lists,
moderations, request ids on streams, and the routes the relay refuses by name."""

from __future__ import annotations

import openai
import pytest
from anthropic.lib.streaming import MessageStream
from relay_harness import HELLO_ANTHROPIC, HELLO_OPENAI, Relay

from capwallet import caveats as cav


def test_models_retrieve_and_lists_per_api(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    oa = relay.openai(tok)
    assert oa.models.retrieve("relay-test").id == "relay-test"
    with pytest.raises(openai.NotFoundError) as exc:
        oa.models.retrieve("claude-test")  # served through the Anthropic API only
    assert exc.value.code == "model_not_found"
    an = relay.anthropic(tok)
    assert an.models.retrieve("claude-test").id == "claude-test"
    listed = [m.id for m in an.models.list()]
    assert "claude-test" in listed and not any(m.startswith(("gpt-", "relay-")) for m in listed)
    openai_listed = [m.id for m in oa.models.list()]
    assert "relay-test" in openai_listed and "claude-test" not in openai_listed
    # A model the token may not use is not found either.
    narrow = relay.openai(relay.mint(cav.Models(("gpt-4o",))))
    with pytest.raises(openai.NotFoundError):
        narrow.models.retrieve("relay-test")


def test_moderations_are_free_and_checked(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1, "USD", "month"))
    r = relay.openai(tok).moderations.create(input="hello there")
    assert r.results[0].flagged is False
    [row] = relay.ledger(tok)
    assert (row.status, row.cost, row.operation, row.model) == (
        "ok", 0, "moderations", "omni-moderation-latest")
    chat_only = relay.openai(relay.mint(cav.Operations(("chat",))))
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat_only.moderations.create(input="hello there")
    assert exc.value.code == "operation_not_allowed"


def test_unsupported_routes_are_named(relay: Relay) -> None:
    client = relay.openai(relay.mint(cav.Budget(1000, "USD", "month")))
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="relay-test", prompt="hello")
    assert exc.value.code == "unsupported_route"
    assert "/v1/completions (legacy completions) is not supported" in exc.value.message
    with pytest.raises(openai.NotFoundError) as exc:
        client.images.generate(model="gpt-image-1", prompt="a cat")
    assert "image generation" in exc.value.message
    with pytest.raises(openai.NotFoundError) as exc:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert "audio" in exc.value.message


def test_request_id_passes_through_on_streams(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    raw = relay.openai(tok).chat.completions.with_raw_response.create(
        model="relay-test", messages=HELLO_OPENAI, max_tokens=8, stream=True)
    assert raw.headers["x-request-id"].startswith("req_fake")
    list(raw.parse())
    with relay.anthropic(tok).messages.stream(model="claude-test", max_tokens=8,
                                              messages=HELLO_ANTHROPIC) as stream:
        stream.get_final_message()
        assert stream.request_id is not None and stream.request_id.startswith("req_fake")
    assert isinstance(stream, MessageStream)
