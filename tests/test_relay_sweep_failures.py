"""The relay's lease sweep survives a failed turn of any kind (capwallet.maintenance): logged
once, by kind and place, never by the error's text, and a later turn does the work once the
cause is gone. Real relay on loopback, its SQLite store's file written with sqlite3 beside it.

Before, the sweep caught StoreUnavailable only, and a store that let another error out (here
the SQLite store's lease expiry, which raises the error of a reservation record it cannot read)
ended the task at its first turn: no lease of a crashed call was closed again until a restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from pathlib import Path

from relay_harness import LogCapture, start_relay

from capwallet.store import Hold, Reservation
from capwallet.store.sqlite import SQLiteStore


def _lease_closed(path: Path, token: str) -> bool:
    with sqlite3.connect(path) as c:
        return [s for (s,) in c.execute("SELECT status FROM ledger WHERE token_id = ?",
                                        (token,))] == ["lease_expired"]


def test_a_sweep_that_fails_on_a_record_it_cannot_read_goes_on(
        fake: str, tmp_path: Path, captured_logs: LogCapture) -> None:
    # A crashed call's reservation, its lease over, whose meta a relay of another version
    # wrote with a count this one cannot read ("input_tokens": "many": int() raises
    # ValueError, quoting the value). Every turn fails while it is there, deletes nothing,
    # and one line is logged however many turns fail; once the record is repaired, a later
    # turn closes it (and the other expired lease, which the failed turns left open: a
    # sweep's leases close in one transaction). Seen failing on 4c3b49f: the ValueError
    # ended the sweep at its first turn, nothing logged, neither lease closed after repair.
    path = tmp_path / "relay.db"
    bad, good = secrets.token_hex(16), secrets.token_hex(16)
    meta = {"app": "a", "provider": "p", "model": "m", "operation": "chat", "currency": "USD",
            "input_tokens": 10, "output_tokens": 16, "cost": 7, "chain_id": "c" * 16}

    async def crashed_calls() -> None:
        store = SQLiteStore(path)
        try:
            now = int(time.time())
            for token in (bad, good):
                assert (await store.reserve(Reservation(
                    secrets.token_hex(16), token, (Hold(f"{token}/total", 7, 100),),
                    lease_until=now - 1, created_at=now - 60, meta=meta))).ok
        finally:
            await store.close()

    asyncio.run(crashed_calls())
    odd = json.dumps(meta | {"input_tokens": "many"})
    with sqlite3.connect(path) as c:
        c.execute("UPDATE reservations SET meta = ? WHERE token_id = ?", (odd, bad))
    before = len(captured_logs.lines)
    relay = start_relay(fake, tmp_path, store=SQLiteStore(path), sweep_interval=0.05)

    def lines(text: str) -> list[str]:
        return [line for line in captured_logs.lines[before:] if text in line]

    try:
        deadline = time.monotonic() + 10
        while not lines("lease sweep failed"):
            assert time.monotonic() < deadline, "the failed sweep was not logged"
            time.sleep(0.02)
        time.sleep(0.5)  # about ten more turns fail, with nothing more logged
        [line] = lines("lease sweep failed")
        assert "ValueError at sqlite.py:" in line and "many" not in line
        assert not _lease_closed(path, good) and not _lease_closed(path, bad)
        with sqlite3.connect(path) as c:
            c.execute("UPDATE reservations SET meta = ? WHERE token_id = ?",
                      (json.dumps(meta), bad))
        while not (_lease_closed(path, bad) and _lease_closed(path, good)):
            assert time.monotonic() < deadline + 10, "no later turn closed the leases"
            time.sleep(0.02)
        assert len(lines("lease sweep works again, after ")) == 1
    finally:
        relay.close()
