"""The relay's sweep deletes the counters of periods that ended COUNTER_MARGIN ago from a
SQLite store (Store.prune_counters), as Redis expires them: before, the file kept every
period's counter of every token for ever (a rate's one per minute of use). Real relay on
loopback, its SQLite store's file read with sqlite3 beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from relay_harness import LogCapture, start_relay

from capwallet.store import COUNTER_MARGIN
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
