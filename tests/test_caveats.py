"""Caveat grammar: one spelling per value; unknown types and junk fail closed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capwallet import caveats as cav
from capwallet.reasons import Reason, TokenError

MODEL_IDS = ["gpt-4o", "claude-sonnet-4-5", "llama3.1:8b", "meta-llama/Llama-3.1-8B",
             "model@2024", "a b", "名前", "x,y", "50%"]


@pytest.mark.parametrize("model", MODEL_IDS)
def test_model_ids_round_trip(model: str) -> None:
    c = cav.Models((model,))
    data = cav.encode(c)
    data.decode("ascii")  # always ASCII on the wire
    assert cav.decode(data) == c


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"time < 2025", Reason.UNKNOWN_CAVEAT),
        (b"frobnicate 1", Reason.UNKNOWN_CAVEAT),
        (b"expires 01", Reason.INVALID_CAVEAT),
        (b"expires -1", Reason.INVALID_CAVEAT),
        (b"expires 9007199254740992", Reason.INVALID_CAVEAT),  # 2^53
        (b"expires", Reason.INVALID_CAVEAT),
        (b"expires 1 2", Reason.INVALID_CAVEAT),
        (b"models b a", Reason.INVALID_CAVEAT),  # not sorted
        (b"models a a", Reason.INVALID_CAVEAT),  # duplicate
        (b"models", Reason.INVALID_CAVEAT),
        (b"models %61", Reason.INVALID_CAVEAT),  # percent-encodes a safe character
        (b"models a%2c", Reason.INVALID_CAVEAT),  # lowercase hex
        (b"models a  b", Reason.INVALID_CAVEAT),  # double space
        (b"models a ", Reason.INVALID_CAVEAT),
        (b"models \xc3\xa9", Reason.INVALID_CAVEAT),  # raw non-ASCII
        (b"models %FF", Reason.INVALID_CAVEAT),  # not UTF-8
        (b"budget 0011223344556677 100 EUR fortnight", Reason.INVALID_CAVEAT),
        (b"budget 0011223344556677 100 eur month", Reason.INVALID_CAVEAT),
        (b"budget 0011223344556677 100 XXX month", Reason.INVALID_CAVEAT),
        (b"budget 0011223344556677 100 EUR month UTC", Reason.INVALID_CAVEAT),
        (b"budget 0011223344556677 100 EUR month Mars/Olympus", Reason.INVALID_CAVEAT),
        (b"budget 00112233445566 100 EUR month", Reason.INVALID_CAVEAT),
        (b"logging verbose", Reason.INVALID_CAVEAT),
        (b"zero-retention yes", Reason.INVALID_CAVEAT),
    ],
)
def test_bad_caveats_fail_closed(data: bytes, reason: Reason) -> None:
    with pytest.raises(TokenError) as info:
        cav.decode(data)
    assert info.value.reason is reason


def test_scopes_may_be_empty_but_models_may_not() -> None:
    assert cav.decode(b"scopes") == cav.Scopes(())
    with pytest.raises(ValueError):
        cav.Models(())


names = st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s)


@given(st.lists(names, min_size=1, max_size=8))
def test_any_name_list_round_trips(values: list[str]) -> None:
    c = cav.Models(tuple(values))
    assert cav.decode(cav.encode(c)) == c
    assert set(c.values) == set(values)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        cav.decode(data)
    except TokenError as exc:
        assert exc.reason in (Reason.UNKNOWN_CAVEAT, Reason.INVALID_CAVEAT)


@pytest.mark.parametrize("invalid", [b"expires 01", b"expires x"])
@pytest.mark.parametrize("unknown", [b"frobnicate 1", b"fly"])
def test_unknown_caveat_wins_over_an_invalid_one_wherever_they_stand(
        invalid: bytes, unknown: bytes) -> None:
    """Reason order decides: unknown_caveat is checked for every caveat before invalid_caveat."""
    for caveats in ([invalid, unknown], [unknown, invalid]):
        with pytest.raises(TokenError) as info:
            cav.decode_all(caveats)
        assert info.value.reason is Reason.UNKNOWN_CAVEAT
    for caveats in ([b"expires 1", invalid], [invalid, b"expires 1"]):
        with pytest.raises(TokenError) as info:
            cav.decode_all(caveats)
        assert info.value.reason is Reason.INVALID_CAVEAT


def test_valid_caveats_decode_in_token_order() -> None:
    assert cav.decode_all([b"expires 1", b"models a b"]) == [cav.Expires(1), cav.Models(("a", "b"))]
    assert cav.decode_all([b"expires 1", b"app a"]) == [cav.Expires(1), cav.App("a")]


@pytest.mark.parametrize("tz", ["localtime", "posixrules", "right/UTC", "posix/Europe/Paris"])
def test_time_zone_must_be_a_tz_database_name(tz: str) -> None:
    """System files that are not IANA names would count different periods on each verifier."""
    data = f"budget 0011223344556677 100 EUR month {tz}".encode()
    with pytest.raises(TokenError) as info:
        cav.decode(data)
    assert info.value.reason is Reason.INVALID_CAVEAT


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_tz_database_names_are_accepted(tz: str) -> None:
    assert cav.decode(f"token-quota 0011223344556677 5 day {tz}".encode()) == cav.TokenQuota(
        5, "day", tz, nonce="0011223344556677")


@given(st.one_of(
    st.binary(max_size=60),
    st.builds(lambda n, a: n + b" " + a,
              st.sampled_from([k.encode() for k in cav.REGISTRY]),
              st.text("0123456789abcdefEURUSDmonthdaytotal%2C0AFf :/-", max_size=40)
              .map(str.encode)),
))
def test_accepted_caveats_are_canonical(data: bytes) -> None:
    """decode() skips re-encoding for speed; this is the property that makes that safe."""
    try:
        c = cav.decode(data)
    except TokenError:
        return
    assert cav.encode(c) == data
