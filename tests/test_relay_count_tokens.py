"""POST /v1/messages/count_tokens through the anthropic SDK: free, checked, rate-limited."""

from __future__ import annotations

import anthropic
import pytest
from relay_harness import HELLO_ANTHROPIC, Relay

from capwallet import caveats as cav


def test_count_tokens_is_free_and_checked(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1, "USD", "month"), cav.Models(("claude-sonnet-4-5",)))
    client = relay.anthropic(tok)
    r = client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO_ANTHROPIC)
    assert r.input_tokens == 10
    # Nothing priced or reserved: the budget counter stays at 0, the ledger row costs 0.
    assert list(relay.counters(tok).values()) == [0]
    [row] = relay.ledger(tok)
    assert (row.status, row.cost, row.model) == ("ok", 0, "claude-sonnet-4-5")
    # The token's model and provider checks still apply.
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        client.messages.count_tokens(model="claude-haiku-4-5", messages=HELLO_ANTHROPIC)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["code"] == "model_not_allowed"


def test_count_tokens_uses_the_rate_caveat(relay: Relay) -> None:
    tok = relay.mint(cav.Rate(2))
    client = relay.anthropic(tok)
    for _ in range(2):
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO_ANTHROPIC)
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO_ANTHROPIC)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["code"] == "rate_limited"
