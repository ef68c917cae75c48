"""A store write that fails with an error that is not the store's own (StoreUnavailable) is
logged with its traceback: a programming error in a store write must be findable
(reference_relay.calls, Call._failed). Before, the log line gave the error's type only.

The failure is real, inside the SQLite store's own settlement transaction: the store is the
real one, handed a charge that ``int()`` refuses (a subclass of int whose ``__int__`` raises,
as a bug upstream of the store could hand it). A plain call's settlement is queued
(Store.settle_soon: the outcome's set_exception logs it), a stream's is awaited
(Store.settle: Call._close logs it). Either way the app got its answer, the reservation holds
the worst case for the lease, and the line names the token id, never the token.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from relay_harness import FAKE_KEY, HELLO_OPENAI, LogCapture, Relay, start_relay, token_id

from capwallet import caveats as cav
from capwallet.store import LedgerEntry, Outcome
from capwallet.store.sqlite import SQLiteStore
from fake_provider import running_fake_provider


class _Poisoned(int):
    """A charge that int() refuses."""

    def __int__(self) -> int:
        raise TypeError("a charge the store cannot read")


def _poison(actual: Mapping[str, int]) -> dict[str, int]:
    return {k: _Poisoned(v) for k, v in actual.items()}


class PoisonedSettlements(SQLiteStore):
    """The real SQLite store, whose settlements are handed charges it cannot read."""

    async def settle(self, reservation_id: str, actual: Mapping[str, int],
                     entry: LedgerEntry) -> bool:
        return await super().settle(reservation_id, _poison(actual), entry)

    def settle_soon(self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry,
                    outcome: Outcome) -> None:
        super().settle_soon(reservation_id, _poison(actual), entry, outcome)


def _failure_lines(logs: LogCapture, before: int, wanted: Callable[[str], bool],
                   missing: str) -> list[str]:
    """The log lines since ``before`` that ``wanted`` picks, waiting up to 5 s for the first
    (a queued settlement fails after the answer is out)."""
    deadline = time.monotonic() + 5
    while not (lines := [line for line in logs.lines[before:] if wanted(line)]):
        assert time.monotonic() < deadline, missing
        time.sleep(0.01)
    return lines


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    tmp = tmp_path_factory.mktemp("poisoned")
    with running_fake_provider(FAKE_KEY) as fake:
        r = start_relay(fake, tmp, store=PoisonedSettlements(Path(tmp) / "relay.db"))
        try:
            yield r
        finally:
            r.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain-queued", "stream-awaited"])
def test_a_store_write_that_fails_with_a_programming_error_is_logged_with_its_traceback(
        poisoned: Relay, captured_logs: LogCapture, stream: bool) -> None:
    tok = poisoned.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    sent = poisoned.post("/v1/chat/completions", {
        "model": "relay-test", "max_tokens": 8, "messages": HELLO_OPENAI, "stream": stream}, tok)
    assert sent.status_code == 200, sent.text
    [line] = _failure_lines(captured_logs, before, lambda line: "settle failed" in line,
                            "no log line for the failed settlement")
    assert f"token={token_id(tok)} " in line and tok not in line
    assert ": TypeError" in line
    assert "Traceback (most recent call last)" in line  # seen failing before: the type only
    assert "_settle_txn" in line and "a charge the store cannot read" in line
    assert poisoned.ledger(tok) == []  # the reservation stays open for the lease to close
    [used] = poisoned.counters(tok).values()
    assert used > 0



@pytest.fixture(scope="module")
def no_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay whose real SQLite store has lost its ledger table: a reservation goes through
    (it writes no ledger row), and every settlement or release then fails in its batch."""
    tmp = tmp_path_factory.mktemp("no-ledger")
    with running_fake_provider(FAKE_KEY) as fake:
        r = start_relay(fake, tmp)
        try:
            store = r.server.app.state.relay.store
            assert isinstance(store, SQLiteStore)
            with sqlite3.connect(store.path) as other:
                other.execute("DROP TABLE ledger")
            yield r
        finally:
            r.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain-queued", "stream-awaited"])
def test_a_release_that_fails_is_logged_as_a_release(
        no_ledger: Relay, captured_logs: LogCapture, stream: bool) -> None:
    # The provider refuses (500): the reservation is released, queued for a plain call
    # (Call.release_soon), awaited for a stream. The queued one's failure was logged as
    # "settle failed" (seen failing so); the line says what failed.
    tok = no_ledger.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    sent = no_ledger.post("/v1/chat/completions", {
        "model": "fault-http500", "max_tokens": 8, "messages": HELLO_OPENAI,
        "stream": stream}, tok)
    assert sent.status_code == 502, sent.text
    [line] = _failure_lines(
        captured_logs, before,
        lambda line: " failed " in line and line.startswith("reference_relay.calls"),
        "no log line for the failed release")
    assert line.startswith("reference_relay.calls ERROR release failed "), line
    assert f"token={token_id(tok)} " in line and tok not in line
    assert "no such table" in line  # the store's own reason (StoreUnavailable)
