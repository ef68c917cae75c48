"""A fake model provider: test equipment that stands in for OpenAI, Anthropic and the like.

It is not part of the relay (the product): the relay's tests, its benchmark baseline and the
``capwallet demo`` run against it instead of the outside world. Its wire formats, token
arithmetic and fault modes are described in fake_provider.server. Run it standalone with
``python -m fake_provider --port 0``.
"""

from fake_provider.server import (
    ANTHROPIC_MODELS,
    DEFAULT_API_KEY,
    OPENAI_MODELS,
    create_app,
    running_fake_provider,
)
from fake_provider.tokens import DEFAULT_REPLY_TOKENS, REPLY_WORDS

__all__ = ["ANTHROPIC_MODELS", "DEFAULT_API_KEY", "DEFAULT_REPLY_TOKENS", "OPENAI_MODELS",
           "REPLY_WORDS", "create_app", "running_fake_provider"]
