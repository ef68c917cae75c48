"""npm clients (openai-node, the Vercel AI SDK with its OpenAI and Anthropic providers,
@anthropic-ai/sdk) against a real relay: tests/js/relay_clients.test.js run by Node's test
runner, with the relay's URL and tokens in its environment; then the ledger is checked here."""

from __future__ import annotations

import os
from pathlib import Path

from relay_harness import Relay
from test_js_package import node_tests, npm_installed

from capwallet import caveats as cav
from capwallet.token import Token

TESTS = Path(__file__).resolve().parent / "js" / "relay_clients.test.js"


def test_npm_clients(relay: Relay) -> None:
    npm_installed()
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    capped = relay.mint(cav.MaxOutputTokens(12))
    env = {**os.environ, "RELAY_URL": relay.url, "TOKEN": token, "TOKEN_CAP": capped}
    assert node_tests(str(TESTS), env) == 5
    rows = relay.wait_ledger(token, 6)
    ops = sorted((r.model, r.status) for r in rows)
    assert all(status == "ok" for _, status in ops), ops
    # Every Responses call and the token count were metered on the budget token.
    assert len(rows) >= 6 and sum(r.cost for r in rows) > 0


ERRORS = Path(__file__).resolve().parent / "js" / "relay_errors.test.js"


def test_npm_clients_get_typed_refusals_and_do_not_retry(relay: Relay) -> None:
    """tests/js/relay_errors.test.js: a spent budget and a spent quota through openai-node and
    @anthropic-ai/sdk with their default retries: RateLimitError, one request each."""
    npm_installed()
    budget = relay.mint(cav.Budget(0, "USD", "month"))
    quota = relay.mint(cav.TokenQuota(10, "day"))
    env = {**os.environ, "RELAY_URL": relay.url, "TOKEN_BUDGET": budget, "TOKEN_QUOTA": quota}
    assert node_tests(str(ERRORS), env) == 4
    for token in (budget, quota):  # one refused call per SDK: nothing was retried
        rows = relay.wait_ledger(token, 2)
        assert sum(r.count for r in rows if r.refused) == 2


SUBTASK = Path(__file__).resolve().parent / "js" / "relay_subtask.test.js"


def test_npm_subtask_token_is_told_apart_in_the_ledger(relay: Relay) -> None:
    """tests/js/relay_subtask.test.js attenuates the token with the npm package and calls
    through openai-node with both: every ledger row names its chain, the parent's rows the
    chain Python computes for it, and the relay recorded the JS-made chain's caveats."""
    npm_installed()
    token = relay.mint(cav.Budget(100_000, "USD", "month"))
    env = {**os.environ, "RELAY_URL": relay.url, "TOKEN": token}
    assert node_tests(str(SUBTASK), env) == 1
    rows = relay.wait_ledger(token, 4)
    parent_chain = Token.parse(token).chain_id
    mine = sorted((r.model, r.status) for r in rows if r.chain_id == parent_chain)
    assert mine == [("gpt-5-test", "ok"), ("relay-test", "ok")]
    child_rows = [r for r in rows if r.chain_id != parent_chain]
    assert sorted((r.model, r.status) for r in child_rows) == [
        ("gpt-5-test", "denied:model_not_allowed"), ("relay-test", "ok")]
    [child_chain] = {r.chain_id for r in child_rows}
    chains = {c.chain_id: c for c in relay.run(relay.store.chains([Token.parse(token).token_id]))}
    assert set(chains) == {parent_chain, child_chain}
    parent_caveats = tuple(c.decode() for c in Token.parse(token).raw_caveats)
    assert chains[parent_chain].caveats == parent_caveats
    added = chains[child_chain].caveats[len(parent_caveats):]
    assert chains[child_chain].caveats[:len(parent_caveats)] == parent_caveats
    assert added[0] == "models relay-test" and added[1].startswith("budget ")
