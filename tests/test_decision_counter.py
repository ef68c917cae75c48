"""The counter a denial names: Decision.counter (spec/verification.md#decision).

A rate_limited, quota_exceeded or budget_exceeded decision names the first counter, in check
order (rates, quotas, budgets; token order within a kind), that the call does not fit, with
its numbers in the counter's own unit. Every other decision names none. Expected counter ids,
keys and reset times are computed here from their definitions, not read from the verifier.
"""

from __future__ import annotations

import calendar
import hashlib
from typing import Any

from conftest import NOW
from hypothesis import given, settings
from hypothesis import strategies as st

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.reasons import Reason
from capwallet.token import mint
from capwallet.verify import CounterDenial, Decision, Request, Verifier, evaluate

KEY = RootKey(bytes.fromhex("0102030405060708"), bytes(range(32)))
TID = bytes.fromhex("00112233445566778899aabbccddeeff")
MICROS = 1_000_000

RATE = cav.Rate(2, nonce="c000000000000001")
QUOTA = cav.TokenQuota(10_000, "day", nonce="a000000000000001")
BUDGET = cav.Budget(1_000, "EUR", "month", nonce="b000000000000001")
DAILY = cav.Budget(100, "EUR", "day", nonce="b000000000000002")

# NOW is 2026-09-21T14:13:20Z.
MINUTE, DAY, MONTH = "2026-09-21T14:13", "2026-09-21", "2026-09"
NEXT_MINUTE = calendar.timegm((2026, 9, 21, 14, 14, 0))
NEXT_DAY = calendar.timegm((2026, 9, 22, 0, 0, 0))
NEXT_MONTH = calendar.timegm((2026, 10, 1, 0, 0, 0))

# 1000 input + 500 output tokens, 0.12 EUR (12 minor units, in microunits).
CALL = Request(provider="openai", model="gpt-4o-mini", operation="chat",
               input_tokens=1000, output_tokens=500, cost={"EUR": 12 * MICROS})


def cid(caveat: cav.Caveat) -> str:
    return hashlib.sha256(TID + cav.encode(caveat)).hexdigest()[:32]


def key(caveat: cav.Caveat, period_key: str) -> str:
    return f"{cid(caveat)}/{period_key}"


def decide(caveats: list[cav.Caveat], counters: dict[str, int] | None = None,
           request: Request = CALL, now: int = NOW) -> Decision:
    token = mint(KEY, caveats, now=NOW - 3600, token_id=TID).serialize()
    return Verifier(Keyring([KEY])).verify(token, request, now, counters or {})


# --- each kind -------------------------------------------------------------------------------


def test_rate_denial_names_the_rate() -> None:
    d = decide([RATE], {key(RATE, MINUTE): 2})
    assert d.reason is Reason.RATE_LIMITED
    assert d.counter == CounterDenial(
        kind="rate", counter_id=cid(RATE), counter_key=key(RATE, MINUTE), unit="requests",
        limit=2, used=2, needed=1, resets_at=NEXT_MINUTE)


def test_quota_denial_names_the_quota_in_tokens() -> None:
    d = decide([QUOTA], {key(QUOTA, DAY): 8_501})
    assert d.reason is Reason.QUOTA_EXCEEDED
    assert d.counter == CounterDenial(
        kind="quota", counter_id=cid(QUOTA), counter_key=key(QUOTA, DAY), unit="tokens",
        limit=10_000, used=8_501, needed=1_500, resets_at=NEXT_DAY)


def test_budget_denial_names_the_budget_in_microunits() -> None:
    d = decide([BUDGET], {key(BUDGET, MONTH): 989 * MICROS})
    assert d.reason is Reason.BUDGET_EXCEEDED
    assert d.counter == CounterDenial(
        kind="budget", counter_id=cid(BUDGET), counter_key=key(BUDGET, MONTH), unit="EUR",
        limit=1_000 * MICROS, used=989 * MICROS, needed=12 * MICROS, resets_at=NEXT_MONTH)
    # The relay's "left": what the named counter still holds.
    assert d.counter.limit - d.counter.used == 11 * MICROS


