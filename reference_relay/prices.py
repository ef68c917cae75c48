"""Model prices and the cost of a call, in integers only.

A price is minor units of a currency per million tokens, times a stated ``scale`` (so that
0.075 USD per million tokens is still an integer). The cost of a call is counted, as budgets
count it (spec 1.1), in **microunits**, millionths of a minor unit: the exact rational cost,
converted into another currency (a budget's) with a configured exchange rate when needed, and
rounded up once: every rounding goes against the user, never in favour of an overspend.

The default table ships as data (prices.toml beside this module) with its date; a relay config
may override any model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from capwallet.money import EXPONENTS

MILLION = 1_000_000


class PriceError(ValueError):
    """A price table or exchange rate that cannot be used."""


@dataclass(frozen=True, slots=True)
class Price:
    """Prices per million tokens in minor units of ``currency`` times ``scale``."""

    currency: str
    scale: int
    input: int
    output: int
    cached_input: int | None = None
    cache_write: int | None = None
    max_output: int | None = None
    long_context_above: int | None = None
    input_long: int | None = None
    output_long: int | None = None
    cached_input_long: int | None = None  # cache reads above long_context_above
    cache_write_long: int | None = None  # cache writes above long_context_above
    max_image_tokens: int | None = None  # most input tokens one image can be billed as
    # OpenAI Responses built-in web search: price per 1,000 calls (minor units x scale) and
    # the search content input tokens one call is billed at most (estimate.responses_tools).
    web_search_call: int | None = None
    web_search_tokens: int | None = None
    web_search_preview_call: int | None = None
    web_search_preview_tokens: int | None = None

    @property
    def is_free(self) -> bool:
        return all(
            not p for p in (self.input, self.output, self.cached_input, self.cache_write,
                            self.input_long, self.output_long, self.cached_input_long,
                            self.cache_write_long)
        )

    def tier(self, input_tokens: int) -> tuple[int, int]:
        """(input, output) price for a call with this many input tokens in total."""
        if self.long_context_above is not None and input_tokens > self.long_context_above:
            return (self.input_long or self.input, self.output_long or self.output)
        return self.input, self.output

    def plain_cost(self, input_tokens: int, output_tokens: int) -> int:
        """``raw_cost`` of a call with no cached or cache-write tokens, taking positions (the
        relay prices every call's worst case so: keywords cost more to pass)."""
        above = self.long_context_above
        if above is None or input_tokens <= above:
            return input_tokens * self.input + output_tokens * self.output
        p_in, p_out = self.tier(input_tokens)
        return input_tokens * p_in + output_tokens * p_out

    def raw_cost(self, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
                 cache_write_tokens: int = 0) -> int:
        """Exact cost in microunits times ``scale`` (Converter.micros divides, rounding up).

        ``input_tokens`` excludes cached and cache-write tokens; the long-context tier is
        chosen on all of them together, as the providers do. In that tier cache reads and
        writes cost more too: Anthropic's prompt-caching multipliers apply on top of its long
        context prices (docs.claude.com/en/docs/about-claude/pricing#long-context-pricing). So
        they are ``cached_input_long`` / ``cache_write_long`` when given, else the short-tier
        price scaled by input_long / input (rounded up).
        """
        if not cached_input_tokens and not cache_write_tokens:  # the usual call: no caching
            return self.plain_cost(input_tokens, output_tokens)
        total_in = input_tokens + cached_input_tokens + cache_write_tokens
        p_in, p_out = self.tier(total_in)
        long = self.long_context_above is not None and total_in > self.long_context_above
        cached = self._cache_price(self.cached_input, self.cached_input_long, long, p_in)
        write = self._cache_price(self.cache_write, self.cache_write_long, long, p_in)
        if write is None:
            write = 2 * p_in  # the 1-hour cache price, the most a write can cost
        return (input_tokens * p_in + output_tokens * p_out
                + cached_input_tokens * (cached if cached is not None else p_in)
                + cache_write_tokens * write)

    def _cache_price(self, short: int | None, long_price: int | None, long: bool,
                     p_in: int) -> int | None:
        if not long or short is None:
            return short
        if long_price is not None:
            return long_price
        if self.input == 0:
            return max(short, p_in)
        return ceil_div(short * p_in, self.input)


# Every field a price entry may give (a table entry or inline in a relay config).
PRICE_FIELDS = tuple(f.name for f in fields(Price))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class Rate:
    """1 ``base`` = ``num / den`` ``quote`` (exact, from the decimal text in the config)."""

    base: str
    quote: str
    num: int
    den: int
    text: str

    def describe(self) -> str:
        return f"1 {self.base} = {self.text} {self.quote}"


def parse_rate(pair: str, value: Any) -> Rate:
    """``"USD/EUR" = "0.93"`` -> Rate (a decimal string, so no float ever touches money)."""
    try:
        base, quote = pair.split("/")
    except ValueError:
        raise PriceError(f"exchange rate key {pair!r} must look like 'USD/EUR'") from None
    for c in (base, quote):
        if c not in EXPONENTS:
            raise PriceError(f"exchange rate {pair!r}: unknown currency {c!r}")
    if not isinstance(value, str):
        raise PriceError(f"exchange rate {pair!r} must be a decimal string like \"0.93\"")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise PriceError(f"exchange rate {pair!r} = {value!r} is not a decimal number") from None
    if not d.is_finite() or d <= 0:
        raise PriceError(f"exchange rate {pair!r} must be positive")
    num, den = d.as_integer_ratio()
    return Rate(base, quote, num, den, value)


class Converter:
    """Converts exact raw costs into microunits of any currency, rounding up.

    The factor between a price's terms (its currency and scale) and a target currency is
    worked out once per pair and kept: a call converts its cost twice or more (the worst case
    per budget currency, the settlement), always between the same few pairs."""

    def __init__(self, rates: Mapping[tuple[str, str], Rate]) -> None:
        self.rates = dict(rates)
        # (price currency, scale, target currency) -> (multiplier, divisor, rate), or None
        # when no rate is known.
        self._factors: dict[tuple[str, int, str], tuple[int, int, Rate | None] | None] = {}

    def factor(self, src: str, dst: str) -> tuple[int, int, Rate | None] | None:
        """(num, den, rate used) with 1 src = num/den dst, or None when no rate is known."""
        if src == dst:
            return 1, 1, None
        r = self.rates.get((src, dst))
        if r is not None:
            return r.num, r.den, r
        r = self.rates.get((dst, src))
        if r is not None:
            return r.den, r.num, r
        return None

    def _terms(self, src: str, scale: int, dst: str) -> tuple[int, int, Rate | None] | None:
        """raw * multiplier / divisor = microunits of ``dst`` for a raw cost in a price's
        terms (``src`` at ``scale``), exact before the one rounding up."""
        f = self.factor(src, dst)
        if f is None:
            return None
        num, den, rate = f
        exp = EXPONENTS[dst] - EXPONENTS[src]
        return num * (10 ** max(exp, 0)), scale * den * (10 ** max(-exp, 0)), rate

    def micros(self, price: Price, raw: int, currency: str) -> tuple[int, Rate | None] | None:
        """Microunits of ``currency`` for a raw cost in ``price``'s terms, rounded up, and the
        rate used (None if none was needed); None when no rate is known. Nothing costs nothing
        in every currency, so a free model or a zero cost needs no rate."""
        if raw == 0:
            return 0, None
        key = (price.currency, price.scale, currency)
        try:
            terms = self._factors[key]
        except KeyError:
            terms = self._factors[key] = self._terms(*key)
        if terms is None:
            return None
        mul, div, rate = terms
        return -(-raw * mul // div), rate


def price_from_table(entry: Mapping[str, Any], currency: str, scale: int, where: str) -> Price:
    known = {*PRICE_FIELDS, "id"}
    extra = set(entry) - known
    if extra:
        raise PriceError(f"{where}: unknown price field(s) {', '.join(sorted(extra))}")
    values: dict[str, int | None] = {}
    for name in known - {"currency", "scale", "id"}:
        v = entry.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise PriceError(f"{where}: {name} must be a non-negative integer")
        values[name] = v
    if values["input"] is None or values["output"] is None:
        raise PriceError(f"{where}: needs input and output prices")
    cur = entry.get("currency", currency)
    if cur not in EXPONENTS:
        raise PriceError(f"{where}: unknown currency {cur!r}")
    sc = entry.get("scale", scale)
    if not isinstance(sc, int) or sc < 1:
        raise PriceError(f"{where}: scale must be a positive integer")
    return Price(
        currency=cur, scale=sc, input=values["input"], output=values["output"],
        cached_input=values["cached_input"], cache_write=values["cache_write"],
        max_output=values["max_output"], long_context_above=values["long_context_above"],
        input_long=values["input_long"], output_long=values["output_long"],
        cached_input_long=values["cached_input_long"],
        cache_write_long=values["cache_write_long"],
        max_image_tokens=values["max_image_tokens"],
        web_search_call=values["web_search_call"],
        web_search_tokens=values["web_search_tokens"],
        web_search_preview_call=values["web_search_preview_call"],
        web_search_preview_tokens=values["web_search_preview_tokens"],
    )


@dataclass(frozen=True, slots=True)
class PriceTable:
    date: str
    note: str
    sections: dict[str, dict[str, Price]]  # section (usually a provider id) -> model -> Price
    scale: int = 1  # the table's scale, also the default for prices given inline in a config

    def section(self, name: str) -> dict[str, Price]:
        try:
            return self.sections[name]
        except KeyError:
            raise PriceError(
                f"the price table has no section {name!r}; it has: "
                f"{', '.join(sorted(self.sections))}"
            ) from None


def parse_table(data: Mapping[str, Any], where: str) -> PriceTable:
    scale = data.get("scale", 1)
    if not isinstance(scale, int) or scale < 1:
        raise PriceError(f"{where}: scale must be a positive integer")
    sections: dict[str, dict[str, Price]] = {}
    for name, sec in data.items():
        if not isinstance(sec, dict):
            continue
        currency = sec.get("currency")
        models: dict[str, Price] = {}
        for model, entry in sec.items():
            if model == "currency":
                continue
            if not isinstance(entry, dict):
                raise PriceError(f"{where}: [{name}] {model} must be a table of prices")
            models[model] = price_from_table(entry, str(currency), scale, f"{where} {model}")
        sections[name] = models
    return PriceTable(str(data.get("date", "")), str(data.get("note", "")), sections, scale)


def default_table() -> PriceTable:
    """The shipped, dated table (reference_relay/prices.toml)."""
    text = resources.files("reference_relay").joinpath("prices.toml").read_text("utf-8")
    return parse_table(tomllib.loads(text), "prices.toml")
