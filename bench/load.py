"""Load benchmark: two relay processes on one Redis against the fake provider.

    python bench/load.py [--seconds 60] [--concurrency 100] [--redis-url redis://...]

In one run, on this machine:
  direct     the fake provider called straight, same request, same concurrency: the baseline
  relays     the same load through 2 ``python -m reference_relay`` processes sharing a Redis
             store (verify, reserve, forward, meter, settle, ledger on every call)
and prints requests per second, latency p50/p99 and the latency the relays add, errors (must
be 0), each relay's memory (RSS from /proc) at the start and end of the run, where the CPU
went (CPU ms per request of the load generator, the fake provider, the relays and Redis, from
/proc, and the share of the machine's cores they used: which of them is the bottleneck; the
inverse ratio of all their CPU per request is the relays/direct throughput a machine would
reach with every core given to them), and then the store alone: reserve+settle pairs per
second on SQLite and on Redis, side by side.

The load generator is a minimal keep-alive HTTP/1.1 client on asyncio (cheaper than a full
client library, so it steals less CPU from what is measured). Everything runs on one machine:
the generator, the relays, the fake provider and Redis share its cores, so the figures are a
floor for a real deployment, and only the ratios between rows of one run mean much. A
redis-server is started in a temp directory unless --redis-url names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import checkout  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from relay_harness import FAKE_KEY  # noqa: E402
from scaleout_harness import Process, start_fake, write_config  # noqa: E402

from capwallet import caveats as cav  # noqa: E402
from capwallet.keys import RootKey  # noqa: E402
from capwallet.store import Hold, LedgerEntry, Reservation, Store, open_store  # noqa: E402
from capwallet.token import mint  # noqa: E402

BODY = json.dumps({"model": "relay-out", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hello there"}]}).encode()


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(int(p / 100 * len(xs)), len(xs) - 1)] * 1000


def request_bytes(url: str, token: str) -> bytes:
    u = urlsplit(url)
    path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
    return (f"POST {path} HTTP/1.1\r\nhost: {u.hostname}\r\nauthorization: Bearer {token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
            ).encode() + BODY


async def read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = -1
    chunked = False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length >= 0:
        await reader.readexactly(length)
    return status


async def worker(url: str, req: bytes, until: float, out: Result) -> None:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        while time.perf_counter() < until:
            t = time.perf_counter()
            try:
                writer.write(req)
                status = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                out.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(u.hostname, u.port)
                continue
            if status == 200:
                out.latencies.append(time.perf_counter() - t)
            else:
                out.errors += 1
    finally:
        writer.close()


async def drive(targets: list[tuple[str, bytes]], concurrency: int, seconds: float) -> Result:
    out = Result()
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*(worker(*targets[i % len(targets)], until, out)
                           for i in range(concurrency)))
    out.seconds = time.perf_counter() - start
    return out


def cpu_s(pid: int | None) -> float:
    """A process's CPU seconds so far (user + system, from /proc); this process's if None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_metered(pids: dict[str, int | None], targets: list[tuple[str, bytes]],
                concurrency: int, seconds: float) -> tuple[Result, dict[str, float]]:
    """``drive`` the load, and each named process's CPU seconds over it."""
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    result = asyncio.run(drive(targets, concurrency, seconds))
    return result, {name: cpu_s(pid) - before[name] for name, pid in pids.items()}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the store alone ------------------------------------------------------------------------------

