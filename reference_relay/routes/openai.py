"""OpenAI-compatible endpoints: POST /v1/chat/completions, /v1/responses and /v1/embeddings."""

from __future__ import annotations

from typing import Any

from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.limits import EffectiveLimits
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.errors import UNSUPPORTED_FEATURE, WRONG_API, RelayError
from reference_relay.estimate import (
    DEFAULT_IMAGE_TOKENS,
    InputEstimate,
    OutputBound,
    bad,
    choices,
    image_allowance,
    openai_chat_input,
    openai_embeddings_input,
    positive_int,
    responses_input,
    responses_tools,
)
from reference_relay.routes import BodyEdit, Prepared, bound_output, cap_note, set_alone

_new = tuple.__new__  # a NamedTuple from all its fields, in order, without its __new__'s frame
_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


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
    meter = "openai"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        # The usual request's fields are read inline (n absent, stream a bool, caps positive
        # ints): the validators run, in the same order, only for a value that needs them, so
        # every refusal is the one they give. Fewer Python calls per request (issue 17).
        get = body.get
        n = 1 if get("n") is None else choices(body)
        stream = get("stream", False)
        if stream is not True and stream is not False:
            stream = _stream_flag(body)
        a, b = get("max_tokens"), get("max_completion_tokens")
        if a is not None and (type(a) is not int or not 0 < a <= MAX_SAFE_INTEGER):
            a = positive_int(body, "max_tokens")
        if b is not None and (type(b) is not int or not 0 < b <= MAX_SAFE_INTEGER):
            b = positive_int(body, "max_completion_tokens")
        requested = a if b is None else b if a is None else min(a, b)
        price = model.price
        est = openai_chat_input(body, len(raw), DEFAULT_IMAGE_TOKENS
                                if price.max_image_tokens is None else price.max_image_tokens)
        if requested is not None and ceiling is None and limits.max_output_tokens is None:
            # bound_output with nothing to bound the app's own cap by: it stands.
            bound = _new(OutputBound, (requested * n, None, None))
        else:
            bound = bound_output(requested, n, model, limits, ceiling)
        cap = bound.inject if bound.inject is not None else requested
        field = provider.max_tokens_field
        edit: BodyEdit | None = None
        out = raw
        if cap is not None and (get(field) != cap or (
                "max_completion_tokens" if field == "max_tokens" else "max_tokens") in body):
            # The reservation holds for `cap` output tokens: the provider must get it in the
            # field it honours (max_tokens_field), alone. An app's max_completion_tokens sent
            # to a provider that reads only max_tokens (or the reverse), or a second, larger
            # cap in the other field, would otherwise leave the answer bounded by the
            # provider's default, not by what was reserved.
            if stream:
                edit = BodyEdit(body)
                edit.pop("max_tokens")
                edit.pop("max_completion_tokens")
                edit.set(field, cap)
            else:  # the one change: BodyEdit's bytes in one call
                out = set_alone(body, raw, field, cap, _CAP_FIELDS)
        wants_usage = True
        if stream:
            opts = get("stream_options")
            if opts is not None and not isinstance(opts, dict):
                raise bad("'stream_options' must be an object")
            wants_usage = bool(opts and opts.get("include_usage") is True)
            if not wants_usage:
                if edit is None:
                    edit = BodyEdit(body)
                edit.set("stream_options", {**(opts or {}), "include_usage": True})
        if edit is not None:
            out = edit.bytes(raw)
        clamped = bound.clamped is not None
        return _new(Prepared, (est, bound.total, stream, out, wants_usage, 0, (),
                               cap_note(bound, field) if clamped else (), clamped))


class Embeddings:
    route = "/v1/embeddings"
    upstream_path = "/embeddings"
    api = "openai"
    errors = "openai"
    operation = "embeddings"
    meter = "embeddings"  # OpenAI's usage, without an output count (metering.openai_usage)

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        return Prepared(openai_embeddings_input(body), 0, False, raw)


class Responses:
    """The OpenAI Responses API (see reference_relay.estimate for its worst case).

    Stored state is refused rather than guessed (previous_response_id, conversation, stored
    prompts, item references), and so is ``background: true``: a background response is
    fetched later by id, outside any call the relay can meter and settle.
    """

    route = "/v1/responses"
    upstream_path = "/responses"
    api = "openai"
    errors = "openai"
    operation = "chat"
    meter = "responses"

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        if not provider.responses_api:
            raise RelayError(WRONG_API, f"provider {provider.id!r}, which serves model "
                             f"{model.id!r}, offers no Responses API; call "
                             "/v1/chat/completions (OpenAI API) instead")
        stream = _stream_flag(body)
        background = body.get("background")
        if background not in (None, False):
            raise RelayError(UNSUPPORTED_FEATURE, "'background': true is not supported by the "
                             "relay: a background response is fetched later by id, outside "
                             "the call the relay meters and settles; call without it")
        price = model.price
        est = responses_input(body, len(raw), image_allowance(price), price.max_output)
        tools = responses_tools(body, price)
        bound = bound_output(positive_int(body, "max_output_tokens"), 1, model, limits,
                             ceiling, tools=bool(tools.calls))
        edit = BodyEdit(body)
        if bound.inject is not None:
            edit.set("max_output_tokens", bound.inject)
        if tools.inject_calls:
            edit.set("max_tool_calls", tools.calls)
        k = tools.calls
        if k:
            # k tool rounds: the model reads the input, k results and its own output k+1 times.
            tokens = (k + 1) * (est.tokens + k * tools.content_tokens + bound.total)
            est = InputEstimate(tokens, est.images, est.cache_write)
        return Prepared(est, bound.total, stream, edit.bytes(raw),
                        fees_worst=k * tools.fee,
                        call_fees=((tools.item_type, tools.fee),) if k else (),
                        headers=cap_note(bound, "max_output_tokens"),
                        output_clamped=bound.clamped is not None)


class Moderations:
    """OpenAI's free moderation endpoint: forwarded under the token's checks, nothing priced
    (the moderation models are priced 0 in prices.toml). The operation is ``moderations``, so a
    token limited to other operations cannot use it."""

    route = "/v1/moderations"
    upstream_path = "/moderations"
    api = "openai"
    errors = "openai"
    operation = "moderations"
    meter = "free"
    default_model = "omni-moderation-latest"  # the provider's default when none is named

    def prepare(self, body: dict[str, Any], raw: bytes, provider: ProviderConfig,
                model: ModelConfig, limits: EffectiveLimits,
                ceiling: int | None = None) -> Prepared:
        if not isinstance(body.get("input"), str | list):
            raise bad("'input' must be a string or a list")
        if not model.price.is_free:
            raise bad(f"model {model.id!r} is not a moderation model")
        return Prepared(InputEstimate(0), 0, False, raw)
