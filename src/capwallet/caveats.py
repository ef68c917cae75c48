"""Caveat vocabulary v1: typed values in a registry (spec/caveats.md).

Each caveat type is a frozen dataclass with a registered ``name``; ``encode()`` gives its exact
signed bytes and ``decode()`` reads them back, accepting only the canonical spelling. A caveat
whose name is not in REGISTRY is unknown (reason unknown_caveat); a known name whose arguments
do not decode is invalid (reason invalid_caveat). Both deny: a verifier never skips a caveat it
does not understand.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Self, Union

from capwallet import grammar, origins
from capwallet.grammar import GrammarError, parse_int, sorted_unique
from capwallet.money import EXPONENTS, MAX_MINOR_AMOUNT
from capwallet.periods import PERIODS, zone
from capwallet.reasons import Reason, TokenError

LOGGING_LEVELS = ("none", "metadata", "full")  # ordered from most to least restrictive
_NONCE = re.compile(r"[0-9a-f]{16}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_TZ = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


def new_nonce() -> str:
    """64 random bits, so two siblings with equal limits still get separate counters."""
    return secrets.token_hex(8)


def _one(args: list[str], name: str) -> str:
    if len(args) != 1:
        raise GrammarError(f"{name} takes exactly one argument")
    return args[0]


def _nonce(text: str) -> str:
    if not _NONCE.fullmatch(text):
        raise GrammarError("nonce must be 16 lowercase hex digits")
    return text


def _currency(text: str) -> str:
    if not _CURRENCY.fullmatch(text):
        raise GrammarError(f"currency {text!r} is not an ISO 4217 code")
    return text


def _amount(text: str) -> int:
    amount = parse_int(text, "amount")
    if amount > MAX_MINOR_AMOUNT:
        raise GrammarError(f"amount {amount} is above the largest allowed, {MAX_MINOR_AMOUNT}")
    return amount


def _period(text: str) -> str:
    if text not in PERIODS:
        raise GrammarError(f"period {text!r} is not one of {', '.join(PERIODS)}")
    return text


def _tz(args: list[str]) -> str:
    if not args:
        return "UTC"
    if len(args) > 1:
        raise GrammarError("too many arguments")
    name = args[0]
    if name == "UTC" or not _TZ.fullmatch(name):
        raise GrammarError(f"time zone {name!r} is not a canonical IANA name (omit it for UTC)")
    try:
        zone(name)
    except ValueError as exc:
        raise GrammarError(str(exc)) from exc
    return name


def _tz_args(tz: str) -> list[str]:
    return [] if tz == "UTC" else [tz]


@dataclass(frozen=True, slots=True)
class NotBefore:
    name: ClassVar[str] = "not-before"
    time: int

    def args(self) -> list[str]:
        return [str(self.time)]

    @classmethod
    def from_args(cls, args: list[str]) -> NotBefore:
        return cls(parse_int(_one(args, cls.name), "time"))


@dataclass(frozen=True, slots=True)
class Expires:
    name: ClassVar[str] = "expires"
    time: int

    def args(self) -> list[str]:
        return [str(self.time)]

    @classmethod
    def from_args(cls, args: list[str]) -> Expires:
        return cls(parse_int(_one(args, cls.name), "time"))


@dataclass(frozen=True, slots=True)
class _NameSet:
    """A set of exact names (providers, models, operations, scopes): order and case matter."""

    name: ClassVar[str] = ""
    allow_empty: ClassVar[bool] = False
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        values = tuple(sorted(set(self.values), key=lambda v: v.encode("utf-8")))
        object.__setattr__(self, "values", values)
        if not values and not self.allow_empty:
            raise ValueError(f"{self.name} needs at least one value")

    def args(self) -> list[str]:
        return list(self.values)

    @classmethod
    def from_args(cls, args: list[str]) -> Self:
        if not args and not cls.allow_empty:
            raise GrammarError(f"{cls.name} needs at least one value")
        # Already checked sorted and unique: skip __post_init__'s normalising sort.
        made = object.__new__(cls)
        object.__setattr__(made, "values", sorted_unique(args, cls.name))
        return made


class Providers(_NameSet):
    name: ClassVar[str] = "providers"


class Models(_NameSet):
    name: ClassVar[str] = "models"


class Operations(_NameSet):
    name: ClassVar[str] = "operations"


class Scopes(_NameSet):
    name: ClassVar[str] = "scopes"
    allow_empty: ClassVar[bool] = True


class AskFirst(_NameSet):
    name: ClassVar[str] = "ask-first"


@dataclass(frozen=True, slots=True)
class ZeroRetention:
    name: ClassVar[str] = "zero-retention"

    def args(self) -> list[str]:
        return []

    @classmethod
    def from_args(cls, args: list[str]) -> ZeroRetention:
        if args:
            raise GrammarError("zero-retention takes no arguments")
        return cls()


@dataclass(frozen=True, slots=True)
class MaxInputTokens:
    name: ClassVar[str] = "max-input-tokens"
    tokens: int

    def args(self) -> list[str]:
        return [str(self.tokens)]

    @classmethod
    def from_args(cls, args: list[str]) -> MaxInputTokens:
        return cls(parse_int(_one(args, cls.name), "tokens"))


@dataclass(frozen=True, slots=True)
class MaxOutputTokens:
    name: ClassVar[str] = "max-output-tokens"
    tokens: int

    def args(self) -> list[str]:
        return [str(self.tokens)]

    @classmethod
    def from_args(cls, args: list[str]) -> MaxOutputTokens:
        return cls(parse_int(_one(args, cls.name), "tokens"))


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``amount`` minor units of ``currency`` per period, on its own counter."""

    name: ClassVar[str] = "budget"
    amount: int
    currency: str
    period: str
    tz: str = "UTC"
    nonce: str = field(default_factory=new_nonce)

    def __post_init__(self) -> None:
        if not 0 <= self.amount <= MAX_MINOR_AMOUNT:
            raise ValueError(f"budget amount must be 0..{MAX_MINOR_AMOUNT} minor units")

    def args(self) -> list[str]:
        return [self.nonce, str(self.amount), self.currency, self.period, *_tz_args(self.tz)]

    @classmethod
    def from_args(cls, args: list[str]) -> Budget:
        if not 4 <= len(args) <= 5:
            raise GrammarError("budget takes: nonce amount currency period [time-zone]")
        currency = _currency(args[2])
        if currency not in EXPONENTS:
            raise GrammarError(f"currency {currency} has no known ISO 4217 exponent")
        return cls(
            nonce=_nonce(args[0]),
            amount=_amount(args[1]),
            currency=currency,
            period=_period(args[3]),
            tz=_tz(args[4:]),
        )


