"""Budgets in another currency than the price: a refusal says which exchange rate the relay
used (Relay.fx_note), and a forwarded call says it in the x-capwallet-fx header. The harness
config is reference_relay/relay.example.toml: 1 USD = 0.87 EUR, rates dated 2025-11-20."""

from __future__ import annotations

import asyncio

import httpx
from relay_harness import Relay, error_code, fake_requests, relay_out

from capwallet import caveats as cav

RATE_NOTE = "(prices converted at 1 USD = 0.87 EUR, the relay's configured rate of 2025-11-20)"


def test_budget_refusal_names_the_rate(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(3, "EUR", "month"))
    # 16 x 0.3 = 4.8 USD cents = 4.176 EUR cents: more than the 3 EUR cents of the budget.
    r = relay_out(relay, tok, max_tokens=16)
    assert r.status_code == 429, r.text
    assert error_code(r) == "budget_exceeded"
    err = r.json()["error"]
    assert (err["needed"], err["unit"]) == (4_176_000, "micro-EUR")
    assert err["message"].endswith(RATE_NOTE), err["message"]
    assert "x-capwallet-fx" not in r.headers
    assert fake_requests(relay) == []

    # 8 x 0.3 = 2.4 USD cents = 2.088 EUR cents: fits, and the answer names the rate.
    ok = relay_out(relay, tok, max_tokens=8)
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-capwallet-fx"] == "1 USD = 0.87 EUR"
    [row] = [e for e in relay.ledger(tok) if e.status == "ok"]
    assert (row.cost, row.currency) == (2_088_000, "EUR")


def test_confirmation_refusal_names_the_rate(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "EUR", "month"), cav.ConfirmAbove(2, "EUR"))
    # 2.088 EUR cents, above the 2 cents that need no approval.
    r = relay_out(relay, tok, max_tokens=8)
    assert r.status_code == 403, r.text
    assert error_code(r) == "confirmation_required"
    assert RATE_NOTE in r.json()["error"]["message"]
    assert fake_requests(relay) == []


def test_no_rate_note_without_conversion(relay: Relay) -> None:
    r = relay_out(relay, relay.mint(cav.Budget(3, "USD", "month")), max_tokens=16)
    assert r.status_code == 429 and error_code(r) == "budget_exceeded"
    assert "converted at" not in r.json()["error"]["message"]
    ok = relay_out(relay, relay.mint(cav.Budget(3, "USD", "month")), max_tokens=8)
    assert ok.status_code == 200 and "x-capwallet-fx" not in ok.headers


def test_every_refusal_of_a_race_names_the_rate(relay: Relay) -> None:
    # 40 calls at once on a budget of exactly 4 (8 x 0.3 USD cents = 2.088 EUR cents each; 10
    # EUR cents fit 4, not 5; relay-out's worst case is its actual cost). Calls that read the
    # counters before the others reserved are refused by the atomic reservation instead of the
    # verifier (Relay.reserve_error): every refusal, either way, names the rate.
    tok = relay.mint(cav.Budget(10, "EUR", "month"))
    body = {"model": "relay-out", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8}

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(relay.url + "/v1/chat/completions", json=body,
                            headers={"authorization": "Bearer " + tok}) for _ in range(40)))

    rs = asyncio.run(all_at_once())
    assert sorted(r.status_code for r in rs) == [200] * 4 + [429] * 36
    for r in rs:
        if r.status_code == 429:
            assert error_code(r) == "budget_exceeded"
            assert r.json()["error"]["message"].endswith(RATE_NOTE), r.text
        else:
            assert r.headers["x-capwallet-fx"] == "1 USD = 0.87 EUR"


def test_the_ledger_counts_in_the_first_budgets_currency(relay: Relay) -> None:
    """A call's ledger row counts in the currency of the token's first budget in check order
    (Relay.handle works it out once per token: app.Presented), whatever currency the price
    is in; with no budget, in the price's."""
    cases = (((cav.TokenQuota(10**6, "month"), cav.Budget(1000, "EUR", "month"),
               cav.Budget(1000, "USD", "day")), "EUR", 2_088_000),
             ((cav.Budget(1000, "USD", "day"), cav.Budget(1000, "EUR", "month")), "USD",
              2_400_000),
             ((cav.TokenQuota(10**6, "month"),), "USD", 2_400_000))
    for caveats, currency, cost in cases:
        tok = relay.mint(*caveats, cav.App("fx-app"))
        for _ in range(2):  # the first call works it out, the second remembers it
            assert relay_out(relay, tok, max_tokens=8).status_code == 200
        rows = [e for e in relay.ledger(tok) if e.status == "ok"]
        assert [(r.currency, r.cost, r.app) for r in rows] == [(currency, cost, "fx-app")] * 2