async def store_pairs(store: Store, seconds: float, concurrency: int = 16) -> float:
    """reserve + settle pairs per second (two counters per reservation, as a budget + rate)."""
    token = secrets.token_hex(16)
    now = int(time.time())
    done = 0

    async def loop(until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            rid = secrets.token_hex(16)
            ok = await store.reserve(Reservation(
                rid, token, (Hold("budget/m", 5, 10**15, now + 86400),
                             Hold("rate/x", 1, 10**15, now + 60)), now + 600, created_at=now))
            assert ok.ok
            await store.settle(rid, {"budget/m": 4, "rate/x": 1}, LedgerEntry(
                now, token, "app", "openai", "m", "chat", 10, 16, 4, "USD", "ok", 1))
            done += 1

    await loop(time.perf_counter() + 0.5)  # warm up (connections, scripts, caches)
    done = 0
    start = time.perf_counter()
    await asyncio.gather(*(loop(start + seconds) for _ in range(concurrency)))
    rate = done / (time.perf_counter() - start)
    await store.close()
    return rate


# -- the run ---------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="relay phase length (60)")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--relays", type=int, default=2)
    ap.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = ap.parse_args()
    print(f"code measured: {checkout.describe()}")
    base_secs = max(3.0, args.seconds / 4)
    store_secs = max(2.0, min(10.0, args.seconds / 6))

    tmp = Path(tempfile.mkdtemp(prefix="capwallet-load-"))
    server = None
    if args.redis_url:
        redis_url = args.redis_url
    else:
        server = RedisServer(tmp / "redis").start()
        redis_url = server.url
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             check=False).stdout.split(" v=")[-1].split()[0]
    fake = start_fake(tmp)
    relays: list[Process] = []
    try:
        root = RootKey.generate()
        root.save(tmp / "root.key")
        store_url = f"{redis_url}?prefix=load{secrets.token_hex(4)}"
        config = write_config(tmp, fake.url, store_url, sweep_interval=30)
        env = checkout.env(OPENAI_API_KEY=FAKE_KEY)
        for i in range(args.relays):
            relays.append(Process([sys.executable, "-m", "reference_relay", "--config",
                                   str(config), "--port", "0", "--log-level", "warning"],
                                  tmp / f"relay{i}.log", env=env, cwd=tmp).start())
        token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.Rate(10**9)]).serialize()
        direct = [(fake.url, request_bytes(fake.url, FAKE_KEY))]
        via = [(r.url, request_bytes(r.url, token)) for r in relays]

        print(f"warming up; then {base_secs:.0f} s direct, {args.seconds:.0f} s through "
              f"{args.relays} relays, concurrency {args.concurrency}", file=sys.stderr)
        asyncio.run(drive(via + direct, 20, 2.0))
        pids: dict[str, int | None] = {"load generator": None, "fake provider": fake.pid}
        pids.update({f"relay {i}": r.pid for i, r in enumerate(relays)})
        if server is not None and server.proc is not None:  # a --redis-url one is not ours
            pids["Redis"] = server.proc.pid
        base, base_cpu = run_metered(pids, direct, args.concurrency, base_secs)
        rss_start = [rss_mb(r.pid) for r in relays]
        load, load_cpu = run_metered(pids, via, args.concurrency, args.seconds)
        rss_end = [rss_mb(r.pid) for r in relays]
        one_direct = asyncio.run(drive(direct, 1, min(5.0, base_secs)))
        one_via = asyncio.run(drive(via[:1], 1, min(5.0, base_secs)))
    finally:
        for r in relays:
            r.stop()
        fake.stop()

    sqlite_rate = asyncio.run(store_pairs(open_store(f"sqlite:///{tmp / 'bench.db'}"),
                                          store_secs))
    redis_rate = asyncio.run(store_pairs(open_store(
        f"{redis_url}?prefix=bench{secrets.token_hex(4)}"), store_secs))
    if server is not None:
        server.stop()

    print(f"\ncapwallet load benchmark: {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, Redis {version}; "
          f"generator, relays, fake provider and Redis on this one machine\n")
    w = 34
    print(f"{'':{w}} {'direct':>12} {'via relays':>12} {'relays/direct':>14}")
    print(f"{'requests/s (concurrency ' + str(args.concurrency) + ')':{w}} {base.rps:>12.0f} "
          f"{load.rps:>12.0f} {load.rps / base.rps:>13.2f}x")
    for p in (50, 99):
        d, v = base.pct(p), load.pct(p)
        added = f"{v - d:+.1f} ms"
        print(f"{f'latency p{p} ms':{w}} {d:>12.1f} {v:>12.1f} {added:>14}")
    for p in (50, 99):
        d, v = one_direct.pct(p), one_via.pct(p)
        added = f"{v - d:+.2f} ms"
        print(f"{f'latency p{p} ms, one at a time':{w}} {d:>12.2f} {v:>12.2f} {added:>14}")
    print(f"{'requests':{w}} {len(base.latencies):>12} {len(load.latencies):>12}")
    print(f"{'errors':{w}} {base.errors:>12} {load.errors:>12}")
    for i, (a, b) in enumerate(zip(rss_start, rss_end, strict=True)):
        print(f"{f'relay {i} RSS MB, start -> end':{w}} {'':>12} {f'{a:.0f} -> {b:.0f}':>12} "
              f"{f'{b - a:+.1f} MB':>14}")
    cores = os.cpu_count() or 1
    print(f"\n{'CPU ms per request (share of ' + str(cores) + ' cores)':{w}} {'direct':>12} "
          f"{'via relays':>12}")

    def per_request(cpu: float, run: Result) -> str:
        share = cpu / run.seconds / cores
        return f"{cpu / max(len(run.latencies), 1) * 1000:.3f} ({share:.0%})"

    for name in load_cpu:
        print(f"{name:{w}} {per_request(base_cpu[name], base):>12} "
              f"{per_request(load_cpu[name], load):>12}")
    d_all, v_all = sum(base_cpu.values()), sum(load_cpu.values())
    print(f"{'all of these':{w}} {per_request(d_all, base):>12} {per_request(v_all, load):>12}")
    # With every core ours, each path would run until the CPU is used up: the ratio of their
    # CPU per request is then the throughput ratio, whatever else loads the machine now.
    ceiling = (d_all / max(len(base.latencies), 1)) / (v_all / max(len(load.latencies), 1))
    print(f"{'CPU-bound relays/direct (CPU ratio)':{w}} {'':>12} {'':>12} {ceiling:>13.2f}x")
    print(f"\n{'store: reserve+settle pairs/s':{w}} {'sqlite':>12} {'redis':>12} "
          f"{'redis/sqlite':>14}")
    print(f"{'(one process, 16 concurrent)':{w}} {sqlite_rate:>12.0f} {redis_rate:>12.0f} "
          f"{redis_rate / sqlite_rate:>13.2f}x")
    print(f"\nlatencies: mean direct {statistics.fmean(base.latencies) * 1000:.1f} ms, "
          f"via relays {statistics.fmean(load.latencies) * 1000:.1f} ms")
    return 1 if load.errors or base.errors else 0


if __name__ == "__main__":
    sys.exit(main())
