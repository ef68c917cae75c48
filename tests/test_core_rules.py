"""Rules of the protocol core that mutation testing found unguarded (issue 18).

Each test names the rule it pins. They are unit tests of this implementation; rules that
bind every implementation are also vectors (test_vectors/).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.limits import CounterLimit, effective
from capwallet.money import (
    MoneyError,
    format_micros,
    format_minor,
    parse_amount,
)
from capwallet.periods import period_end, period_key
from capwallet.reasons import Reason
from capwallet.token import mint
from capwallet.verify import Request, Verifier

KEY = RootKey(b"\x01" * 8, b"\x02" * 32)
KEYS = Keyring([KEY])
T0 = 1_790_000_000
CALL = Request(provider="openai", model="m1", operation="chat",
               input_tokens=10, output_tokens=10, cost={"EUR": 5_000_000})


def _limits(*caveats: cav.Caveat):  # type: ignore[no-untyped-def]
    token = mint(KEY, list(caveats), now=T0)
    return Verifier(KEYS).check_token(token.serialize()).limits


# --- limits: attenuation only narrows --------------------------------------------------


def test_child_keeps_parent_ask_first_scopes() -> None:
    """ask-first scopes are the union over the chain: a child cannot drop its parent's."""
    lim = _limits(cav.AskFirst(("posts:publish",)), cav.AskFirst(("drafts:write",)))
    assert lim.ask_first == frozenset({"posts:publish", "drafts:write"})
    parent = mint(KEY, [cav.AskFirst(("posts:publish",))], now=T0)
    child = parent.attenuate([cav.AskFirst(("drafts:write",))])
    d = Verifier(KEYS).verify(child.serialize(), Request(scopes=("posts:publish",)), T0)
    assert d.reason is Reason.CONFIRMATION_REQUIRED


@pytest.mark.parametrize("order", [(300, 100), (100, 300)])
def test_smallest_token_caps_win_in_any_order(order: tuple[int, int]) -> None:
    """max-input-tokens and max-output-tokens: the smallest over the chain, whatever its place."""
    a, b = order
    lim = _limits(cav.MaxOutputTokens(a), cav.MaxInputTokens(a),
                  cav.MaxOutputTokens(b), cav.MaxInputTokens(b))
    assert lim.max_output_tokens == 100
    assert lim.max_input_tokens == 100


def test_confirm_above_keeps_the_lowest_threshold_per_currency() -> None:
    lim = _limits(cav.ConfirmAbove(50, "EUR"), cav.ConfirmAbove(20, "EUR"),
                  cav.ConfirmAbove(70, "EUR"), cav.ConfirmAbove(9, "USD"))
    assert lim.confirm_above == {"EUR": 20, "USD": 9}


def test_time_window_is_the_intersection() -> None:
    lim = _limits(cav.NotBefore(T0 - 10), cav.NotBefore(T0 - 50), cav.Expires(T0 + 90),
                  cav.Expires(T0 + 30))
    assert (lim.not_before, lim.expires) == (T0 - 10, T0 + 30)


def test_logging_keeps_the_most_restrictive_level() -> None:
    assert _limits(cav.Logging("full"), cav.Logging("none"), cav.Logging("metadata")).logging \
        == "none"


def test_identical_counter_caveats_are_one_counter() -> None:
    budget = cav.Budget(100, "EUR", "day", nonce="00112233aabbccdd")
    raw = cav.encode(budget)
    caveats = [(raw, budget), (raw, budget)]
    lim = effective(b"\x00" * 16, caveats)  # type: ignore[arg-type]
    assert len(lim.counters) == 1


def test_counter_descriptions() -> None:
    """What a denial says about the limit: amount, unit, period, time zone."""
    assert CounterLimit("budget", "c", 1000, "EUR", "month").describe() \
        == "budget 10.00 EUR per month"
    assert CounterLimit("quota", "c", 5000, "tokens", "total").describe() \
        == "quota 5000 tokens in total"
    assert CounterLimit("rate", "c", 3, "requests", "minute").describe() \
        == "rate 3 requests per minute"
    assert CounterLimit("budget", "c", 5, "JPY", "day", "Asia/Tokyo").describe() \
        == "budget 5 JPY per day (Asia/Tokyo)"


