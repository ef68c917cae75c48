"""Store benchmark: the store's work for one relayed call, on SQLite and on Redis.

    python bench/store.py [--quick] [--calls 4000] [--rounds 5] [--redis-url redis://...]

One call is what the relay asks of the store for a request it forwards:
  new   reserve (which checks the revocation and the counters atomically), settle
  old   snapshot (revocation and counters, one read), reserve, settle (the baseline: the
        relay's path before the reservation checked the revocation itself)
at concurrency 1 and 20 (that many callers on one event loop, each running calls one after
another), on one SQLite file and on one Redis (a redis-server started on a free loopback port
in a temp directory unless --redis-url names one). Rounds alternate old and new on the same
store, so both see the same database and the same machine; the table shows the median round
and, for CPU, the range over the rounds (a shared machine only ever adds to it), then the
Redis/SQLite ratio of the new path (issue 17: at most 1.3x at concurrency 20).

CPU us per call is this process's CPU time (every thread: SQLite's worker and checkpoints
included) over the calls; for Redis the server's CPU per call (from /proc) is shown apart.
Reservations and ledger entries are built before the clock starts: only store work is timed.

Redis at concurrency 1 is bimodal on a small VM: each call waits twice for Redis, and where
redis-server runs on the client's CPU it answers without the client sleeping, while on the
other CPU every wait is a sleep and a cross-CPU wake-up. Measured on the 2-vCPU machine of
issue 17 (client CPU per call, taskset): 68-76 us on one CPU, 132-150 us on two; an unpinned
run falls on either side, so compare c=1 Redis figures only within the same mode (the range
column shows a run that switched). SQLite never waits.
Each call has two holds (a budget and a rate counter), as a token with both caveats does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import checkout  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from capwallet.store import Hold, LedgerEntry, Reservation, Store, open_store  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef"
BUDGET = "b" * 32 + "/2026-11"
RATE = "r" * 32 + "/2026-11-27T10:00"
KEYS = [BUDGET, RATE]


@dataclass
class Round:
    cpu_us: float  # per call, this process
    calls_per_s: float
    server_us: float | None  # per call, redis-server's CPU


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:  # the relay runs on uvloop when it is installed
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _proc_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _work(n: int, now: int) -> list[tuple[Reservation, LedgerEntry]]:
    out = []
    for _ in range(n):
        rid = secrets.token_hex(16)
        out.append((
            Reservation(rid, TOKEN, (Hold(BUDGET, 40_000_000, 10**15, now + 86400),
                                     Hold(RATE, 1, 10**9, now + 60)), now + 60,
                        created_at=now, meta={"app": "bench", "provider": "fake",
                                              "model": "m", "operation": "chat",
                                              "input_tokens": 10, "output_tokens": 100,
                                              "cost": 40_000_000, "currency": "USD"}),
            LedgerEntry(now, TOKEN, "bench", "fake", "m", "chat", 10, 20, 8_000_000, "USD", "ok",
                        3, reservation_id=rid, chain_id="0123456789abcdef"),
        ))
    return out


async def _call_new(store: Store, r: Reservation, e: LedgerEntry) -> None:
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {BUDGET: 8_000_000, RATE: 1}, e)


async def _call_old(store: Store, r: Reservation, e: LedgerEntry) -> None:
    snap = await store.snapshot(TOKEN, KEYS)
    assert not snap.revoked
    assert (await store.reserve(r)).ok
    assert await store.settle(r.reservation_id, {BUDGET: 8_000_000, RATE: 1}, e)


Call = Callable[[Store, Reservation, LedgerEntry], Coroutine[Any, Any, None]]


async def _round(store: Store, call: Call, concurrency: int, calls: int,
                 server_pid: int | None) -> Round:
    work = _work(calls, int(time.time()))
    per = calls // concurrency

    async def caller(i: int) -> None:
        for r, e in work[i * per:(i + 1) * per]:
            await call(store, r, e)

    for r, e in _work(20, int(time.time())):  # warm: statements, scripts, connections
        await call(store, r, e)
    server0 = _proc_cpu(server_pid)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server1 = _proc_cpu(server_pid)
    n = per * concurrency
    server_us = None if server0 is None or server1 is None else (server1 - server0) / n * 1e6
    return Round(cpu / n * 1e6, n / wall, server_us)


def measure(url: str, concurrency: int, calls: int, rounds: int,
            server_pid: int | None) -> dict[str, list[Round]]:
    """Alternate old and new rounds on one store (opened inside each event loop run)."""
    results: dict[str, list[Round]] = {"old": [], "new": []}
    store = open_store(url)
    runner = asyncio.Runner(loop_factory=_loop_factory())
    try:
        for i in range(rounds):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for name in order:
                call = _call_old if name == "old" else _call_new
                results[name].append(runner.run(
                    _round(store, call, concurrency, calls, server_pid)))
    finally:
        runner.run(store.close())
        runner.close()
    return results


def _median(rounds: list[Round], attr: str) -> float:
    values = [getattr(r, attr) for r in rounds if getattr(r, attr) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (few calls, 2 rounds)")
    ap.add_argument("--calls", type=int, default=4000, help="calls per round (4000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each path (5)")
    ap.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = ap.parse_args()
    print(f"code measured: {checkout.describe()}")
    calls, rounds = (300, 2) if args.quick else (args.calls, args.rounds)

    tmp = Path(tempfile.mkdtemp(prefix="capwallet-store-bench-"))
    server = None
    if args.redis_url:
        redis_url, server_pid = args.redis_url, None
    else:
        server = RedisServer(tmp / "redis").start()
        assert server.proc is not None
        redis_url, server_pid = server.url, server.proc.pid
    backends = [("sqlite", f"sqlite:///{tmp / 'bench.db'}", None),
                ("redis", f"{redis_url}?prefix=bench{secrets.token_hex(4)}", server_pid)]
    rows = []
    try:
        for name, url, pid in backends:
            for concurrency in (1, 20):
                got = measure(url, concurrency, calls, rounds, pid)
                rows.append((name, concurrency, got))
    finally:
        if server is not None:
            server.stop()

    print(f"\ncapwallet store benchmark: {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, SQLite "
          f"{sqlite3.sqlite_version}; {calls} calls per round, median of {rounds} rounds\n"
          f"old = snapshot + reserve + settle; new = reserve (revocation inside) + settle\n")
    head = (f"{'backend':8} {'conc':>4} {'old CPU us':>11} {'new CPU us':>11} {'new/old':>8} "
            f"{'old range':>10} {'new range':>10} {'old calls/s':>12} {'new calls/s':>12} "
            f"{'new/old':>8} {'server us old/new':>18}")
    print(head)
    print("-" * len(head))
    new_cpu_of: dict[tuple[str, int], float] = {}
    for name, concurrency, got in rows:
        old_cpu, new_cpu = _median(got["old"], "cpu_us"), _median(got["new"], "cpu_us")
        new_cpu_of[name, concurrency] = new_cpu
        old_rate, new_rate = (_median(got["old"], "calls_per_s"),
                              _median(got["new"], "calls_per_s"))
        old_srv, new_srv = _median(got["old"], "server_us"), _median(got["new"], "server_us")
        server_col = "-" if old_srv != old_srv else f"{old_srv:.0f} / {new_srv:.0f}"
        print(f"{name:8} {concurrency:>4} {old_cpu:>11.0f} {new_cpu:>11.0f} "
              f"{new_cpu / old_cpu:>7.2f}x {_range(got['old']):>10} {_range(got['new']):>10} "
              f"{old_rate:>12.0f} {new_rate:>12.0f} {new_rate / old_rate:>7.2f}x "
              f"{server_col:>18}")
    for concurrency in (1, 20):
        sqlite_cpu, redis_cpu = new_cpu_of["sqlite", concurrency], new_cpu_of["redis", concurrency]
        target = " (target at c=20: at most 1.3x)" if concurrency == 20 else ""
        print(f"new path, Redis/SQLite store CPU per call at c={concurrency}: "
              f"{redis_cpu / sqlite_cpu:.2f}x{target}")
    return 0


def _range(rounds: list[Round]) -> str:
    """The least and the most CPU us per call over the rounds (a shared machine only adds)."""
    values = [r.cpu_us for r in rounds]
    return f"{min(values):.0f}-{max(values):.0f}"


if __name__ == "__main__":
    sys.exit(main())
