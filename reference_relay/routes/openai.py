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
        requested = min(caps) if caps else None
        bound = output_bound(requested, n, limits.max_output_tokens,
                             model.price.max_output, unbounded_ok=unbounded_ok(model, limits))
        changed = False
        cap = bound.inject if bound.inject is not None else requested
        if cap is not None and _cap_fields(body) != {provider.max_tokens_field: cap}:
            # The reservation holds for `cap` output tokens: the provider must get it in the
            # field it honours (max_tokens_field), alone. An app's max_completion_tokens sent
            # to a provider that reads only max_tokens (or the reverse), or a second, larger
            # cap in the other field, would otherwise leave the answer bounded by the
            # provider's default, not by what was reserved.
            body.pop("max_tokens", None)
            body.pop("max_completion_tokens", None)
            body[provider.max_tokens_field] = cap
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


def _cap_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body}


class Embeddings:
    route = "/v1/embeddings"
    upstream_path = "/embeddings"
    api = "openai"
    errors = "openai"
    operation = "embeddings"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits) -> Prepared:
        return Prepared(openai_embeddings_input(body), 0, False, raw)
