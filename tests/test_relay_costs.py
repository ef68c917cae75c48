"""The relay's per-call costs (reference_relay.app.CostPlans) are Converter.micros's.

CostPlans works out each price's conversion factors once and then costs a call with one
multiplication and one division per currency. These tests compare it, over generated prices,
currency sets and raw costs, with the plain computation it replaces: Converter.micros for
each currency, in order, leaving out a currency with no rate, and each rate named once.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reference_relay.app import CostPlans
from reference_relay.prices import Converter, Price, parse_rate

RATES = {("USD", "EUR"): parse_rate("USD/EUR", "0.87"),
         ("USD", "JPY"): parse_rate("USD/JPY", "151.3"),
         ("EUR", "KWD"): parse_rate("EUR/KWD", "0.3317"),
         ("GBP", "USD"): parse_rate("GBP/USD", "1.27")}
CONVERTER = Converter(RATES)
CURRENCIES = ["USD", "EUR", "JPY", "KWD", "GBP", "CHF"]


def _reference(price: Price, raw: int,
               currencies: tuple[str, ...]) -> tuple[dict[str, int], list[str]]:
    out: dict[str, int] = {}
    rates: list[str] = []
    for currency in currencies:
        got = CONVERTER.micros(price, raw, currency)
        if got is None:
            continue
        out[currency] = got[0]
        if got[1] is not None and got[1].describe() not in rates:
            rates.append(got[1].describe())
    return out, rates


prices = st.builds(lambda cur, scale, i, o: Price(currency=cur, scale=scale, input=i, output=o),
                   st.sampled_from(CURRENCIES[:5]), st.sampled_from([1, 1000, 7]),
                   st.integers(0, 10**9), st.integers(0, 10**9))
currency_sets = st.lists(st.sampled_from(CURRENCIES), max_size=4, unique=True).map(tuple)


@given(prices, st.lists(st.integers(0, 10**15), min_size=1, max_size=4), currency_sets)
def test_costs_are_converter_micros(price: Price, raws: list[int],
                                    currencies: tuple[str, ...]) -> None:
    plans = CostPlans(CONVERTER)
    for raw in raws:  # the first call makes the plan, the others reuse it
        assert plans.costs(price, raw, currencies) == _reference(price, raw, currencies)


def test_rates_are_named_once_and_in_order() -> None:
    price = Price(currency="USD", scale=1000, input=1, output=1)
    got = CostPlans(CONVERTER).costs(price, 12_345_000, ("EUR", "USD", "JPY", "CHF"))
    assert got == ({"EUR": 10741, "USD": 12345, "JPY": 18678}, ["1 USD = 0.87 EUR",
                                                                 "1 USD = 151.3 JPY"])


def test_nothing_costs_nothing_in_every_currency() -> None:
    price = Price(currency="USD", scale=1, input=0, output=0)
    assert CostPlans(CONVERTER).costs(price, 0, ("EUR", "CHF")) == ({"EUR": 0, "CHF": 0}, [])


def test_a_plan_belongs_to_its_price_object() -> None:
    """Plans are found by the price's id: another price object (even one that reuses a freed
    object's id) gets its own plan."""
    plans = CostPlans(CONVERTER)
    a = Price(currency="USD", scale=1, input=1, output=1)
    b = Price(currency="USD", scale=2, input=1, output=1)
    assert plans.costs(a, 10, ("USD",)) == ({"USD": 10}, [])
    plans._plans[(id(b), ("USD",))] = plans._plans[(id(a), ("USD",))]  # a stale entry
    assert plans.costs(b, 10, ("USD",)) == ({"USD": 5}, [])
