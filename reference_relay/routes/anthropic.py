"""Anthropic-compatible endpoint: POST /v1/messages (streamed or not)."""

from __future__ import annotations

from typing import Any

from capwallet.limits import EffectiveLimits
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.estimate import (
    anthropic_input,
    bad,
    image_allowance,
    output_bound,
    positive_int,
)
from reference_relay.routes import Prepared, dump, unbounded_ok


class Messages:
    route = "/v1/messages"
    upstream_path = "/v1/messages"
    api = "anthropic"
    errors = "anthropic"
    operation = "chat"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits) -> Prepared:
        stream = body.get("stream", False)
        # Unlike OpenAI's (routes/openai.py), Anthropic's schema has no null for 'stream':
        # refused here rather than forwarded for the provider to refuse.
        if not isinstance(stream, bool):
            raise bad("'stream' must be true or false")
        est = anthropic_input(body, raw, image_allowance(model.price))
        # Extended thinking's budget_tokens is part of max_tokens, so max_tokens bounds it.
        bound = output_bound(positive_int(body, "max_tokens"), 1, limits.max_output_tokens,
                             model.price.max_output, unbounded_ok=unbounded_ok(model, limits))
        if bound.inject is not None:
            body["max_tokens"] = bound.inject
            return Prepared(est, bound.total, stream, dump(body))
        return Prepared(est, bound.total, stream, raw)
