"""Whole numbers past 2^53 - 1 in what the relay decides on are refused with a stable 400
``invalid_request``, before anything is reserved or sent (reference_relay.estimate
positive_int, RelayApp.reservation).

Two defects this closes:

* a parser differential: an output cap or ``n`` past 2^53 - 1 was judged as Python reads it
  and forwarded for a JavaScript or double-based parser to read as another number;
* a poisoned reservation: a token with no budget or quota has no counter to refuse an
  absurd worst case (``max_tokens`` 2^63), so its reservation carried counts past 64 bits.
  Settling it at the worst case (the provider sent no usage) failed in the store, and so did
  every later lease sweep, which closes all expired reservations in one transaction: one
  such call stopped the relay from ever closing a lease again.

Real relay on loopback, the fake provider, the openai and anthropic SDKs as clients.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from relay_harness import (
    HELLO_ANTHROPIC,
    HELLO_OPENAI,
    Relay,
    error_code,
    fake_requests,
    token_id,
)

from capwallet import caveats as cav

MAX = 2**53 - 1


@pytest.mark.parametrize("value", [2**53, 2**63, 2**64 + 1, 10**30],
                         ids=["2^53", "2^63", "2^64+1", "1e30"])
def test_a_count_past_2_53_is_an_invalid_request(relay: Relay, value: int) -> None:
    tok = relay.mint()
    httpx.delete(relay.fake + "/_fake/requests")
    client = relay.openai(tok)
    for field in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                           **{field: value})  # type: ignore[call-overload]
        assert err.value.code == "invalid_request" and field in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                       max_tokens=8, n=value)
    assert err.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="relay-test", input="hello", max_output_tokens=value)
    assert err.value.code == "invalid_request" and "max_output_tokens" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as aerr:
        # (a timeout given: else the SDK itself refuses a large cap without a stream)
        relay.anthropic(tok).messages.create(model="claude-test", messages=HELLO_ANTHROPIC,
                                             max_tokens=value, timeout=30)
    assert "max_tokens" in str(aerr.value)
    assert fake_requests(relay) == []


def _huge_call(relay: Relay, tok: str, **body: Any) -> httpx.Response:
    return relay.post("/v1/chat/completions", {
        "model": "fault-no_usage", "messages": HELLO_OPENAI, **body}, tok)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("body", [{"max_tokens": MAX}, {"max_tokens": 2**47, "n": 128}],
                         ids=["max_tokens", "n"])
def test_a_worst_case_past_what_the_stores_count_is_refused(
        relay: Relay, stream: bool, body: dict[str, Any]) -> None:
    # A token with no budget or quota: nothing else refuses it. The model sends no usage,
    # so a call that went through would settle at its worst case.
    tok = relay.mint()
    httpx.delete(relay.fake + "/_fake/requests")
    r = _huge_call(relay, tok, stream=stream, **body)

    async def sweep() -> int:
        # Every lease this relay holds, expired an hour from now: the sweep must work (it
        # raised OverflowError while such a reservation was open, for every lease).
        return await relay.store.expire_leases(int(time.time()) + 3600)

    relay.quiesce()
    assert relay.run(sweep()) >= 0
    assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    assert "worst case" in r.json()["error"]["message"]
    assert fake_requests(relay) == []
    assert relay.ledger(tok) == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_revoked_token_asking_a_worst_case_past_what_the_stores_count_is_refused_as_revoked(
        relay: Relay, stream: bool) -> None:
    # The worst case is refused on the way to the reservation (RelayApp.reservation), so the
    # revocation, which the reservation reads, was never read: a revoked token got 400
    # invalid_request (seen failing so), where any other refusal before the reservation
    # tells it is revoked (revocation_first). Not an oracle: the holder of a revoked token
    # is told so by any request.
    tok = relay.mint()
    relay.run(relay.store.revoke(token_id(tok), int(time.time())))
    httpx.delete(relay.fake + "/_fake/requests")
    r = _huge_call(relay, tok, stream=stream, max_tokens=MAX)
    assert (r.status_code, error_code(r)) == (401, "revoked"), r.text
    assert fake_requests(relay) == []
    # Live, the same request is still the request's fault.
    live = relay.mint()
    r = _huge_call(relay, live, stream=stream, max_tokens=MAX)
    assert (r.status_code, error_code(r)) == (400, "invalid_request"), r.text


def test_a_budget_lowers_a_cap_up_to_2_53(relay: Relay) -> None:
    # The largest count accepted: a budget affords less, so the cap is lowered, not refused.
    tok = relay.mint(cav.Budget(100, "USD", "month"))
    raw = relay.openai(tok).chat.completions.with_raw_response.create(
        model="relay-test", messages=HELLO_OPENAI, max_tokens=MAX)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-capwallet-output-cap"].startswith(f"requested={MAX}; applied=")

