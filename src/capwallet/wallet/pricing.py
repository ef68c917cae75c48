"""What a permission request would buy: each model's price and the calls a budget pays for.

The consent page shows, beside every model an app asks for, the price the relay will charge
(the relay's own price table and exchange rates, as this wallet configures its relay) and
"about N calls of M tokens" for the budget asked; and it warns when the wallet has no key for
a provider or no price for a model, since the relay refuses those calls. Integers only: the
cost of the sample call is the relay's (microunits, rounded up), N is rounded down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from capwallet.money import MICROS_PER_MINOR, format_micros
from capwallet.wallet.permissions import Permission

if TYPE_CHECKING:
    from capwallet.wallet.context import WalletContext
    from reference_relay.config import RelayConfig
    from reference_relay.prices import PriceTable

SAMPLE_INPUT = 1000  # a typical call: a page of context in, a paragraph out
SAMPLE_OUTPUT = 500


@dataclass(frozen=True, slots=True)
class ModelPrice:
    provider: str
    model: str
    known: bool  # the wallet has a key for the provider and a price for the model
    problem: str  # why not, in words ("" when known)
    price_text: str = ""  # "0.15 / 0.60 USD per million tokens in / out"
    call_text: str = ""  # "a call of 1,000 + 500 tokens costs 0.00045 USD"
    calls: int | None = None  # how many such calls the budget pays for


@dataclass(frozen=True, slots=True)
class Quote:
    rows: list[ModelPrice]
    sample_tokens: str  # "1,000 in + 500 out"
    missing_keys: list[str]  # requested providers the wallet holds no key for

    @property
    def problems(self) -> list[ModelPrice]:
        return [r for r in self.rows if not r.known]


def relay_config(ctx: WalletContext) -> RelayConfig | None:
    """The relay configuration this wallet serves (None when it has no provider keys)."""
    from capwallet.wallet.relay_config import RelaySetupError, relay_config_data
    from reference_relay.config import ConfigError, parse_config

    try:
        data = relay_config_data(ctx.home, ctx.keystore, "http://127.0.0.1")
        return parse_config(data, ctx.home.path)
    except (RelaySetupError, ConfigError):
        return None


@cache
def _shipped_table() -> PriceTable:
    from reference_relay.prices import default_table

    return default_table()


def shipped(provider: str) -> frozenset[str]:
    """The models the reference relay's shipped price table prices for a provider id."""
    return frozenset(_shipped_table().sections.get(provider, {}))


def quote(perm: Permission, config: RelayConfig | None, keys: set[str]) -> Quote:
    """Every model the request names, priced as the relay would price it at the first
    requested provider that serves it; and every requested provider without a key."""
    budget_micros = perm.budget.minor * MICROS_PER_MINOR
    currency = perm.budget.currency
    usable = [config.provider(p) for p in perm.providers if p in keys] if config else []
    serving = [p for p in usable if p is not None]
    rows: list[ModelPrice] = []
    for model in perm.models:
        found = next(((p.id, p.models[model].price) for p in serving if model in p.models),
                     None)
        if found is None or config is None:
            where = " or ".join(perm.providers)
            # A model priced only at a requested provider the wallet has no key for: that is
            # the reason (saying "no price at openai or anthropic" blamed the price table).
            keyless = [p for p in perm.providers if p not in keys and model in shipped(p)]
            why = (f"your wallet has no key for {where}" if not serving else
                   f"served by {' or '.join(keyless)}, for which your wallet has no key"
                   if keyless else f"no price at {where}, so the relay refuses calls to it")
            rows.append(ModelPrice(", ".join(perm.providers), model, False, why))
            continue
        provider, price = found
        per_in = format_micros(price.input * MICROS_PER_MINOR // price.scale, price.currency)
        per_out = format_micros(price.output * MICROS_PER_MINOR // price.scale, price.currency)
        text = f"{per_in.split()[0]} / {per_out} per million tokens in / out"
        raw = price.raw_cost(input_tokens=SAMPLE_INPUT, output_tokens=SAMPLE_OUTPUT)
        converted = config.converter.micros(price, raw, currency)
        if converted is None:
            rows.append(ModelPrice(provider, model, False,
                                   f"no exchange rate from {price.currency} to {currency}",
                                   price_text=text))
            continue
        cost, _rate = converted
        rows.append(ModelPrice(
            provider, model, True, "", price_text=text,
            call_text=f"one costs {format_micros(cost, currency)}",
            calls=budget_micros // cost if cost > 0 else None))
    missing = [p for p in perm.providers if p not in keys]
    return Quote(rows, f"{SAMPLE_INPUT:,} in + {SAMPLE_OUTPUT:,} out", missing)
