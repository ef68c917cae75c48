"""The relay's sweep deletes the counters of periods that ended COUNTER_MARGIN ago from a
SQLite store (Store.prune_counters), as Redis expires them: before, the file kept every
period's counter of every token for ever (a rate's one per minute of use). With a ledger
retention, it deletes the chains that expired before the retention (and the margin) too
(Store.prune_chains): no ledger row names them any more. Real relay on loopback, its SQLite
store's file read with sqlite3 beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from relay_harness import LogCapture, start_relay

from capwallet.store import COUNTER_MARGIN, Chain
from capwallet.store.sqlite import SQLiteStore


def test_the_sweep_prunes_the_counters_of_past_periods(fake: str, tmp_path: Path,
                                                       captured_logs: LogCapture) -> None:
    path = tmp_path / "relay.db"
    asyncio.run(SQLiteStore(path).close())  # the schema
    now = int(time.time())
    rows = [("t/rate/dead", 3, now - COUNTER_MARGIN - 60),  # ended over the margin ago
            ("t/rate/late", 3, now - COUNTER_MARGIN + 3600),  # within it: kept
            ("t/month/now", 5, now + 86400), ("t/total", 9, None)]
    with sqlite3.connect(path) as c:
        c.executemany("INSERT INTO counters (key, used, resets_at) VALUES (?, ?, ?)", rows)
    before = len(captured_logs.lines)
    relay = start_relay(fake, tmp_path, store=SQLiteStore(path))
    try:
        deadline = time.monotonic() + 5
        while True:
            with sqlite3.connect(path) as c:
                keys = {k for (k,) in c.execute("SELECT key FROM counters")}
            if "t/rate/dead" not in keys:
                break
            assert time.monotonic() < deadline, "the sweep did not prune the dead counter"
            time.sleep(0.05)
        assert keys == {"t/rate/late", "t/month/now", "t/total"}
        assert any("deleted 1 counter(s) of periods that ended over 2 days ago" in line
                   for line in captured_logs.lines[before:])
    finally:
        relay.close()


def test_the_sweep_prunes_the_chains_that_expired_before_the_ledger_s_retention(
        fake: str, tmp_path: Path, captured_logs: LogCapture) -> None:
    path = tmp_path / "relay.db"
    now = int(time.time())
    cutoff = now - 7 * 86400 - COUNTER_MARGIN  # retention 7 days, then the margin
    chains = [Chain("t1", "a1" * 8, ("app Blog", f"expires {cutoff - 60}"), cutoff - 9000),
              Chain("t1", "b2" * 8, ("app Blog", f"expires {cutoff + 3600}"), cutoff - 9000),
              Chain("t2", "c3" * 8, ("app Notes",), cutoff - 9000)]

    async def record() -> None:
        store = SQLiteStore(path)
        try:
            for c in chains:
                assert await store.note_chain(c)
        finally:
            await store.close()

    asyncio.run(record())
    before = len(captured_logs.lines)
    relay = start_relay(fake, tmp_path, store=SQLiteStore(path), ledger_retention_days=7)
    try:
        deadline = time.monotonic() + 5
        while True:
            with sqlite3.connect(path) as c:
                left = {k for (k,) in c.execute("SELECT chain_id FROM chains")}
            if "a1" * 8 not in left:
                break
            assert time.monotonic() < deadline, "the sweep did not prune the expired chain"
            time.sleep(0.05)
        assert left == {"b2" * 8, "c3" * 8}
        assert any("deleted 1 chain record(s) that expired over 9 days ago" in line
                   for line in captured_logs.lines[before:])
    finally:
        relay.close()
