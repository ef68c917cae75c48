"""Worst-case size of a request, before it is sent: the numbers the reservation is made from.

Input tokens, the conservative estimate
---------------------------------------
Every tokenizer the supported providers use is byte-level (BPE over UTF-8 bytes, or
SentencePiece with byte fallback): each token stands for at least one byte of text, so a text
of B bytes is at most B tokens. JSON escaping only ever adds bytes. So the estimate is

    input_tokens = bytes of the raw request body
                   - bytes of image payloads (base64 data or URLs)
                   + the model's image allowance per image
                   + PER_MESSAGE_TOKENS per message + PER_REQUEST_TOKENS
                   + TOOLS_TOKENS if tools are declared
                   + ANTHROPIC_TOOL_TOKENS per Anthropic-defined tool (computer, text editor, bash)

which counts every field (keys, parameters, tool schemas) as if it were prompt text, plus room
for the chat template and the tool-use system prompt a provider adds.

An image is billed at a number of tokens that depends on the model, not on its bytes: OpenAI's
gpt-4o-mini bills one high-detail image at up to 48,169 tokens (its image tokens are priced
lower), gpt-4o at up to 1,445, Claude at about 1,600. So the allowance per image is the model's
``max_image_tokens`` (prices.toml, or the relay config), at or above the most that model bills
for its largest image; a model without one gets DEFAULT_IMAGE_TOKENS, above the worst case of
every model in the shipped table.

Anthropic's own client tools (computer use, text editor, bash) are declared by type alone, and
the provider adds their definitions and instructions as hidden input tokens: each gets its
ANTHROPIC_TOOL_TOKENS allowance on top of TOOLS_TOKENS. Any other typed tool is either a server
tool billed per use or one whose hidden size is not known here, and is refused.

What cannot be bounded is refused (reason ``unbounded_request``), never guessed: audio, file and
document inputs, audio output, priced server-side tools (web search, code execution, MCP),
priority service tiers, predicted outputs.

OpenAI Responses API (POST /v1/responses)
-----------------------------------------
The same byte rule over the whole body (``input`` as a string or items, ``instructions``,
tools), with images at the model's allowance. What the provider would add that the body does
not show is refused, fail closed: ``previous_response_id``, ``conversation`` and ``prompt``
(stored context and stored prompts) and ``item_reference`` items. A reasoning item sent back
by id only (no ``encrypted_content``) makes the provider re-read that reasoning: it counts as
the model's largest output (``max_output``), or is refused for a model without one.

Built-in tools run inside the one response, each call feeding its results back into the
model's context. Admitted only where the price table bounds them: ``web_search`` /
``web_search_preview`` on a model whose table entry gives the per-call price and the search
content tokens billed per call (``web_search_call`` / ``web_search_tokens``, and the
``_preview_`` pair). ``max_tool_calls`` (k) bounds the calls; the relay sets
DEFAULT_MAX_TOOL_CALLS when the app gives none. Worst case: k call fees, and the model sampled
k + 1 times, each time over the input, k search results and the whole output cap:
``(k + 1) * (input + k * search_tokens + output)`` input tokens. Every other built-in tool
(file search, code interpreter, computer use, image generation, MCP, shell) adds results of a
size nothing in the request bounds, and is refused naming the tool.

Output tokens
-------------
The worst case is the request's output cap (``max_tokens`` / ``max_completion_tokens``;
``max_output_tokens`` for Responses, reasoning included) times the number of choices ``n``.
When the app gives no cap, the relay sets one: the token's ``max-output-tokens`` (divided
among the ``n`` choices) or else the model's largest output. A token's ``max-output-tokens``
bounds the whole request's output (all choices together): a larger cap from the app is
lowered to it (``OutputBound.clamped``; the relay names both in a response header) rather
than refused, since frameworks send large default caps the app never chose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from capwallet.identifier import MAX_SAFE_INTEGER
from reference_relay.body import has_key
from reference_relay.errors import INVALID_REQUEST, UNBOUNDED_REQUEST, RelayError
from reference_relay.prices import Price

# Above the largest max_image_tokens in prices.toml (gpt-4o-mini: 2833 + 8 tiles x 5667 = 48,169),
# so a model priced inline without its own value is never under-reserved.
DEFAULT_IMAGE_TOKENS = 50_000
PER_MESSAGE_TOKENS = 8
PER_REQUEST_TOKENS = 64
# The tool-use system prompt Anthropic adds when any tool is declared (346 tokens on Claude 4
# models, 530 at most on Claude 3), with room to spare.
TOOLS_TOKENS = 1024
# Hidden input tokens per Anthropic-defined client tool, by type prefix, on top of TOOLS_TOKENS.
# Documented (docs.claude.com tool use pricing, computer use / text editor / bash tool pages, as
# of 2025-11): computer use 735 for the tool definition plus 466-499 of extra system prompt;
# text editor 700; bash 245. Rounded up.
ANTHROPIC_TOOL_TOKENS = (("computer_", 1536), ("text_editor_", 1024), ("bash_", 512))
MAX_CHOICES = 128
# Built-in tool calls per Responses request when the app sets no max_tool_calls.
DEFAULT_MAX_TOOL_CALLS = 4

_OPENAI_TEXT_PARTS = frozenset({"text", "refusal"})
_ANTHROPIC_TEXT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking",
                                    "search_result"})


_new = tuple.__new__  # a NamedTuple from all its fields, in order, without its __new__'s frame


def bad(message: str) -> RelayError:
    return RelayError(INVALID_REQUEST, message)


def unbounded(message: str) -> RelayError:
    return RelayError(UNBOUNDED_REQUEST, message + " (its cost cannot be bounded in advance, "
                                                   "so the relay cannot reserve it)")


class InputEstimate(NamedTuple):
    # InputEstimate, OutputBound and ToolBound are NamedTuples, as routes.Prepared: built
    # on every call, and a frozen dataclass sets each field through object.__setattr__.
    tokens: int
    images: int = 0
    cache_write: bool = False  # Anthropic prompt caching asked for: input may cost more


def image_allowance(price: Price) -> int:
    """Tokens reserved per image for a model: its own worst case, else the safe default."""
    if price.max_image_tokens is None:
        return DEFAULT_IMAGE_TOKENS
    return price.max_image_tokens


def anthropic_tool_tokens(kind: Any) -> int | None:
    """Hidden input tokens of one Anthropic tool of this type; None when it cannot be bounded."""
    if kind == "custom":
        return 0  # its name, description and schema are in the body, counted byte for byte
    if isinstance(kind, str):
        for prefix, tokens in ANTHROPIC_TOOL_TOKENS:
            if kind.startswith(prefix):
                return tokens
    return None


def _len(s: Any) -> int:
    return len(s.encode("utf-8")) if isinstance(s, str) else 0


def _openai_content(content: Any, where: str) -> tuple[int, int]:
    """(images, image payload bytes) of one OpenAI message content."""
    if content is None or isinstance(content, str):
        return 0, 0
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of parts")
    images = payload = 0
    for part in content:
        if not isinstance(part, dict):
            raise bad(f"{where}.content parts must be objects")
        kind = part.get("type")
        if not isinstance(kind, str):
            raise bad(f"{where}.content parts must have a string 'type'")
        if kind in _OPENAI_TEXT_PARTS:
            continue
        if kind == "image_url":
            url = part.get("image_url")
            images += 1
            payload += _len(url.get("url") if isinstance(url, dict) else url)
            continue
        if kind in ("input_audio", "file"):
            raise unbounded(f"{where} has a {kind} part")
        raise unbounded(f"{where} has a content part of unknown type {kind!r}")
    return images, payload


def _messages(body: Mapping[str, Any], content: Callable[[Any, str], tuple[int, int]],
              *, audio: bool = True) -> tuple[list[Any], int, int]:
    """(messages, images, image payload bytes) of a chat body's ``messages``, each message's
    content read by ``content`` (a text content, the usual one, needs no reading);
    ``audio=False`` refuses a message that refers to audio (OpenAI's)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list")
    images = payload = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object")
        if not audio and m.get("audio") is not None:
            raise unbounded(f"messages[{i}] refers to audio")
        c = m.get("content")
        if not isinstance(c, str):
            n, p = content(c, f"messages[{i}]")
            images += n
            payload += p
    return messages, images, payload


# The keys of a chat body that can make it refused or add TOOLS_TOKENS: a body with none of
# them (most) skips their checks, each of which passes for a key that is absent.
_OPENAI_CHAT_CHECKED = frozenset({"modalities", "audio", "web_search_options", "prediction",
                                  "service_tier", "tools", "functions"})


def openai_chat_input(body: Mapping[str, Any], raw_bytes: int,
                      image_tokens: int = DEFAULT_IMAGE_TOKENS) -> InputEstimate:
    messages: Any = body.get("messages")
    images = payload = 0
    # The usual messages (objects with a text content and no audio) need no reading: _messages
    # is called, and says what is wrong, only when one is not.
    plain = isinstance(messages, list) and len(messages) > 0
    if plain:
        for m in messages:
            if type(m) is not dict or type(m.get("content")) is not str or (
                    m.get("audio") is not None):
                plain = False
                break
    if not plain:
        messages, images, payload = _messages(body, _openai_content, audio=False)
    if _OPENAI_CHAT_CHECKED.isdisjoint(body):
        return _new(InputEstimate, (
            raw_bytes - payload + images * image_tokens + len(messages) * PER_MESSAGE_TOKENS
            + PER_REQUEST_TOKENS, images, False))
    modalities = body.get("modalities")
    if modalities is not None and not isinstance(modalities, list):
        raise bad("'modalities' must be a list")
    if body.get("audio") is not None or "audio" in (modalities or ()):
        raise unbounded("the request asks for audio output")
    if body.get("web_search_options") is not None:
        raise unbounded("the request uses web search, which is billed per call")
    if body.get("prediction") is not None:
        raise unbounded("the request uses predicted outputs")
    if body.get("service_tier") not in (None, "auto", "default", "flex"):
        raise unbounded(f"service tier {body.get('service_tier')!r} is priced differently")
    tools = body.get("tools") or body.get("functions")
    if tools is not None and not isinstance(tools, list):
        raise bad("'tools' must be a list")
    for t in tools or ():
        if isinstance(t, dict) and t.get("type", "function") not in ("function", "custom"):
            raise unbounded(f"tool type {t.get('type')!r} is billed by the provider per use")
    tokens = (raw_bytes - payload + images * image_tokens + len(messages) * PER_MESSAGE_TOKENS
              + PER_REQUEST_TOKENS + (TOOLS_TOKENS if tools else 0))
    return InputEstimate(tokens, images)


def openai_embeddings_input(body: Mapping[str, Any]) -> InputEstimate:
    """Embedding inputs: strings (bytes bound tokens) or token arrays (counted exactly)."""
    inp = body.get("input")
    items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
    tokens = 0
    for item in items:
        if isinstance(item, str):
            tokens += _len(item) + 2
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            tokens += len(item)
        else:
            raise bad("'input' must be a string, a list of strings or token arrays")
    if not items:
        raise bad("'input' is empty")
    return InputEstimate(tokens + PER_REQUEST_TOKENS)


def _anthropic_blocks(content: Any, where: str) -> tuple[int, int]:
    if isinstance(content, str):
        return 0, 0
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of blocks")
    images = payload = 0
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise bad(f"{where}.content[{j}] must be an object")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise bad(f"{where}.content[{j}] must have a string 'type'")
        if kind in _ANTHROPIC_TEXT_BLOCKS:
            continue
        if kind == "image":
            src = block.get("source")
            images += 1
            if isinstance(src, dict):
                payload += _len(src.get("data")) + _len(src.get("url"))
            continue
        if kind == "tool_result":
            n, p = _anthropic_blocks(block.get("content", ""), f"{where}.content[{j}]")
            images += n
            payload += p
            continue
        if kind == "document":
            raise unbounded(f"{where} has a document block")
        raise unbounded(f"{where} has a content block of type {kind!r}")
    return images, payload


def anthropic_input(body: Mapping[str, Any], raw: bytes,
                    image_tokens: int = DEFAULT_IMAGE_TOKENS) -> InputEstimate:
    messages, images, payload = _messages(body, _anthropic_blocks)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        n, p = _anthropic_blocks(system, "system")
        images += n
        payload += p
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("'tools' must be a list")
    hidden = 0
    for t in tools or ():
        kind = t.get("type", "custom") if isinstance(t, dict) else None
        allowance = anthropic_tool_tokens(kind)
        if allowance is None:
            raise unbounded(f"tool type {kind!r} is a server tool billed by the provider per use, "
                            "or a provider-defined tool whose hidden prompt size is not known")
        hidden += allowance
    for key in ("mcp_servers", "container"):
        if body.get(key) is not None:
            raise unbounded(f"the request uses {key!r}")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise unbounded(f"service tier {body.get('service_tier')!r} is priced differently")
    tokens = (len(raw) - payload + images * image_tokens + len(messages) * PER_MESSAGE_TOKENS
              + PER_REQUEST_TOKENS + (TOOLS_TOKENS if tools else 0) + hidden)
    # Decided on the parsed body, anywhere in it: a byte search misses "cache\u005fcontrol".
    return InputEstimate(tokens, images, cache_write=has_key(body, "cache_control"))


def positive_int(body: Mapping[str, Any], key: str) -> int | None:
    """A count the relay decides on (an output cap, ``n``), read as every parser reads it: a
    whole number past 2^53 - 1 is refused, since a JavaScript or double-based parser (a
    provider's, an app's proxy) reads it as another number than the one judged here."""
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise bad(f"{key!r} must be a positive integer")
    if v > MAX_SAFE_INTEGER:
        raise bad(f"{key!r} may be at most {MAX_SAFE_INTEGER} (2^53 - 1): JSON parsers "
                  "read larger whole numbers differently")
    return v


def choices(body: Mapping[str, Any]) -> int:
    n = positive_int(body, "n") or 1
    if n > MAX_CHOICES:
        raise bad(f"'n' may be at most {MAX_CHOICES}")
    return n


class OutputBound(NamedTuple):
    total: int  # worst-case output tokens of the whole request (all choices)
    inject: int | None  # per-choice cap to set in the body (none given, or lowered)
    clamped: int | None = None  # the app's own per-choice cap, when ``inject`` lowered it


def output_bound(requested: int | None, n: int, token_cap: int | None,
                 model_max: int | None, *, unbounded_ok: bool,
                 ceiling: int | None = None) -> OutputBound:
    """The request's worst-case output, and the cap to set when the app gave none or a cap
    above the token's ``max-output-tokens`` (or above ``ceiling``, an extra per-request bound
    such as what the remaining budget affords): that cap is lowered, not refused.

    ``unbounded_ok`` (a free model and no token quota to protect) lets a request with no cap
    anywhere through with a worst case of 0, since nothing it produces can cost anything.
    """
    limit = token_cap if ceiling is None else ceiling if token_cap is None else min(
        token_cap, ceiling)
    if requested is not None:
        if limit is not None and requested * n > limit:
            per_choice = limit // n
            if per_choice < 1:
                raise unbounded(f"the token allows {limit} output tokens, fewer than the "
                                f"{n} choices asked for")
            return OutputBound(per_choice * n, per_choice, requested)
        return OutputBound(requested * n, None)
    token_cap = limit
    caps = [c for c in (token_cap // n if token_cap is not None else None, model_max)
            if c is not None]
    if caps:
        cap = min(caps)
        if cap < 1:
            raise unbounded(f"the token allows {token_cap} output tokens, fewer than the "
                            f"{n} choices asked for")
        return OutputBound(cap * n, cap)
    if unbounded_ok:
        return OutputBound(0, None)
    raise unbounded("the request sets no max_tokens and neither the token nor the model "
                    "config gives an output limit; set max_tokens")


# ---------------------------------------------------------------------------------------------
# OpenAI Responses API

# Item types whose whole content is in the body (counted byte for byte).
_RESPONSES_INLINE_ITEMS = frozenset({
    "message", "function_call", "function_call_output", "custom_tool_call",
    "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call",
    "computer_call_output", "image_generation_call", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "mcp_call", "mcp_list_tools",
    "mcp_approval_request", "mcp_approval_response",
})
_RESPONSES_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal",
                                   "summary_text", "reasoning_text"})
