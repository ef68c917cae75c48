"""reference_relay.app builds a Call from positions (a call with 23 keywords costs some
1.3 us more per relayed call): an import-time check keeps the positions and Call's fields
in step."""

from __future__ import annotations

import dataclasses

import pytest

from reference_relay.app import _CALL_FIELDS, check_positions
from reference_relay.calls import Call


def test_a_call_is_built_from_positions_only_while_its_fields_are_in_that_order() -> None:
    """Relay.handle passes Call's fields by position (reference_relay.app._CALL_FIELDS);
    the import-time check refuses a Call whose fields moved or grew a required one."""
    check_positions(Call, _CALL_FIELDS)  # the real one matches

    @dataclasses.dataclass
    class Swapped:
        a: int
        c: int
        b: int

    @dataclasses.dataclass
    class Longer:
        a: int
        b: int
        c: int
        d: int
        e: int = 0

    @dataclasses.dataclass
    class Defaulted:
        a: int
        b: int
        c: int
        d: int = 0
        e: list[int] = dataclasses.field(default_factory=list)

    check_positions(Defaulted, ("a", "b", "c"))
    for cls in (Swapped, Longer):
        with pytest.raises(ImportError):
            check_positions(cls, ("a", "b", "c"))
