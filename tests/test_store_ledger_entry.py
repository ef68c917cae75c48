"""LedgerEntry's hand-built __init__ (capwallet.store.base._slot_init) behaves as the one
dataclasses generates: same signature and defaults, still frozen, replace() and equality work."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from capwallet.store.base import LedgerEntry, _positional_builder, _slot_init, ledger_entry

ARGS = (1_800_000_000, "t1", "app", "fake", "m", "chat", 3, 4, 5, "USD", "ok", 6)


def test_signature_and_defaults_match_the_fields() -> None:
    params = inspect.signature(LedgerEntry).parameters
    fields = dataclasses.fields(LedgerEntry)
    assert list(params) == [f.name for f in fields]
    for f in fields:
        want = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert params[f.name].default == want, f.name
    e = LedgerEntry(*ARGS)
    assert (e.reservation_id, e.request_body, e.response_body, e.count, e.chain_id) == (
        None, None, None, 1, "")
    assert [getattr(e, f.name) for f in fields][:12] == list(ARGS)


def test_still_frozen_hashable_and_replaceable() -> None:
    e = LedgerEntry(*ARGS, chain_id="c" * 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.cost = 1  # type: ignore[misc]  # frozen: must fail
    assert e == LedgerEntry(*ARGS, chain_id="c" * 16) and hash(e) == hash(
        LedgerEntry(*ARGS, chain_id="c" * 16))
    r = dataclasses.replace(e, cost=9)
    assert (r.cost, r.chain_id, r.time) == (9, "c" * 16, ARGS[0]) and e.cost == 5
    with pytest.raises(TypeError):
        LedgerEntry(*ARGS[:11])  # type: ignore[call-arg]  # a field short, on purpose
    with pytest.raises(TypeError):
        LedgerEntry(*ARGS, colour="red")  # type: ignore[call-arg]  # no such field, on purpose


def test_refuses_a_default_factory() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        xs: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError):
        _slot_init(WithFactory)


def test_the_positional_builder_makes_what_init_makes() -> None:
    # ledger_entry (the relay's per-call build) gives a LedgerEntry like any other: every
    # field in its place, equal and hashed alike, still frozen, replaceable.
    values = (*ARGS, "rid", "req", "resp", 2, "c" * 16)
    e = ledger_entry(*values)
    want = LedgerEntry(*values)
    assert type(e) is LedgerEntry and e == want and hash(e) == hash(want)
    assert [getattr(e, f.name) for f in dataclasses.fields(LedgerEntry)] == list(values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.cost = 1  # type: ignore[misc]  # frozen: must fail
    assert dataclasses.replace(e, cost=9) == LedgerEntry(*values[:8], 9, *values[9:])
    with pytest.raises(TypeError):
        ledger_entry(*ARGS)  # every field, by position


def test_the_positional_builder_refuses_a_class_whose_slots_are_not_its_fields() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError):
        _positional_builder(NoSlots)