# Context the provider adds from its own storage: the request alone cannot bound it.
_STORED_CONTEXT = (("previous_response_id", "continues a stored response"),
                   ("conversation", "continues a stored conversation"),
                   ("prompt", "uses a stored prompt template"))
# Built-in tools priced per call in the price table: tool type prefix -> Price field stem.
_PRICED_TOOLS = (("web_search_preview", "web_search_preview"), ("web_search", "web_search"))
_UNBOUNDED_TOOLS = {
    "file_search": "its retrieved chunks enter the context",
    "code_interpreter": "its container time and its outputs enter the context",
    "computer_use_preview": "its hidden tool prompt is not published",
    "image_generation": "its image model's input is the whole context",
    "mcp": "a remote server's results enter the context",
    "local_shell": "its hidden tool prompt is not published",
    "shell": "its hidden tool prompt is not published",
}


def _responses_parts(content: Any, where: str) -> tuple[int, int]:
    """(images, image payload bytes) of one Responses message content or tool output."""
    if content is None or isinstance(content, str):
        return 0, 0
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of parts")
    images = payload = 0
    for part in content:
        if not isinstance(part, dict):
            raise bad(f"{where}.content parts must be objects")
        kind = part.get("type")
        if kind in _RESPONSES_TEXT_PARTS:
            continue
        if kind in ("input_image", "computer_screenshot"):
            images += 1
            payload += _len(part.get("image_url"))
            continue
        if kind in ("input_file", "input_audio"):
            raise unbounded(f"{where} has an {kind} part")
        raise unbounded(f"{where} has a content part of unknown type {kind!r}")
    return images, payload


