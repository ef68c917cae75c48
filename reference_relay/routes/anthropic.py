"""Anthropic-compatible endpoints: POST /v1/messages (streamed or not) and its free
POST /v1/messages/count_tokens."""

from __future__ import annotations

from typing import Any

from capwallet.limits import EffectiveLimits
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.estimate import (
    InputEstimate,
    anthropic_input,
    bad,
    image_allowance,
    positive_int,
)
from reference_relay.routes import BodyEdit, Prepared, bound_output, cap_note


class Messages:
    route = "/v1/messages"
    upstream_path = "/v1/messages"
    api = "anthropic"
    errors = "anthropic"
    operation = "chat"
    meter = "anthropic"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        stream = body.get("stream", False)
        # Unlike OpenAI's (routes/openai.py), Anthropic's schema has no null for 'stream':
        # refused here rather than forwarded for the provider to refuse.
        if not isinstance(stream, bool):
            raise bad("'stream' must be true or false")
        est = anthropic_input(body, raw, image_allowance(model.price))
        # Extended thinking's budget_tokens is part of max_tokens, so max_tokens bounds it.
        bound = bound_output(positive_int(body, "max_tokens"), 1, model, limits, ceiling)
        if bound.inject is not None:
            edit = BodyEdit(body)
            edit.set("max_tokens", bound.inject)
            return Prepared(est, bound.total, stream, edit.bytes(raw),
                            headers=cap_note(bound, "max_tokens"),
                            output_clamped=bound.clamped is not None)
        return Prepared(est, bound.total, stream, raw)


class CountTokens:
    """Anthropic's free token counter: forwarded under the token's provider, model and
    operation checks and its rate caveat (one request), with nothing priced or reserved."""

    route = "/v1/messages/count_tokens"
    upstream_path = "/v1/messages/count_tokens"
    api = "anthropic"
    errors = "anthropic"
    operation = "chat"
    meter = "free"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        if not isinstance(body.get("messages"), list):
            raise bad("'messages' must be a list")
        return Prepared(InputEstimate(0), 0, False, raw)
