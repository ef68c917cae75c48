"""The SQLite store used from two event loops in two threads at once must not crash.

An SQLiteStore serves one loop at a time; a second loop (the relay harness's asyncio.run in a
test thread, an app that embeds the store) can take it over between two batches. Its batch
connection is then reached from two threads, and a read of the first loop may still be inside
SQLite with the GIL released: one sqlite3 cursor used by two threads at once crashed the
process (SIGSEGV, seen in a relay test run). The hammering runs in a subprocess so that a
crash fails this test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, sys, threading, time
from capwallet.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
stop = time.monotonic() + float(sys.argv[2])
def owner():
    async def main():
        n = 0
        while time.monotonic() < stop:
            try:  # refusals (the other loop holds the store) are expected; crashes are not
                await store.snapshot("t" * 32, ["k/1", "k/2", "k/3"])
                await store.revoke(f"a{n:031x}", 1)
                n += 1
            except Exception:
                pass
            await asyncio.sleep(0)
    asyncio.run(main())
t = threading.Thread(target=owner)
t.start()
n = 0
while time.monotonic() < stop:
    try:
        asyncio.run(store.revoke(f"b{n:031x}", 1))
        n += 1
    except Exception:
        pass
t.join()
print("survived", n)
"""


def test_two_loops_in_two_threads_do_not_crash_the_process(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "s.db"), "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.startswith("survived ")
    assert int(proc.stdout.split()[1]) > 0  # the second loop did get its writes in