# --- verify: decisions carry what callers rely on ---------------------------------------


def test_confirmation_required_says_an_approval_may_be_asked() -> None:
    token = mint(KEY, [cav.ConfirmAbove(1, "EUR")], now=T0).serialize()
    d = Verifier(KEYS).verify(token, CALL, T0)
    assert (d.allowed, d.reason, d.needs_approval) == (False, Reason.CONFIRMATION_REQUIRED, True)
    other = Verifier(KEYS).verify(token, CALL._replace(model="m2"), T0)
    assert other.needs_approval is False or other.reason is Reason.CONFIRMATION_REQUIRED


def test_denials_name_the_token_and_its_limits() -> None:
    token = mint(KEY, [cav.Models(("m2",))], now=T0)
    d = Verifier(KEYS).verify(token.serialize(), CALL, T0)
    assert d.reason is Reason.MODEL_NOT_ALLOWED
    assert d.token_id == token.identifier.token_id.hex()
    assert d.limits is not None and d.limits.models == frozenset({"m2"})
    bad = Verifier(KEYS).verify("cwt1_AAAA", CALL, T0)
    assert bad.token_id is None and bad.limits is None


@pytest.mark.parametrize("missing", ["model", "operation"])
def test_model_call_must_state_model_and_operation(missing: str) -> None:
    token = mint(KEY, [], now=T0).serialize()
    with pytest.raises(ValueError, match="provider, model and operation"):
        Verifier(KEYS).verify(token, CALL._replace(**{missing: None}), T0)


def test_decision_json_field_names() -> None:
    """The JSON form is what the conformance adapter and other implementations exchange."""
    token = mint(KEY, [cav.Budget(100, "EUR", "total", nonce="00112233aabbccdd")], now=T0)
    d = Verifier(KEYS).verify(token.serialize(), CALL, T0)
    j = d.to_json()
    assert list(j) == ["allowed", "reason", "message", "token_id", "limits", "debits",
                       "approval_id", "needs_approval", "counter"]
    assert list(j["debits"][0]) == ["kind", "counter_key", "amount", "limit", "used", "unit",
                                    "resets_at"]
    denied = Verifier(KEYS).verify(token.serialize(), CALL, T0,
                                   {j["debits"][0]["counter_key"]: 99_000_000})
    c = denied.to_json()["counter"]
    assert list(c) == ["kind", "counter_id", "counter_key", "unit", "limit", "used", "needed",
                       "resets_at"]
    assert json.loads(json.dumps(denied.to_json())) == denied.to_json()


def test_budget_denial_message_gives_used_left_and_needed() -> None:
    token = mint(KEY, [cav.Budget(10, "EUR", "total", nonce="00112233aabbccdd")], now=T0)
    v = Verifier(KEYS)
    key = v.verify(token.serialize(), CALL, T0).debits[0].counter_key
    d = v.verify(token.serialize(), CALL, T0, {key: 7_000_000})
    assert d.reason is Reason.BUDGET_EXCEEDED
    assert d.message == ("budget 0.10 EUR in total: 0.07 EUR used, 0.03 EUR left; "
                         "this call needs up to 0.05 EUR")
    assert (d.counter.used, d.counter.needed, d.counter.limit) == (7_000_000, 5_000_000,
                                                                   10_000_000)
    over = v.verify(token.serialize(), CALL, T0, {key: 12_000_000})
    assert "0 EUR left" in over.message or "0.00 EUR left" in over.message


def test_verified_chain_cache_is_bounded_and_evicts_oldest() -> None:
    v = Verifier(KEYS, cache_size=3)
    tokens = [mint(KEY, [cav.MaxInputTokens(100 + i)], now=T0).serialize() for i in range(5)]
    for t in tokens:
        assert v.verify(t, CALL, T0).allowed
    assert len(v._cache) == 3
    assert list(v._cache) == tokens[2:]
    assert v.verify(tokens[0], CALL, T0).allowed  # evicted ones verify again
    assert list(v._cache) == [*tokens[3:], tokens[0]]
    off = Verifier(KEYS, cache_size=0)
    assert off.verify(tokens[0], CALL, T0).allowed and off._cache == {}


