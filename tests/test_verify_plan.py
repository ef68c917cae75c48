"""The verifier's per-token plan never changes a decision.

A VerifiedToken decides once, when its chain is verified, whether any caveat limits the shape
of a request (``shaped``); evaluate skips those checks for a token that has none. It also
folds its time caveats into one interval of clock readings at which all pass
(``live_from``/``live_until``); evaluate runs the time checks only outside it. These tests
run every request of the conformance vectors and the property tests' generated tokens and
requests through evaluate twice, with the token's own plan and with the plan forced to check
everything, and require the same Decision, field by field. They also pin the plan itself, so
that a plan that checks too much (correct, only slower) fails here as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import KEY, KEYS, T0, caveat, requests, small

from capwallet import caveats as cav
from capwallet.keys import Keyring
from capwallet.reasons import Reason, TokenError
from capwallet.token import mint
from capwallet.verify import Debit, Decision, Request, VerifiedToken, Verifier, evaluate
from test_vectors import ALL, _keyring, _request


def _full(v: VerifiedToken) -> VerifiedToken:
    """The same verified token with a plan that checks everything: every shape check, and
    every time check (an empty live interval)."""
    full = VerifiedToken(v.token_id, v.issued_at, v.limits, v.key_id, v.chain_id, v.caveats)
    full.shaped = True
    full.live_from, full.live_until = 2**63, -(2**63)
    return full


def _same(v: VerifiedToken, request: Request, now: int, counters: dict[str, int],
          keys: Keyring) -> Decision:
    planned = evaluate(v, request, now, counters, keys)
    full = evaluate(_full(v), request, now, counters, keys)
    assert planned == full, (planned.to_json(), full.to_json())
    assert planned.to_json() == full.to_json()
    return planned


def _contexts(v: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, dict[str, int]]]:
    """(token, request, now, counters) of every verification a vector makes."""
    if "steps" in v:
        return [(s.get("token", v["token"]), s["request"], s["now"], dict(v["counters"]))
                for s in v["steps"]]
    c = v["context"]
    return [(v["token"], c["request"], c["now"], dict(c["counters"]))]


_VERIFYING = [v for v in ALL if "context" in v or "steps" in v]


def _checked(v: dict[str, Any]) -> Iterator[tuple[VerifiedToken, Request, int, dict[str, int]]]:
    """(checked token, request, now, counters) of each verification of a vector whose token
    verifies: a token that does not never reaches evaluate."""
    verifier = Verifier(_keyring(v))
    for token, request, now, counters in _contexts(v):
        try:
            checked = verifier.check_token(token)
        except TokenError:
            continue
        yield checked, _request(request), now, counters


@pytest.mark.parametrize("v", _VERIFYING, ids=[v["id"] for v in _VERIFYING])
def test_vectors_decide_the_same_with_and_without_the_plan(v: dict[str, Any]) -> None:
    keys = _keyring(v)
    for checked, request, now, counters in _checked(v):
        _same(checked, request, now, counters, keys)


def test_the_vectors_exercise_both_plans() -> None:
    """Both kinds of token occur in the vectors, so the comparison above means something."""
    seen = {checked.shaped for v in _VERIFYING for checked, *_ in _checked(v)}
    assert seen == {False, True}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(caveat, max_size=6), requests, st.integers(T0 - 700, T0 + 700), st.data())
def test_generated_tokens_decide_the_same_with_and_without_the_plan(
        caveats: list[cav.Caveat], request: Request, now: int, data: st.DataObject) -> None:
    token = mint(KEY, caveats, now=T0 - 1000).serialize()
    v = Verifier(KEYS).check_token(token)
    probe = evaluate(_full(v), request, now, {}, KEYS)
    counters = {d.counter_key: data.draw(small) for d in probe.debits}
    _same(v, request, now, counters, KEYS)


# The caveats that limit a request's shape, one at a time, and those that do not.
SHAPING: list[cav.Caveat] = [
    cav.Origin("https://a.example"), cav.Providers(("openai",)), cav.Models(("m1",)),
    cav.Operations(("chat",)), cav.Scopes(("posts:read",)), cav.ZeroRetention(),
    cav.MaxInputTokens(10), cav.MaxOutputTokens(10),
]
NOT_SHAPING: list[cav.Caveat] = [
    cav.NotBefore(T0 - 10), cav.Expires(T0 + 10), cav.AskFirst(("posts:read",)),
    cav.Budget(5, "EUR", "day"), cav.TokenQuota(5, "total"), cav.Rate(2),
    cav.ConfirmAbove(5, "EUR"), cav.Logging("none"), cav.App("cli"),
]


def _verified(caveats: list[cav.Caveat]) -> VerifiedToken:
    return Verifier(KEYS).check_token(mint(KEY, caveats, now=T0).serialize())


def test_every_caveat_type_is_classed() -> None:
    """A new caveat type must be placed in one list or the other (and in the plan)."""
    assert {type(c) for c in SHAPING + NOT_SHAPING} == set(cav.REGISTRY.values())


@pytest.mark.parametrize("c", SHAPING, ids=lambda c: type(c).__name__)
def test_a_shaping_caveat_makes_the_token_check_the_shape(c: cav.Caveat) -> None:
    assert _verified([c]).shaped is True
    assert _verified([*NOT_SHAPING, c]).shaped is True


def test_a_token_without_shaping_caveats_skips_the_shape_checks() -> None:
    assert _verified([]).shaped is False
    assert _verified(NOT_SHAPING).shaped is False


@pytest.mark.parametrize("caveats", [[], [cav.Models(("m1",))]], ids=["plain", "shaped"])
def test_a_model_call_without_model_or_operation_is_a_programming_error(
        caveats: list[cav.Caveat]) -> None:
    v = _verified(caveats)
    for request in (Request(provider="openai", operation="chat"),
                    Request(provider="openai", model="m1")):
        with pytest.raises(ValueError, match="must state provider, model and operation"):
            evaluate(v, request, T0, {}, KEYS)


@pytest.mark.parametrize("v", _VERIFYING, ids=[v["id"] for v in _VERIFYING])
def test_an_allowed_decision_has_every_field(v: dict[str, Any]) -> None:
    """evaluate builds its Debits and an allowed Decision from all their fields at once
    (tuple.__new__): each is the NamedTuple its constructor would give."""
    keys = _keyring(v)
    for checked, request, now, counters in _checked(v):
        d = evaluate(checked, request, now, counters, keys)
        for debit in d.debits:
            assert len(debit) == len(Debit._fields) and debit == Debit(*debit)
        if d.allowed:
            assert len(d) == len(Decision._fields)
            assert d == Decision(True, None, "allowed", checked.token_id_hex, checked.limits,
                                 d.debits, d.approval_id)
            assert d.needs_approval is False and d.counter is None


@pytest.mark.parametrize(("caveats", "issued"), [
    ((), T0), ((cav.Expires(T0 + 500),), T0), ((cav.NotBefore(T0 + 100),), T0),
    ((cav.NotBefore(T0 - 100), cav.Expires(T0 + 500)), T0),
    ((cav.NotBefore(T0 + 100), cav.Expires(T0 + 50)), T0),  # never live
    ((cav.Expires(T0 - 500),), T0)])
def test_the_live_interval_is_where_every_time_check_passes(caveats: tuple[Any, ...],
                                                             issued: int) -> None:
    """Every second around each time caveat's edge: the token is inside its live interval
    exactly when evaluate, with every check run, passes its time checks."""
    v = Verifier(KEYS).check_token(mint(KEY, list(caveats), now=issued).serialize())
    edges = {issued, *(getattr(c, "time", issued) for c in caveats)}
    for now in sorted({e + d for e in edges for d in range(-62, 63)}):
        if now < 0:
            continue
        d = _same(v, Request(), now, {}, KEYS)
        timely = d.reason not in (Reason.NOT_YET_VALID, Reason.EXPIRED)
        assert (v.live_from <= now < v.live_until) == timely, (now, d.reason)
