"""Permission requests (authorization_details) and the user's narrowing of them."""

from __future__ import annotations

import json

import pytest

from capwallet import caveats as cav
from capwallet.wallet.permissions import Permission, PermissionRequestError

REQUEST = {
    "type": "capwallet_ai", "providers": ["openai", "anthropic"],
    "models": ["gpt-4o-mini", "claude-haiku-4-5"],
    "budget": {"amount": "10.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 50000, "max_output_tokens": 2000,
    "scopes": ["posts:read", "posts:publish"], "ask_first": ["posts:publish"],
    "expires_in": 30 * 86400, "confirm_above": {"amount": "0.50", "currency": "USD"},
    "logging": "metadata",
}


def perm(**changes: object) -> Permission:
    return Permission.from_details(json.dumps([{**REQUEST, **changes}]))


def test_parse_round_trip() -> None:
    p = perm()
    assert p.budget.minor == 1000 and p.budget.currency == "USD"
    assert p.confirm_above is not None and p.confirm_above.minor == 50
    assert Permission.from_details(p.details()) == p


@pytest.mark.parametrize("changes, message", [
    ({"budget": {"amount": 10.0, "currency": "USD", "period": "month"}}, "integers"),
    ({"budget": None}, "budget is required"),
    ({"models": []}, "at least one"),
    ({"type": "other"}, "type"),
    ({"surprise": True}, "unknown field"),
    ({"ask_first": ["admin"]}, "ask_first"),
    ({"logging": "everything"}, "logging"),
    ({"expires_in": 10 * 366 * 86400}, "expires_in"),
    ({"providers": ["open ai"]}, "not a valid name"),
    ({"confirm_above": {"amount": "1", "currency": "EUR"}}, "currency"),
])
def test_bad_requests_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(PermissionRequestError, match=message):
        perm(**changes)


def test_narrowing_lowers_and_drops() -> None:
    p = perm()
    got = p.narrow({
        "provider": ["openai"], "model": ["gpt-4o-mini"], "scope": ["posts:read"],
        "budget": ["2.50"], "max_input_tokens": ["1000"], "expires_in": ["86400"],
        "confirm_above": ["0.10"], "logging": ["none"],
    })
    assert got.providers == ("openai",) and got.models == ("gpt-4o-mini",)
    assert got.scopes == ("posts:read",) and got.ask_first == ()
    assert got.budget.minor == 250 and got.max_input_tokens == 1000
    assert got.expires_in == 86400 and got.logging == "none"
    assert got.confirm_above is not None and got.confirm_above.minor == 10
    caveats = got.caveats("Blog", 1_790_000_000)
    assert cav.Expires(1_790_000_000 + 86400) in caveats
    assert cav.Models(("gpt-4o-mini",)) in caveats
    assert any(isinstance(c, cav.Budget) and c.amount == 250 for c in caveats)


@pytest.mark.parametrize("field, value", [
    ("budget", "10.01"), ("max_input_tokens", "50001"), ("max_output_tokens", "99999"),
    ("expires_in", str(31 * 86400)), ("confirm_above", "0.51"), ("logging", "full"),
    ("model", "gpt-5"), ("provider", "deepseek"), ("scope", "posts:delete"),
])
def test_narrowing_never_raises_a_limit(field: str, value: str) -> None:
    form = {"provider": ["openai"], "model": ["gpt-4o-mini"], field: [value]}
    if field in ("model", "provider"):
        form[field] = [value]
    with pytest.raises(PermissionRequestError):
        perm().narrow(form)


def test_ask_first_cannot_be_removed_but_can_be_added() -> None:
    got = perm().narrow({"provider": ["openai"], "model": ["gpt-4o-mini"],
                         "scope": ["posts:read", "posts:publish"], "ask_first": ["posts:read"]})
    assert got.ask_first == ("posts:read", "posts:publish")