@dataclass(frozen=True, slots=True)
class TokenQuota:
    """At most ``tokens`` model tokens (input + output) per period, on its own counter."""

    name: ClassVar[str] = "token-quota"
    tokens: int
    period: str
    tz: str = "UTC"
    nonce: str = field(default_factory=new_nonce)

    def args(self) -> list[str]:
        return [self.nonce, str(self.tokens), self.period, *_tz_args(self.tz)]

    @classmethod
    def from_args(cls, args: list[str]) -> TokenQuota:
        if not 3 <= len(args) <= 4:
            raise GrammarError("token-quota takes: nonce tokens period [time-zone]")
        return cls(
            nonce=_nonce(args[0]),
            tokens=parse_int(args[1], "tokens"),
            period=_period(args[2]),
            tz=_tz(args[3:]),
        )


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``requests`` model calls per UTC minute, on its own counter."""

    name: ClassVar[str] = "rate"
    requests: int
    nonce: str = field(default_factory=new_nonce)

    def args(self) -> list[str]:
        return [self.nonce, str(self.requests)]

    @classmethod
    def from_args(cls, args: list[str]) -> Rate:
        if len(args) != 2:
            raise GrammarError("rate takes: nonce requests-per-minute")
        return cls(nonce=_nonce(args[0]), requests=parse_int(args[1], "requests"))


@dataclass(frozen=True, slots=True)
class ConfirmAbove:
    """A call whose estimated cost exceeds ``amount`` needs a fresh human approval."""

    name: ClassVar[str] = "confirm-above"
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not 0 <= self.amount <= MAX_MINOR_AMOUNT:
            raise ValueError(f"confirm-above amount must be 0..{MAX_MINOR_AMOUNT} minor units")

    def args(self) -> list[str]:
        return [str(self.amount), self.currency]

    @classmethod
    def from_args(cls, args: list[str]) -> ConfirmAbove:
        if len(args) != 2:
            raise GrammarError("confirm-above takes: amount currency")
        currency = _currency(args[1])
        if currency not in EXPONENTS:
            raise GrammarError(f"currency {currency} has no known ISO 4217 exponent")
        return cls(_amount(args[0]), currency)


@dataclass(frozen=True, slots=True)
class Logging:
    name: ClassVar[str] = "logging"
    level: str

    def __post_init__(self) -> None:
        if self.level not in LOGGING_LEVELS:
            raise ValueError(f"logging level must be one of {', '.join(LOGGING_LEVELS)}")

    def args(self) -> list[str]:
        return [self.level]

    @classmethod
    def from_args(cls, args: list[str]) -> Logging:
        level = _one(args, cls.name)
        if level not in LOGGING_LEVELS:
            raise GrammarError(f"logging level {level!r} is not one of {LOGGING_LEVELS}")
        return cls(level)


@dataclass(frozen=True, slots=True)
class App:
    """Who the grant was made to (an origin or app id): for display and accounting only."""

    name: ClassVar[str] = "app"
    app_id: str

    def args(self) -> list[str]:
        return [self.app_id]

    @classmethod
    def from_args(cls, args: list[str]) -> App:
        return cls(_one(args, cls.name))


@dataclass(frozen=True, slots=True)
class Origin:
    """The web origin the grant was made to: a browser presenting the token from any other
    origin is refused (origin_mismatch). A request that states no origin (a server-side call,
    which sends no Origin header) is governed by the other caveats. Several combine to their
    intersection, so attenuation can keep the origin but never change or widen it.

    ``Origin("https://notes.example")``: the origin must be in its canonical form (lower case,
    no default port, no path); capwallet.origins.normalise() gives it from a looser spelling.
    """

    name: ClassVar[str] = "origin"
    origin: str

    def __post_init__(self) -> None:
        if not origins.is_canonical(self.origin):
            hint = origins.normalise(self.origin)
            raise ValueError(f"{self.origin!r} is not a canonical web origin"
                             + (f" (write {hint!r})" if hint else " (scheme://host[:port])"))

    def args(self) -> list[str]:
        return [self.origin]

    @classmethod
    def from_args(cls, args: list[str]) -> Origin:
        value = _one(args, cls.name)
        if not origins.is_canonical(value):
            raise GrammarError(f"{value!r} is not a canonical web origin")
        return cls(value)


Caveat = Union[  # noqa: UP007  (a runtime alias usable in isinstance-free annotations)
    NotBefore, Expires, Providers, Models, Operations, Scopes, AskFirst, ZeroRetention,
    MaxInputTokens, MaxOutputTokens, Budget, TokenQuota, Rate, ConfirmAbove, Logging, App,
    Origin,
]

REGISTRY: dict[str, type[Caveat]] = {
    cls.name: cls
    for cls in (
        NotBefore, Expires, Providers, Models, Operations, Scopes, AskFirst, ZeroRetention,
        MaxInputTokens, MaxOutputTokens, Budget, TokenQuota, Rate, ConfirmAbove, Logging, App,
        Origin,
    )
}


def encode(caveat: Caveat) -> bytes:
    """The exact bytes that are signed for this caveat."""
    return grammar.join(caveat.name, caveat.args())


def _known_type(data: bytes) -> tuple[str, type[Caveat]]:
    """The registered type named by the bytes before the first space, else unknown_caveat."""
    name = data.split(b" ", 1)[0].decode("ascii", "replace")
    cls = REGISTRY.get(name)
    if cls is None:
        raise TokenError(Reason.UNKNOWN_CAVEAT, f"unknown caveat type {name[:40]!r}")
    return name, cls


def decode(data: bytes) -> Caveat:
    """Typed caveat from its signed bytes; TokenError(unknown_caveat | invalid_caveat).

    Caveats are immutable values, and tokens from one wallet repeat most caveat bytes
    ("providers anthropic openai"), so decoded caveats are kept in a bounded cache keyed by
    their exact bytes. Failures are not cached.
    """
    return _decode_cached(data)


@lru_cache(maxsize=16384)
def _decode_cached(data: bytes) -> Caveat:
    name, cls = _known_type(data)
    try:
        _, args = grammar.split(data)
        caveat: Caveat = cls.from_args(args)
    except (GrammarError, ValueError) as exc:
        raise TokenError(Reason.INVALID_CAVEAT, f"caveat {name!r} does not decode: {exc}") from exc
    # Every from_args accepts only canonical spellings, so encode(caveat) == data here;
    # tests/test_caveats.py checks that property on generated input instead of paying for a
    # re-encoding on every verification.
    return caveat


def decode_all(caveats: Iterable[bytes]) -> list[Caveat]:
    """Decode a token's caveats in order.

    Every caveat's type is checked before any caveat's arguments, so a token holding both an
    unknown and an invalid caveat is denied as unknown_caveat wherever they stand: the first
    failing check in reason-code order decides (spec/verification.md).
    """
    raws = list(caveats)
    try:
        return [decode(data) for data in raws]
    except TokenError:
        # Only on failure: an unknown type anywhere outranks an invalid caveat before it.
        for data in raws:
            _known_type(data)
        raise