def test_total_budget_has_no_reset_and_an_over_limit_counter_is_named_as_is() -> None:
    total = cav.Budget(50, "USD", "total", nonce="b000000000000003")
    d = decide([total], {key(total, "total"): 70 * MICROS},
               request=CALL._replace(cost={"USD": 1}))
    assert d.counter is not None
    assert (d.counter.counter_key, d.counter.limit, d.counter.used, d.counter.needed,
            d.counter.resets_at) == (key(total, "total"), 50 * MICROS, 70 * MICROS, 1, None)


def test_counter_in_a_time_zone_has_its_local_period() -> None:
    kathmandu = cav.Budget(100, "EUR", "day", "Asia/Kathmandu", nonce="b000000000000004")
    at = calendar.timegm((2026, 9, 21, 18, 15, 0))  # local midnight: the 22nd begins
    d = decide([kathmandu], {key(kathmandu, "2026-09-22"): 100 * MICROS}, now=at)
    assert d.counter is not None
    assert d.counter.counter_key == key(kathmandu, "2026-09-22")
    assert d.counter.resets_at == calendar.timegm((2026, 9, 22, 18, 15, 0))


# --- which counter: the first in check order that the call does not fit ----------------------


def test_all_exhausted_names_the_rate() -> None:
    d = decide([BUDGET, QUOTA, RATE], {key(RATE, MINUTE): 2, key(QUOTA, DAY): 10_000,
                                       key(BUDGET, MONTH): 1_000 * MICROS})
    assert d.reason is Reason.RATE_LIMITED
    assert d.counter is not None and d.counter.counter_key == key(RATE, MINUTE)


def test_check_order_not_token_order_decides_between_kinds() -> None:
    # The budget comes first in the token; the quota is checked first.
    d = decide([BUDGET, QUOTA, RATE], {key(QUOTA, DAY): 10_000,
                                       key(BUDGET, MONTH): 1_000 * MICROS})
    assert d.reason is Reason.QUOTA_EXCEEDED
    assert d.counter is not None and d.counter.counter_id == cid(QUOTA)


def test_token_order_decides_within_a_kind() -> None:
    full = {key(BUDGET, MONTH): 995 * MICROS, key(DAILY, DAY): 95 * MICROS}
    budget_first = decide([BUDGET, DAILY], full).counter
    assert budget_first is not None and budget_first.counter_id == cid(BUDGET)
    daily_first = decide([DAILY, BUDGET], full).counter
    assert daily_first is not None and daily_first.counter_id == cid(DAILY)


def test_a_counter_that_fits_is_passed_over() -> None:
    d = decide([BUDGET, DAILY], {key(BUDGET, MONTH): 100 * MICROS, key(DAILY, DAY): 95 * MICROS})
    assert d.counter == CounterDenial(
        kind="budget", counter_id=cid(DAILY), counter_key=key(DAILY, DAY), unit="EUR",
        limit=100 * MICROS, used=95 * MICROS, needed=12 * MICROS, resets_at=NEXT_DAY)


# --- None for every other outcome ------------------------------------------------------------


def test_allowed_decisions_name_no_counter() -> None:
    d = decide([RATE, QUOTA, BUDGET])
    assert d.allowed and d.counter is None and len(d.debits) == 3
    # Zero cost passes an exhausted budget; a resource access is not counted.
    free = decide([BUDGET], {key(BUDGET, MONTH): 1_000 * MICROS},
                  request=CALL._replace(cost={"EUR": 0}))
    assert free.allowed and free.counter is None
    access = decide([RATE], {key(RATE, MINUTE): 2}, request=Request())
    assert access.allowed and access.counter is None


def test_other_denials_name_no_counter() -> None:
    exhausted = {key(BUDGET, MONTH): 1_000 * MICROS}
    cases: list[tuple[list[cav.Caveat], Request, Reason]] = [
        ([cav.Expires(NOW - 3600), BUDGET], CALL, Reason.EXPIRED),
        ([cav.Models(("o3",)), BUDGET], CALL, Reason.MODEL_NOT_ALLOWED),
        ([BUDGET], CALL._replace(cost={"USD": 1}), Reason.PRICE_UNKNOWN),
        ([cav.ConfirmAbove(5, "EUR")], CALL, Reason.CONFIRMATION_REQUIRED),
        ([cav.ConfirmAbove(5, "EUR")], CALL._replace(approval="cwa1_x"), Reason.APPROVAL_INVALID),
    ]
    for caveats, request, reason in cases:
        d = decide(caveats, exhausted, request=request)
        assert d.reason is reason and d.counter is None, (reason, d)
    bad = Verifier(Keyring([KEY])).verify("cwt1_nope", CALL, NOW)
    assert bad.reason is Reason.MALFORMED and bad.counter is None


