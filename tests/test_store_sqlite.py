"""SQLite-specific store behaviour: URLs, WAL, and several processes on one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from capwallet.store import StoreUnavailable, open_store
from capwallet.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(absolute, SQLiteStore) and absolute.path == str(tmp_path / "a.db")
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db?synchronous=full")
    assert isinstance(relative, SQLiteStore) and relative.path == "rel.db"
    assert (tmp_path / "rel.db").exists()
    with sqlite3.connect(tmp_path / "rel.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db",
                                 "sqlite:///x.db?synchronous=off"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_unknown_scheme_and_redis_hook() -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme 'postgres'"):
        open_store("postgres://x")
    try:
        import capwallet.store.redis  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ValueError, match="redis store backend is not available"):
            open_store("redis://127.0.0.1:6379/0")


def test_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteStore(tmp_path / "missing-dir" / "x.db")


_WORKER = textwrap.dedent("""
    import asyncio, secrets, sys
    from capwallet.store import Hold, Reservation, open_store

    async def main(url, n):
        store = open_store(url)
        ok = 0
        for _ in range(n):
            r = Reservation(secrets.token_hex(16), "tok", (Hold("budget", 3, 3 * 50),
                            Hold("rate", 1, 10_000)), lease_until=2_000_000_000)
            if (await store.reserve(r)).ok:
                ok += 1
        await store.close()
        print(ok)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


async def test_several_processes_share_one_file_without_overspend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    SQLiteStore.from_url(url)  # create the schema once; the workers race on the rest
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, "40"], stdout=subprocess.PIPE,
                         text=True)
        for _ in range(4)
    ]
    oks = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        oks.append(int(out))
    assert sum(oks) == 50
    store = open_store(url)
    try:
        assert await store.counters(["budget", "rate"]) == {"budget": 150, "rate": 50}
    finally:
        await store.close()


async def test_write_waits_for_a_lock_held_elsewhere_without_blocking_the_loop(
        tmp_path: Path) -> None:
    import asyncio
    import secrets

    from capwallet.store import Hold, Reservation
    store = SQLiteStore(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = asyncio.create_task(store.reserve(
            Reservation(secrets.token_hex(16), "t", (Hold("b", 1, 10),), lease_until=1)))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.02)
            ticks += 1
        assert not task.done() and ticks == 10  # waiting in the worker, loop still running
        other.execute("COMMIT")
        assert (await asyncio.wait_for(task, 5)).ok
        assert await store.counters(["b"]) == {"b": 1}
    finally:
        other.close()
        await store.close()


async def test_wal_is_checkpointed(tmp_path: Path) -> None:
    import secrets

    from capwallet.store import Hold, Reservation
    from capwallet.store.sqlite import CHECKPOINT_EVERY
    store = SQLiteStore(tmp_path / "w.db")
    try:
        for _ in range(3 * CHECKPOINT_EVERY):
            await store.reserve(Reservation(secrets.token_hex(16), "t",
                                            (Hold("b", 1, 10**9),), lease_until=1))
        wal = tmp_path / "w.db-wal"
        # Without checkpoints the WAL would hold every commit (well over 10 MB here).
        assert wal.stat().st_size < 8 * 1024 * 1024
    finally:
        await store.close()
