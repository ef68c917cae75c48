"""Requests and expectations as they appear in the vector JSON (spec/test-vectors.md).

Money: a request's cost and every budget counter value are microunits in the JSON; they
are written here in minor units and scaled by mu() at the JSON boundary, unless marked
Micros."""

from __future__ import annotations

import hashlib
from typing import Any

from .seeds import MICROS, T


class Micros(int):
    """A money amount written directly in microunits: mu() leaves it as it is."""


class BudgetKey(str):
    """The counter key of a budget: its counter state is money, scaled by mu()."""


def mu(n: int) -> int:
    """A money amount in microunits: n minor units, unless n is already Micros."""
    return int(n) if isinstance(n, Micros) else n * MICROS


def scale_counters(counters: dict[str, int]) -> dict[str, int]:
    """Counter states as the verifier sees them: budget counters in microunits."""
    return {str(k): mu(v) if isinstance(k, BudgetKey) else v for k, v in counters.items()}


def ckey(token_id: bytes, caveat: str, period_key: str) -> str:
    """A counter key, computed here independently: SHA-256(token id || caveat)[:16] hex."""
    key = hashlib.sha256(token_id + caveat.encode()).hexdigest()[:32] + "/" + period_key
    return BudgetKey(key) if caveat.startswith("budget ") else key


def counter_id(token_id: bytes, caveat: str) -> str:
    return hashlib.sha256(token_id + caveat.encode()).hexdigest()[:32]


def call(
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    operation: str = "chat",
    *,
    scopes: tuple[str, ...] = (),
    input_tokens: int = 1000,
    output_tokens: int = 500,
    cost: dict[str, int] | None = None,
    zero_retention: bool = False,
    approval: str | None = None,
    digest: bytes | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """A model call. ``cost`` is in minor units (or Micros), scaled to microunits. Default
    cost: 12 EUR minor units (0.12 EUR), 12000000 microunits."""
    out: dict[str, Any] = {
        "kind": "model_call", "provider": provider, "model": model, "operation": operation,
        "scopes": list(scopes), "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cost": {c: mu(n) for c, n in ({"EUR": 12} if cost is None else cost).items()},
        "zero_retention": zero_retention,
        "approval": approval, "digest": None if digest is None else digest.hex(),
    }
    if origin is not None:  # present only when stated: a browser's Origin header
        out["origin"] = origin
    return out


def access(
    *scopes: str, approval: str | None = None, digest: bytes | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """A resource access: only scopes (and an approval, for ask-first scopes)."""
    return {
        "kind": "resource_access", "provider": None, "model": None, "operation": None,
        "scopes": list(scopes), "input_tokens": 0, "output_tokens": 0, "cost": {},
        "zero_retention": False, "approval": approval,
        "digest": None if digest is None else digest.hex(),
        **({} if origin is None else {"origin": origin}),
    }


def ctx(
    request: dict[str, Any] | None = None,
    now: int = T,
    counters: dict[str, int] | None = None,
    revoked: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {"now": now, "request": call() if request is None else request,
            "counters": scale_counters(counters or {}), "revoked": list(revoked)}


COUNTER_REASONS = ("rate_limited", "quota_exceeded", "budget_exceeded")


def deny(reason: str, counter: dict[str, Any] | None = None) -> dict[str, Any]:
    """A denial; a counter denial names its counter (hit(...)), and no other denial does."""
    assert (counter is not None) == (reason in COUNTER_REASONS), reason
    out: dict[str, Any] = {"result": "deny", "reason": reason}
    if counter is not None:
        out["counter"] = counter
    return out


def allow(
    *debits: dict[str, Any], approval_id: str | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"result": "allow", "debits": list(debits), "approval_id": approval_id}
    if limits is not None:
        out["limits"] = limits
    return out


def debit(
    kind: str, token_id: bytes, caveat: str, period_key: str, *, amount: int, limit: int,
    used: int = 0, unit: str, resets_at: int | None,
) -> dict[str, Any]:
    """A debit; a budget's amount, limit and used are written in minor units (or Micros)."""
    if kind == "budget":
        amount, limit, used = mu(amount), mu(limit), mu(used)
    return {"kind": kind, "counter_key": ckey(token_id, caveat, period_key), "amount": amount,
            "limit": limit, "used": used, "unit": unit, "resets_at": resets_at}


def hit(
    kind: str, token_id: bytes, caveat: str, period_key: str, *, limit: int, used: int,
    needed: int, unit: str, resets_at: int | None,
) -> dict[str, Any]:
    """The counter a counter denial names (spec/verification.md#decision): the first one, in
    check order, the call does not fit. Like debit(), a budget's limit, used and needed are
    written in minor units (or Micros); ``needed`` is what the call would add to it."""
    if kind == "budget":
        limit, used, needed = mu(limit), mu(used), mu(needed)
    return {"kind": kind, "counter_id": counter_id(token_id, caveat),
            "counter_key": ckey(token_id, caveat, period_key), "unit": unit, "limit": limit,
            "used": used, "needed": needed, "resets_at": resets_at}


def limits(**over: Any) -> dict[str, Any]:
    """Effective limits of a token with no caveats, overridden by hand per vector."""
    base: dict[str, Any] = {
        "not_before": None, "expires": None, "providers": None, "models": None,
        "operations": None, "scopes": None, "ask_first": [], "zero_retention": False,
        "max_input_tokens": None, "max_output_tokens": None, "counters": [],
        "confirm_above": {}, "logging": None, "apps": [], "origins": None,
    }
    unknown = set(over) - set(base)
    assert not unknown, unknown
    base.update(over)
    return base


def counter(kind: str, token_id: bytes, caveat: str, limit: int, unit: str, period: str,
            tz: str = "UTC") -> dict[str, Any]:
    return {"kind": kind, "counter_id": counter_id(token_id, caveat), "limit": limit,
            "unit": unit, "period": period, "tz": tz}
