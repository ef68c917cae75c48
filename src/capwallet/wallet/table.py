"""One table of the wallet's SQLite file, behind one connection and a lock.

The wallet's own tables (grants, sessions) are small and their calls short, so each keeps one
connection for the process, guarded by a lock: simpler than a pool, and safe from the server's
event loop and from the CLI's threads alike. Writes go through ``_tx`` (BEGIN IMMEDIATE), so
two processes on one file (``capwallet serve`` and a CLI command) serialise on SQLite's lock
and wait for it up to ``busy_timeout``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WalletTable:
    """Opens the file, creates the table (``schema``), and offers locked reads and writes."""

    def __init__(self, path: Path | str, schema: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout = 5000")
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