def test_to_json_carries_the_counter() -> None:
    d = decide([QUOTA], {key(QUOTA, DAY): 9_000})
    assert d.to_json()["counter"] == {
        "kind": "quota", "counter_id": cid(QUOTA), "counter_key": key(QUOTA, DAY),
        "unit": "tokens", "limit": 10_000, "used": 9_000, "needed": 1_500,
        "resets_at": NEXT_DAY,
    }
    assert decide([QUOTA]).to_json()["counter"] is None


# --- the property: exactly the counter the check order stops on -----------------------------

_REASONS = {"rate": Reason.RATE_LIMITED, "quota": Reason.QUOTA_EXCEEDED,
            "budget": Reason.BUDGET_EXCEEDED}
_POOL: list[tuple[cav.Caveat, str, int]] = [  # caveat, period key, limit in counter units
    (RATE, MINUTE, 2), (cav.Rate(5, nonce="c000000000000002"), MINUTE, 5),
    (QUOTA, DAY, 10_000),
    (cav.TokenQuota(3_000, "total", nonce="a000000000000002"), "total", 3_000),
    (BUDGET, MONTH, 1_000 * MICROS), (DAILY, DAY, 100 * MICROS),
]


def _kind(c: cav.Caveat) -> str:
    return {cav.Rate: "rate", cav.TokenQuota: "quota", cav.Budget: "budget"}[type(c)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(_POOL))), min_size=1, max_size=6, unique=True),
       st.data())
def test_named_counter_is_the_first_in_check_order_that_does_not_fit(
    picks: list[int], data: Any,
) -> None:
    chosen = [_POOL[i] for i in picks]
    needed = {"rate": 1, "quota": 1_500, "budget": 12 * MICROS}
    # Anywhere up to the limit, or near the point where this call stops fitting.
    counters = {
        key(c, p): data.draw(st.one_of(
            st.integers(0, limit),
            st.integers(max(0, limit - needed[_kind(c)] - 1), limit + 1)), label=key(c, p))
        for c, p, limit in chosen
    }
    d = decide([c for c, _, _ in chosen], counters)
    rank = {"rate": 0, "quota": 1, "budget": 2}
    # Check order: rates, quotas, budgets; a stable sort keeps token order within a kind.
    first = None
    for c, p, limit in sorted(chosen, key=lambda x: rank[_kind(x[0])]):
        if counters[key(c, p)] + needed[_kind(c)] > limit:
            first = (c, p, limit, _kind(c))
            break
    if first is None:
        assert d.allowed and d.counter is None
        return
    c, p, limit, kind = first
    assert d.reason is _REASONS[kind]
    assert d.counter is not None
    assert (d.counter.kind, d.counter.counter_key, d.counter.limit, d.counter.used,
            d.counter.needed) == (kind, key(c, p), limit, counters[key(c, p)], needed[kind])


def test_a_clock_just_before_1970_still_checks_the_counters() -> None:
    # A token issued at time 0 evaluated at -30 (inside the clock allowance); that is minute
    # -1, which must not be mistaken for "no minute computed yet": the rate is still checked.
    # Verifier.verify refuses a now outside the spec's 0..2^53-1 (test_core_rules), so the
    # per-request step it hands to, whose minute memo this is about, is called directly.
    token = mint(KEY, [RATE], now=0, token_id=TID).serialize()
    verifier = Verifier(Keyring([KEY]))
    v = verifier.check_token(token)
    d = evaluate(v, CALL, -30, {key(RATE, "1969-12-31T23:59"): 2}, verifier.keys)
    assert d.reason is Reason.RATE_LIMITED
    fits = evaluate(v, CALL, -30, {}, verifier.keys)
    assert fits.allowed and [x.counter_key for x in fits.debits] == [
        key(RATE, "1969-12-31T23:59")]
