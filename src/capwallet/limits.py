"""Effective authority: the intersection of every caveat in a token (spec/caveats.md).

A request is allowed only if every caveat allows it. For each caveat type that is the same as
checking one combined limit: the latest not-before, the earliest expiry, the intersection of
every name set (origins included), the smallest cap, the union of ask-first scopes, the most
restrictive logging level. Budgets, quotas and rates do not combine: each one is its own
counter and every one is debited, so a child token can never outspend its parent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from capwallet import caveats as cav
from capwallet.money import MICROS_PER_MINOR, format_minor


def counter_id(token_id: bytes, caveat_bytes: bytes) -> str:
    """First 16 bytes (hex) of SHA-256(token id || the caveat's signed bytes)."""
    return hashlib.sha256(token_id + caveat_bytes).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CounterLimit:
    """One budget, quota or rate caveat, with the id of the counter it debits."""

    kind: str  # "budget" | "quota" | "rate"
    counter_id: str
    limit: int
    unit: str  # currency for budgets, "tokens" for quotas, "requests" for rates
    period: str  # day | week | month | year | total | minute
    tz: str = "UTC"
    # The limit in the counter's own unit: microunits for a budget (money.MICROS_PER_MINOR
    # per minor unit of the caveat), tokens for a quota, requests for a rate. Worked out once
    # here rather than by a property on every verification.
    counted_limit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counted = self.limit * MICROS_PER_MINOR if self.kind == "budget" else self.limit
        object.__setattr__(self, "counted_limit", counted)

    def describe(self) -> str:
        amount = format_minor(self.limit, self.unit) if self.kind == "budget" else (
            f"{self.limit} {self.unit}"
        )
        per = {"total": "in total", "minute": "per minute"}.get(self.period, f"per {self.period}")
        tz = "" if self.tz == "UTC" else f" ({self.tz})"
        return f"{self.kind} {amount} {per}{tz}"


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    not_before: int | None = None
    expires: int | None = None
    providers: frozenset[str] | None = None
    models: frozenset[str] | None = None
    operations: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    ask_first: frozenset[str] = frozenset()
    zero_retention: bool = False
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    counters: tuple[CounterLimit, ...] = ()
    confirm_above: dict[str, int] = field(default_factory=dict)
    logging: str | None = None
    apps: tuple[str, ...] = ()
    origins: frozenset[str] | None = None  # None: no origin caveat; may be empty (conflicting)
    # Currencies a model call must be priced in (budgets, then confirm-above): worked out once
    # here, a plain attribute rather than a property (read twice on every relayed call).
    priced_currencies: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _checked: tuple[CounterLimit, ...] = field(default=(), repr=False, compare=False)

    @property
    def budgets(self) -> tuple[CounterLimit, ...]:
        return tuple(c for c in self.counters if c.kind == "budget")

    @property
    def counters_in_check_order(self) -> tuple[CounterLimit, ...]:
        """The counters as verification checks them: rates, then quotas, then budgets (the
        order of the reason codes), in token order within a kind. ``counters`` itself stays
        in token order, as the limits are reported (spec/caveats.md)."""
        return self._checked

    def __post_init__(self) -> None:
        seen = [c.unit for c in self.counters if c.kind == "budget"] + list(self.confirm_above)
        object.__setattr__(self, "priced_currencies", tuple(dict.fromkeys(seen)))
        checked = sorted(self.counters, key=lambda c: _RANK[c.kind])
        object.__setattr__(self, "_checked", tuple(checked))

    def to_json(self) -> dict[str, Any]:
        def names(v: frozenset[str] | None) -> list[str] | None:
            return None if v is None else sorted(v, key=lambda s: s.encode())

        return {
            "not_before": self.not_before,
            "expires": self.expires,
            "providers": names(self.providers),
            "models": names(self.models),
            "operations": names(self.operations),
            "scopes": names(self.scopes),
            "ask_first": names(self.ask_first),
            "zero_retention": self.zero_retention,
            "max_input_tokens": self.max_input_tokens,
            "max_output_tokens": self.max_output_tokens,
            "counters": [
                {"kind": c.kind, "counter_id": c.counter_id, "limit": c.limit, "unit": c.unit,
                 "period": c.period, "tz": c.tz}
                for c in self.counters
            ],
            "confirm_above": dict(sorted(self.confirm_above.items())),
            "logging": self.logging,
            "apps": list(self.apps),
            "origins": names(self.origins),
        }


def _meet(current: frozenset[str] | None, values: tuple[str, ...]) -> frozenset[str]:
    new = frozenset(values)
    return new if current is None else current & new


def _min(current: int | None, value: int) -> int:
    return value if current is None else min(current, value)


def effective(token_id: bytes, caveats: list[tuple[bytes, cav.Caveat]]) -> EffectiveLimits:
    """Combine decoded caveats (with their signed bytes) into one EffectiveLimits."""
    f: dict[str, Any] = {}
    counters: list[CounterLimit] = []
    confirm: dict[str, int] = {}
    ask_first: frozenset[str] = frozenset()
    apps: list[str] = []
    for raw, c in caveats:
        kind = type(c)
        if kind is cav.NotBefore or kind is cav.Expires:
            t = c.time  # type: ignore[union-attr]
            if kind is cav.NotBefore:
                f["not_before"] = max(f.get("not_before", t), t)
            else:
                f["expires"] = _min(f.get("expires"), t)
        elif kind in _NAME_SETS:
            key = _NAME_SETS[kind]
            f[key] = _meet(f.get(key), c.values)  # type: ignore[union-attr]
        elif kind is cav.AskFirst:
            ask_first |= frozenset(c.values)  # type: ignore[union-attr]
        elif kind is cav.ZeroRetention:
            f["zero_retention"] = True
        elif kind is cav.MaxInputTokens:
            f["max_input_tokens"] = _min(f.get("max_input_tokens"), c.tokens)  # type: ignore[union-attr]
        elif kind is cav.MaxOutputTokens:
            f["max_output_tokens"] = _min(f.get("max_output_tokens"), c.tokens)  # type: ignore[union-attr]
        elif isinstance(c, cav.Budget):
            counters.append(CounterLimit(
                "budget", counter_id(token_id, raw), c.amount, c.currency, c.period, c.tz))
        elif isinstance(c, cav.TokenQuota):
            counters.append(CounterLimit(
                "quota", counter_id(token_id, raw), c.tokens, "tokens", c.period, c.tz))
        elif isinstance(c, cav.Rate):
            counters.append(CounterLimit(
                "rate", counter_id(token_id, raw), c.requests, "requests", "minute"))
        elif isinstance(c, cav.ConfirmAbove):
            confirm[c.currency] = min(confirm.get(c.currency, c.amount), c.amount)
        elif isinstance(c, cav.Logging):
            old = f.get("logging")
            rank = cav.LOGGING_LEVELS.index
            f["logging"] = c.level if old is None else min(old, c.level, key=rank)
        elif isinstance(c, cav.App):
            apps.append(c.app_id)
        elif isinstance(c, cav.Origin):
            f["origins"] = _meet(f.get("origins"), (c.origin,))
        else:  # pragma: no cover - every registered type is handled above
            raise TypeError(f"unhandled caveat type {kind.__name__}")
    # Two caveats with identical bytes name the same counter: debit it once, not twice.
    unique = {c.counter_id: c for c in counters}.values()
    return EffectiveLimits(
        **f, counters=tuple(unique), confirm_above=confirm, ask_first=ask_first, apps=tuple(apps)
    )


_NAME_SETS: dict[type, str] = {
    cav.Providers: "providers", cav.Models: "models", cav.Operations: "operations",
    cav.Scopes: "scopes",
}
_RANK = {"rate": 0, "quota": 1, "budget": 2}
