"""Worst case of a chat call with ``n`` choices: each choice may use the whole max_tokens, so
the relay must reserve ``n * max_tokens`` output tokens on the token's budget and token quota
(counting one choice would let an app spend up to n times what its token affords)."""

from __future__ import annotations

from relay_harness import Relay, error_code, fake_requests, relay_out

from capwallet import caveats as cav

MAX_TOKENS = 8
# relay-out: input free, 0.3 USD cent per output token, in microunits.
PER_OUTPUT_TOKEN = 300_000


def test_budget_counts_every_choice(relay: Relay) -> None:
    # 5 cents: one choice (8 x 0.3 = 2.4 cents) fits, four (9.6 cents) do not.
    tok = relay.mint(cav.Budget(5, "USD", "month"))
    r = relay_out(relay, tok, max_tokens=MAX_TOKENS, n=4)
    assert r.status_code == 429, r.text
    assert error_code(r) == "budget_exceeded"
    err = r.json()["error"]
    assert (err["needed"], err["left"], err["unit"]) == (
        4 * MAX_TOKENS * PER_OUTPUT_TOKEN, 5_000_000, "micro-USD")
    assert "this call needs up to 0.096 USD" in err["message"]
    assert fake_requests(relay) == [], "a refused call must not reach the provider"
    assert list(relay.counters(tok).values()) == [0]

    ok = relay_out(relay, tok, max_tokens=MAX_TOKENS, n=1)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["choices"]) == 1
    rows = relay.ledger(tok)
    assert sorted(row.status for row in rows) == ["denied:budget_exceeded", "ok"]
    [settled] = [row for row in rows if row.status == "ok"]
    assert (settled.output_tokens, settled.cost) == (MAX_TOKENS, MAX_TOKENS * PER_OUTPUT_TOKEN)
    assert list(relay.counters(tok).values()) == [MAX_TOKENS * PER_OUTPUT_TOKEN]


def test_token_quota_counts_every_choice(relay: Relay) -> None:
    # What one choice needs (the relay's input estimate + max_tokens), read from a refusal so
    # the test does not depend on how the input is estimated.
    probe = relay_out(relay, relay.mint(cav.TokenQuota(1, "day")), max_tokens=MAX_TOKENS, n=1)
    assert probe.status_code == 429, probe.text
    one = probe.json()["error"]["needed"]
    assert one > MAX_TOKENS

    # Room for one choice and a few tokens more, not for four.
    tok = relay.mint(cav.TokenQuota(one + MAX_TOKENS, "day"))
    r = relay_out(relay, tok, max_tokens=MAX_TOKENS, n=4)
    assert r.status_code == 429, r.text
    assert error_code(r) == "quota_exceeded"
    assert r.json()["error"]["needed"] == one + 3 * MAX_TOKENS
    assert fake_requests(relay) == [], "a refused call must not reach the provider"
    assert list(relay.counters(tok).values()) == [0]

    ok = relay_out(relay, tok, max_tokens=MAX_TOKENS, n=1)
    assert ok.status_code == 200, ok.text
    usage = ok.json()["usage"]
    [settled] = [row for row in relay.ledger(tok) if row.status == "ok"]
    assert settled.output_tokens == usage["completion_tokens"] == MAX_TOKENS
    assert list(relay.counters(tok).values()) == [usage["total_tokens"]]


def test_every_choice_is_metered(relay: Relay) -> None:
    # A budget that affords four choices: all four are forwarded and settled.
    tok = relay.mint(cav.Budget(10, "USD", "month"))
    ok = relay_out(relay, tok, max_tokens=MAX_TOKENS, n=4)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["choices"]) == 4
    [row] = relay.ledger(tok)
    assert (row.status, row.output_tokens, row.cost) == (
        "ok", 4 * MAX_TOKENS, 4 * MAX_TOKENS * PER_OUTPUT_TOKEN)