class ToolBound(NamedTuple):
    calls: int  # most built-in tool calls (max_tool_calls), 0 without priced tools
    inject_calls: bool  # the relay sets max_tool_calls (the app gave none)
    fee: int  # raw cost of one call (prices.Price raw units), the dearest declared tool
    content_tokens: int  # input tokens one call's results add
    item_type: str  # the output item type such a call leaves (metered at settlement)


def responses_tools(body: Mapping[str, Any], price: Price) -> ToolBound:
    """The declared tools' worst case; unbounded_request naming a tool that has none."""
    tools = body.get("tools")
    if tools is None:
        return ToolBound(0, False, 0, 0, "")
    if not isinstance(tools, list):
        raise bad("'tools' must be a list")
    fee = content = 0
    priced = False
    for t in tools:
        if not isinstance(t, dict):
            raise bad("'tools' entries must be objects")
        kind = t.get("type")
        if kind in ("function", "custom"):
            continue
        stem = next((s for p, s in _PRICED_TOOLS if isinstance(kind, str)
                     and kind.startswith(p)), None)
        if stem is None:
            base = next((k for k in _UNBOUNDED_TOOLS if isinstance(kind, str)
                         and kind.startswith(k)), None)
            why = _UNBOUNDED_TOOLS[base] if base else "the relay has no price for it"
            raise unbounded(f"the built-in tool {kind!r} is billed by the provider per use and "
                            f"{why}")
        per_1k = getattr(price, f"{stem}_call")
        tokens = getattr(price, f"{stem}_tokens")
        if per_1k is None or tokens is None:
            raise unbounded(f"the built-in tool {kind!r}: the price table gives this model no "
                            "per-call price and search content bound for it")
        priced = True
        fee = max(fee, per_1k * 1000)  # per 1,000 calls -> raw units of one call
        content = max(content, tokens)
    if not priced:
        return ToolBound(0, False, 0, 0, "")
    given = positive_int(body, "max_tool_calls")
    return ToolBound(given if given is not None else DEFAULT_MAX_TOOL_CALLS, given is None,
                     fee, content, "web_search_call")