# --- periods ------------------------------------------------------------------------------


def _ts(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(("year", "leap"), [(2027, False), (2028, True), (2100, False)])
def test_february_month_window(year: int, leap: bool) -> None:
    now = _ts(year, 2, 10, 12)
    assert period_key("month", now) == f"{year}-02"
    assert period_end("month", now) == _ts(year, 3, 1)
    assert period_end("month", _ts(year, 1, 31, 23, 59)) == _ts(year, 2, 1)
    last = _ts(year, 2, 29 if leap else 28, 23, 59)
    assert period_end("month", last) == _ts(year, 3, 1)


def test_month_window_of_every_month_end() -> None:
    for month in range(1, 13):
        start = _ts(2027, month, 1)
        nxt = _ts(2028, 1, 1) if month == 12 else _ts(2027, month + 1, 1)
        assert period_end("month", start) == nxt
        assert period_end("month", nxt - 1) == nxt


# --- money --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "minor", "currency"), [
    ("10EUR", 1000, "EUR"), ("0.50EUR", 50, "EUR"), ("0.5 eur", 50, "EUR"),
    ("12.05USD", 1205, "USD"), ("5JPY", 5, "JPY"), ("1.234KWD", 1234, "KWD"),
    (" 7 GBP ", 700, "GBP"), ("0EUR", 0, "EUR"),
])
def test_parse_amount(text: str, minor: int, currency: str) -> None:
    m = parse_amount(text)
    assert (m.minor, m.currency) == (minor, currency)


@pytest.mark.parametrize("text", ["0.505EUR", "1.5JPY", "10", "EUR", "1,5EUR", "-1EUR",
                                  "10XXX", "1.2345KWD", ""])
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text)


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (1000, "EUR", "10.00 EUR"), (5, "EUR", "0.05 EUR"), (0, "EUR", "0.00 EUR"),
    (-5, "EUR", "-0.05 EUR"), (7, "JPY", "7 JPY"), (1234, "KWD", "1.234 KWD"),
])
def test_format_minor(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text


@pytest.mark.parametrize(("micros", "currency", "text"), [
    (10_000_000, "EUR", "0.10 EUR"), (1_000_000_000, "EUR", "10.00 EUR"),
    (1_200_000, "USD", "0.012 USD"), (33, "USD", "0.00000033 USD"), (0, "EUR", "0.00 EUR"),
    (-1_200_000, "USD", "-0.012 USD"), (5_000_000, "JPY", "5 JPY"),
    (2_500_000, "JPY", "2.5 JPY"), (0, "JPY", "0 JPY"),
])
def test_format_micros(micros: int, currency: str, text: str) -> None:
    assert format_micros(micros, currency) == text


def test_money_prints_like_a_person_writes_it() -> None:
    assert str(parse_amount("0.5EUR")) == "0.50 EUR"
    assert str(parse_amount("5JPY")) == "5 JPY"


def test_a_currency_without_a_known_exponent_prints_whole_units() -> None:
    """Formatting never raises: an amount in a currency the table lacks prints as whole units
    (parsing still refuses such a currency)."""
    assert format_minor(5, "XTS") == "5 XTS"
    assert format_micros(5_000_000, "XTS") == "5 XTS"
    assert format_micros(2_500_000, "XTS") == "2.5 XTS"


@pytest.mark.parametrize(("text", "says"), [
    ("10", "write it like 10EUR or 0.50USD"),
    ("0.505EUR", "EUR has 2 decimal places; '0.505EUR' has 3"),
    ("10XXX", "unknown currency 'XXX' (use an ISO 4217 code such as EUR)"),
])
def test_money_errors_say_what_to_write(text: str, says: str) -> None:
    with pytest.raises(MoneyError) as err:
        parse_amount(text)
    assert says in str(err.value)
