"""OpenAI-compatible endpoints: POST /v1/chat/completions and POST /v1/embeddings."""

from __future__ import annotations

from typing import Any

from capwallet.limits import EffectiveLimits
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.estimate import (
    bad,
    choices,
    image_allowance,
    openai_chat_input,
    openai_embeddings_input,
    output_bound,
    positive_int,
)
from reference_relay.routes import Prepared, dump, unbounded_ok


def _stream_flag(body: dict[str, Any]) -> bool:
    """OpenAI's schema makes 'stream' nullable (null: not streamed); Anthropic's does not."""
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false")
    return stream


class ChatCompletions:
    route = "/v1/chat/completions"
    upstream_path = "/chat/completions"
    api = "openai"
    errors = "openai"
    operation = "chat"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits) -> Prepared:
        n = choices(body)
        stream = _stream_flag(body)
        caps = [c for c in (positive_int(body, "max_tokens"),
                            positive_int(body, "max_completion_tokens")) if c is not None]
        est = openai_chat_input(body, len(raw), image_allowance(model.price))
        bound = output_bound(min(caps) if caps else None, n, limits.max_output_tokens,
                             model.price.max_output, unbounded_ok=unbounded_ok(model, limits))
        changed = False
        if bound.inject is not None:
            body[provider.max_tokens_field] = bound.inject
            changed = True
        wants_usage = True
        if stream:
            opts = body.get("stream_options")
            if opts is not None and not isinstance(opts, dict):
                raise bad("'stream_options' must be an object")
            wants_usage = bool(opts and opts.get("include_usage") is True)
            if not wants_usage:
                body["stream_options"] = {**(opts or {}), "include_usage": True}
                changed = True
        return Prepared(est, bound.total, stream, dump(body) if changed else raw, wants_usage)


class Embeddings:
    route = "/v1/embeddings"
    upstream_path = "/embeddings"
    api = "openai"
    errors = "openai"
    operation = "embeddings"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits) -> Prepared:
        return Prepared(openai_embeddings_input(body), 0, False, raw)
