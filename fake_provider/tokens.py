"""The fake provider's token arithmetic and reply text: the formulas tests compute usage by.

Every count is deterministic so that a test can work out the expected usage by hand; the
formulas are listed under "Token counts" in fake_provider.server. The Responses API's own
counting (fake_provider.responses) builds on these.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

DEFAULT_REPLY_TOKENS = 16
REQUEST_OVERHEAD_TOKENS = 3
MESSAGE_OVERHEAD_TOKENS = 4
NON_TEXT_PART_TOKENS = 85

REPLY_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu",
)


def text_tokens(text: str) -> int:
    """ceil(len(text) / 4): the fake tokenizer (about right for English, and easy to check)."""
    return -(-len(text) // 4)


def content_tokens(content: object) -> int:
    """Tokens of a message content: a string, or a list of parts (text parts by length)."""
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            total += text_tokens(text) if isinstance(text, str) else NON_TEXT_PART_TOKENS
        return total
    return 0


def chat_input_tokens(messages: Sequence[Any], system: object = None) -> int:
    """Input tokens of a chat request; an Anthropic system prompt counts as one more message."""
    total = REQUEST_OVERHEAD_TOKENS
    if system:
        total += MESSAGE_OVERHEAD_TOKENS + content_tokens(system)
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + content_tokens(message.get("content"))
    return total


@lru_cache(maxsize=256)
def reply_pieces(count: int) -> tuple[str, ...]:
    """The reply as stream pieces: `count` words, every one after the first with a leading space."""
    return tuple(
        (" " if i else "") + REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(count)
    )


@lru_cache(maxsize=256)
def reply_text(count: int) -> str:
    """The whole reply: exactly `count` space-separated words."""
    return "".join(reply_pieces(count))