def responses_input(body: Mapping[str, Any], raw_bytes: int,
                    image_tokens: int = DEFAULT_IMAGE_TOKENS,
                    reasoning_ref_tokens: int | None = None) -> InputEstimate:
    """Worst-case input of a Responses request, before any built-in tool loop."""
    for key, what in _STORED_CONTEXT:
        if body.get(key) is not None:
            raise unbounded(f"the request {what} ({key!r}), whose size the relay cannot see; "
                            "send the whole conversation as 'input' instead")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad("'instructions' must be a string")
    inp = body.get("input")
    if isinstance(inp, str):
        items: list[Any] = [inp]
    elif isinstance(inp, list) and inp:
        items = inp
    else:
        raise bad("'input' must be a string or a non-empty list of items")
    images = payload = hidden = 0
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, str) and i == 0 and isinstance(inp, str):
            continue
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "reasoning":
            if not isinstance(item.get("encrypted_content"), str):
                if reasoning_ref_tokens is None:
                    raise unbounded(f"{where} is a reasoning item sent by id, which the "
                                    "provider expands to its stored reasoning")
                hidden += reasoning_ref_tokens
            continue
        if kind == "item_reference":
            raise unbounded(f"{where} is an item_reference, which the provider expands from "
                            "its storage")
        if kind not in _RESPONSES_INLINE_ITEMS:
            raise unbounded(f"{where} is an input item of unknown type {kind!r}")
        content = item.get("content") if kind == "message" else item.get("output")
        if kind == "computer_call_output":
            images += 1
            shot = item.get("output")
            payload += _len(shot.get("image_url")) if isinstance(shot, dict) else 0
            continue
        n, p = _responses_parts(content, where)
        images += n
        payload += p
    if body.get("service_tier") not in (None, "auto", "default", "flex"):
        raise unbounded(f"service tier {body.get('service_tier')!r} is priced differently")
    tokens = (raw_bytes - payload + images * image_tokens + len(items) * PER_MESSAGE_TOKENS
              + PER_REQUEST_TOKENS + (TOOLS_TOKENS if body.get("tools") else 0) + hidden)
    return InputEstimate(tokens, images)
