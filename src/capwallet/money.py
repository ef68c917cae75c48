"""Money as integers, with ISO 4217 exponents. Never a float.

Limits a person sets are in minor units: "10EUR" is 1000 EUR minor units (cents); "5JPY" is 5
JPY (no minor unit). Only currencies with a known exponent are accepted, so "0.5" always means
the same number of minor units.

What a call costs is counted in **microunits**, millionths of a minor unit
(MICROS_PER_MINOR): a 300-token call to a small model costs a few thousandths of a cent, and
rounding each call up to a whole cent would overstate cheap calls a hundredfold and exhaust
budgets early. Budget counters and request costs are in microunits; caveat amounts stay in
minor units and are multiplied by MICROS_PER_MINOR where they are compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ISO 4217 minor-unit exponents for the currencies a user is likely to budget in.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "AED ARS AUD BGN BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR MAD MXN "
        "MYR NGN NOK NZD PEN PHP PKR PLN RON RUB SAR SEK SGD THB TRY TWD UAH USD ZAR".split(),
        2,
    ),
    **dict.fromkeys("CLP ISK JPY KRW UGX VND XAF XOF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}
_AMOUNT = re.compile(r"\s*(\d{1,15})(?:\.(\d{1,6}))?\s*([A-Za-z]{3})\s*")
_MICROS = re.compile(r"\s*(\d{1,12})(?:\.(\d{1,12}))?\s*([A-Za-z]{3})\s*")


MICROS_PER_MINOR = 1_000_000
# Largest caveat amount (minor units) whose microunit value is still an exact JavaScript number.
MAX_MINOR_AMOUNT = (2**53 - 1) // MICROS_PER_MINOR


class MoneyError(ValueError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class Money:
    minor: int
    currency: str

    def __str__(self) -> str:
        return format_minor(self.minor, self.currency)


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise MoneyError(
            f"unknown currency {currency!r} (use an ISO 4217 code such as EUR)"
        ) from None


def parse_amount(text: str) -> Money:
    """'10EUR', '0.50 EUR', '12.5USD' -> Money in minor units; raises MoneyError."""
    m = _AMOUNT.fullmatch(text)
    if not m:
        raise MoneyError(f"cannot read amount {text!r}: write it like 10EUR or 0.50USD")
    whole, frac, currency = m.group(1), m.group(2) or "", m.group(3).upper()
    exp = exponent(currency)
    if len(frac) > exp:
        raise MoneyError(f"{currency} has {exp} decimal places; {text!r} has {len(frac)}")
    return Money(int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0"), currency)


def parse_micros(text: str) -> tuple[int, str]:
    """'0.000123EUR' -> (12300, 'EUR'): a cost in microunits (millionths of a minor unit), the
    precision the relay counts costs in; up to exponent + 6 decimals. Raises MoneyError."""
    m = _MICROS.fullmatch(text)
    if not m:
        raise MoneyError(f"cannot read amount {text!r}: write it like 0.30EUR or 0.000123USD")
    whole, frac, currency = m.group(1), m.group(2) or "", m.group(3).upper()
    places = exponent(currency) + 6
    if len(frac) > places:
        raise MoneyError(
            f"{currency} costs go to {places} decimal places (microunits); {text!r} has "
            f"{len(frac)}")
    return int(whole) * 10**places + int(frac.ljust(places, "0") or "0"), currency


def format_minor(minor: int, currency: str) -> str:
    exp = EXPONENTS.get(currency, 0)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d} {currency}" if exp else f"{sign}{whole} {currency}"


def format_short(micros: int, currency: str, digits: int = 3) -> str:
    """A cost for reading at a glance: whole minor units as usual ('12.35 USD'), below one
    unit ``digits`` significant digits ('0.000452 USD'); pages show format_micros (exact) in
    a tooltip beside it. Rounds half up, for display only (never for charging)."""
    exp = EXPONENTS.get(currency, 0)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    unit = 10 ** (exp + 6)  # microunits in one whole currency unit
    if micros == 0 or micros >= unit:
        places = exp
    else:
        places = exp + 6
        # keep ``digits`` significant digits: drop places while more than that remain
        while places > exp and micros // 10 ** (exp + 6 - places) >= 10 ** digits:
            places -= 1
    step = 10 ** (exp + 6 - places)
    rounded = (micros + step // 2) // step  # in units of 10^-places
    whole, frac = divmod(rounded, 10**places) if places else (rounded, 0)
    if places == 0:
        return f"{sign}{whole} {currency}"
    return f"{sign}{whole}.{frac:0{places}d} {currency}"


def format_micros(micros: int, currency: str) -> str:
    """Microunits for people: '0.012 USD', '10.00 EUR', '0.0000033 USD' (no rounding)."""
    exp = EXPONENTS.get(currency, 0)
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 10 ** (exp + 6))
    digits = f"{frac:0{exp + 6}d}".rstrip("0").ljust(exp, "0")
    return f"{sign}{whole}.{digits} {currency}" if digits else f"{sign}{whole} {currency}"
