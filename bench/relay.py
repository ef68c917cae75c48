"""Benchmark: what the relay adds on top of a direct provider call (not a timed test).

    python bench/relay.py [--quick] [--streams] [--runs N]

One run, all on loopback: a fake provider (the fake_provider package) and two relays, as
deployed (``python -m reference_relay``, in subprocesses): one with a single process, one with
``--workers 2`` (one per core; each relay with its own SQLite file). The same load generator
calls the provider directly (the baseline) and through a relay, with the same non-streamed
chat request, at concurrency 1, 20 and 100 (the two-worker relay at 20 and 100), plus a
streamed request at 1; direct and relayed rounds alternate, so a change in the machine's load
hits both alike. Each relay call is a full one: token verification (cached chain), an atomic
reservation on a budget and a token quota that also checks the revocation, the upstream call,
settlement and a ledger row in SQLite.

Reported: latency p50/p99 (ms), the relay's added latency (relay - direct), requests per
second and their ratio, and the CPU time per request of the relay's processes and, for scale,
of the fake provider (from /proc, user + system).

A second baseline runs in the same rounds as the one-process relay: bench/passthrough.py, a bare
forwarding proxy on the relay's own serving stack (uvicorn, httptools, the relay's middleware
and upstream pool) with no capability logic. Its row shows what serving and forwarding cost on
this stack, so the relay's CPU per call splits into that floor and the logic on top.

Streams (at concurrency 1, after the plain calls; ``--streams`` runs only them, ``--runs N``
repeats them N times in the run): the added time to the first byte and to the first content
chunk of a 16-chunk stream, and the cost per chunk from a 500-chunk stream (long minus short),
with the same streams through the floor proxy in the same rounds (it passes a stream on as the
relay does, unmetered), so the added first byte splits into the stack's and the logic's;
targets: first byte at most 0.5 ms added p50, under 20 us per chunk, judged on the median over
the runs with the range beside it.

Targets: added p50 under 1.5 ms at concurrency 1; at concurrency 20 the relay's CPU per call at
most twice the floor proxy's, in the same rounds (issue 17). The throughput ratio to direct is
printed for both relays but is no target: the fake provider answers thousands of calls per
second on the same cores, so that ratio measures the machine more than the relay.

The load generator is a minimal keep-alive HTTP/1.1 client (an asyncio Protocol per connection,
httptools parsing), so that its own CPU use, which shares the cores with the servers, stays
small and identical in both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import checkout
import httptools

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reference_relay" / "relay.example.toml"
KEY = "sk-bench-" + secrets.token_hex(12)
TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = 5  # direct and relayed rounds alternate
CONTENT = re.compile(rb'"content":"[^"]')  # an SSE chunk with a non-empty content delta
LONG = 500  # content chunks of the long stream (the fake provider sends one word per chunk)


def start(cmd: list[str], marker: str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    # BENCH_STDERR=1 shows the servers' logs (a crash would otherwise look like a hang).
    err = None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                            cwd=cwd)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if marker not in line:
        proc.kill()
        raise SystemExit(f"{cmd[2]} did not start: {line!r}")
    return proc, line.split()[-1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (a relay's worker processes)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue  # exited meanwhile
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, read with httptools (the parser the relay and
    uvicorn use): the load generator's own CPU per request is about a third of what asyncio
    streams cost, and it shares the cores with the servers being measured."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        # perf_counter of the response's first byte and of its first non-empty content delta
        # (a stream's time to first token): 0.0 until seen.
        self.first_byte = 0.0
        self.first_content = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types it a BaseTransport; a TCP connection's is a Transport
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        if not self.first_content and CONTENT.search(body):
            self.first_content = time.perf_counter()
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result((self.parser.get_status_code(), b"".join(self.body)))


class Conn:
    """A keep-alive connection to one server, opened on first use."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: _Exchange | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if self.proto is None:
            _, self.proto = await loop.create_connection(_Exchange, self.host, self.port)
        proto = self.proto
        assert proto.transport is not None
        proto.body = []
        proto.first_byte = proto.first_content = 0.0
        proto.done = loop.create_future()
        proto.transport.write(head + body)
        return await proto.done

    async def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


def build(base: str, path: str, body: dict[str, object], auth: str) -> tuple[str, int, bytes,
                                                                             bytes]:
    hostport = base.removeprefix("http://")
    host, port = hostport.rsplit(":", 1)
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {hostport}\r\nauthorization: Bearer {auth}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n").encode()
    return host, int(port), head, data


@dataclass
class Result:
    latencies: list[float]
    seconds: float
    errors: int

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.errors += other.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[min(int(q * len(s)), len(s) - 1)] * 1000


async def load(base: str, path: str, body: dict[str, object], auth: str, concurrency: int,
               total: int, warmup: int) -> Result:
    host, port, head, data = build(base, path, body, auth)
    conns = [Conn(host, port) for _ in range(concurrency)]
    errors = 0

    async def worker(conn: Conn, n: int, out: list[float]) -> None:
        nonlocal errors
        for _ in range(n):
            t = time.perf_counter()
            status, _ = await conn.request(head, data)
            out.append(time.perf_counter() - t)
            if status != 200:
                errors += 1

    if warmup:
        warm: list[float] = []
        await asyncio.gather(*(worker(c, max(warmup // concurrency, 1), warm) for c in conns))
        errors = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, total // concurrency, lat) for c in conns))
    seconds = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return Result(lat, seconds, errors)


@dataclass
class StreamTimes:
    """Per streamed call at concurrency 1, in seconds from the request's write."""

    first_byte: list[float]
    first_content: list[float]
    total: list[float]

    def p50(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) * 1000


async def stream_times(base: str, body: dict[str, object], auth: str, n: int) -> StreamTimes:
    """``n`` streamed calls one after another on one keep-alive connection."""
    host, port, head, data = build(base, "/v1/chat/completions", body, auth)
    conn = Conn(host, port)
    out = StreamTimes([], [], [])
    for _ in range(n):
        t = time.perf_counter()
        status, got = await conn.request(head, data)
        end = time.perf_counter()
        assert conn.proto is not None
        if status != 200 or not conn.proto.first_content:
            raise SystemExit(f"stream failed: {status} {got[:200]!r}")
        out.first_byte.append(conn.proto.first_byte - t)
        out.first_content.append(conn.proto.first_content - t)
        out.total.append(end - t)
    await conn.close()
    return out

@dataclass
class StreamRun:
    """One run of the stream rounds: per kind ("short", "long") and side ("direct",
    "floor", "relay") the times of every call, and per kind the CPU seconds of the relay
    (``cpu``) and of the floor proxy (``floor_cpu``)."""

    times: dict[str, StreamTimes]
    cpu: dict[str, float]
    per_round: dict[str, int]
    floor_cpu: dict[str, float]

    def p50(self, who: str, kind: str, name: str) -> float:
        return self.times[f"{who} {kind}"].p50(name)

    def added(self, kind: str, name: str, who: str = "relay") -> float:
        """The added p50 (ms) of ``name`` for one stream kind, of the relay or of the floor
        proxy (``who``), over the direct call's."""
        return self.p50(who, kind, name) - self.p50("direct", kind, name)

    def per_chunk_us(self) -> float:
        """What the relay adds per chunk: the long stream's added whole time less the short
        one's, over the chunks between them."""
        return (self.added("long", "total") - self.added("short", "total")) / (LONG - 16) * 1000

    def cpu_per_stream(self, kind: str, who: str = "relay") -> float:
        cpu = self.cpu if who == "relay" else self.floor_cpu
        return cpu[kind] / len(self.times[f"{who} {kind}"].total)

    def cpu_per_chunk_us(self) -> float:
        return (self.cpu_per_stream("long") - self.cpu_per_stream("short")) / (LONG - 16) * 1e6


def stream_rounds(fake_url: str, relay_url: str, relay_pid: int, floor_url: str,
                  floor_pid: int, token: str, stream_body: dict[str, object],
                  scale: float) -> StreamRun:
    """Streams at concurrency 1: time to the first byte and to the first content chunk (what a
    chat UI shows) of a 16-chunk stream, and a LONG-chunk stream for the cost per chunk;
    direct, floor-proxy (bench/passthrough.py) and relayed rounds alternate, so all see the
    same machine load."""
    long_body = {**stream_body, "max_tokens": LONG}
    run = StreamRun({}, {"short": 0.0, "long": 0.0},
                    {"short": max(int(60 * scale), 10), "long": max(int(20 * scale), 4)},
                    {"short": 0.0, "long": 0.0})
    sides = (("direct", fake_url, KEY, 0), ("floor", floor_url, KEY, floor_pid),
             ("relay", relay_url, token, relay_pid))
    for _, url, auth, _ in sides:
        asyncio.run(stream_times(url, stream_body, auth, 5))  # warm
    for _ in range(ROUNDS):
        for kind, b in (("short", stream_body), ("long", long_body)):
            for who, url, auth, pid in sides:
                c0 = tree_cpu_seconds(pid) if pid else 0.0
                got = asyncio.run(stream_times(url, b, auth, run.per_round[kind]))
                if who == "relay":
                    run.cpu[kind] += tree_cpu_seconds(pid) - c0
                elif who == "floor":
                    run.floor_cpu[kind] += tree_cpu_seconds(pid) - c0
                have = run.times.setdefault(f"{who} {kind}", StreamTimes([], [], []))
                have.first_byte += got.first_byte
                have.first_content += got.first_content
                have.total += got.total
    return run


def print_streams(runs: list[StreamRun]) -> None:
    """Each run's stream table (the relay, and the floor proxy below it), then the targets
    judged on the median over the runs (with the range beside it: one run alone is noise on a
    shared machine) and the relay's added first byte split into what the serving stack costs
    (the floor's added first byte) and what the capability logic adds on top (relay - floor)."""
    for i, run in enumerate(runs, 1):
        pr = run.per_round
        print(f"\nstreams at concurrency 1, one-process relay and the floor proxy, run {i} of "
              f"{len(runs)} (p50 ms; {pr['short'] * ROUNDS} short streams of 16 content chunks, "
              f"{pr['long'] * ROUNDS} long ones of {LONG}, each way)")
        hdr3 = (f"{'stream':<7}{'via':>6} | {'first byte':>10}{'added':>7} | "
                f"{'first content':>13}{'added':>7} | {'whole':>7}{'added':>7} | "
                f"{'cpu/stream':>13}")
        print(hdr3)
        print("-" * len(hdr3))
        for kind in ("short", "long"):
            for who in ("relay", "floor"):
                print(f"{kind:<7}{who:>6} | {run.p50(who, kind, 'first_byte'):>10.3f}"
                      f"{run.added(kind, 'first_byte', who):>7.3f} | "
                      f"{run.p50(who, kind, 'first_content'):>13.3f}"
                      f"{run.added(kind, 'first_content', who):>7.3f} | "
                      f"{run.p50(who, kind, 'total'):>7.3f}"
                      f"{run.added(kind, 'total', who):>7.3f} | "
                      f"{run.cpu_per_stream(kind, who) * 1000:>10.3f} ms")
        print(f"per-chunk overhead: added time {run.per_chunk_us():.1f} us, relay CPU "
              f"{run.cpu_per_chunk_us():.1f} us per chunk (long minus short stream, over "
              f"{LONG - 16} chunks)")

    def summary(values: list[float]) -> str:
        return (f"{statistics.median(values):.3f} (range {min(values):.3f}-{max(values):.3f} "
                f"over {len(values)} run{'s' if len(values) > 1 else ''})")

    ttfb = [r.added("short", "first_byte") for r in runs]
    ttfc = [r.added("short", "first_content") for r in runs]
    direct = [r.p50("direct", "short", "first_byte") for r in runs]
    chunk = [r.per_chunk_us() for r in runs]
    stack = [r.added("short", "first_byte", "floor") for r in runs]
    logic = [r.p50("relay", "short", "first_byte") - r.p50("floor", "short", "first_byte")
             for r in runs]
    print(f"\nstreams, median over runs: direct first byte {summary(direct)} ms; added first "
          f"byte {summary(ttfb)} ms; added first content chunk {summary(ttfc)} ms; "
          f"per-chunk overhead {summary(chunk)} us")
    print(f"added first byte split: the stack (floor proxy - direct) {summary(stack)} ms; "
          f"the capability logic (relay - floor proxy) {summary(logic)} ms")
    mid = statistics.median(ttfb)
    print(f"target: added time to first byte <= 0.5 ms p50 at c=1: {mid:.3f} ms -> "
          f"{'met' if mid <= 0.5 else 'MISSED'}")
    mid_chunk = statistics.median(chunk)
    print(f"target: per-chunk overhead < 20 us: {mid_chunk:.1f} us -> "
          f"{'met' if mid_chunk < 20 else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--streams", action="store_true",
                        help="only the stream rounds (fake provider, floor proxy and "
                             "one-process relay; no plain calls, no two-worker relay)")
    parser.add_argument("--runs", type=int, default=None, metavar="N",
                        help="repeat the stream rounds N times in this run and judge the "
                             "stream targets on the median (default 3 with --streams, else 1)")
    args = parser.parse_args()
    print(f"code measured: {checkout.describe()}")
    runs = args.runs if args.runs is not None else (3 if args.streams else 1)
    if runs < 1:
        parser.error("--runs must be at least 1")
    scale = 0.2 if args.quick else 1.0
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    fake, fake_url = start([sys.executable, "-m", "fake_provider", "--port", "0",
                            "--api-key", KEY, "--default-reply-tokens", str(LONG)],
                            "listening")
    text = EXAMPLE.read_text()
    for url in ("https://api.openai.com/v1", "https://api.deepseek.com/v1",
                "http://127.0.0.1:11434/v1"):
        text = text.replace(f'"{url}"', f'"{fake_url}/v1"')
    text = text.replace('"https://api.anthropic.com"', f'"{fake_url}"')
    root = RootKey.generate()
    env = checkout.env(OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY)
    relays: dict[int, tuple[subprocess.Popen[str], str]] = {}
    for workers in (1,) if args.streams else (1, 2):  # each with its own store file
        home = tmp / f"workers{workers}"
        home.mkdir()
        (home / "relay.toml").write_text(text)
        root.save(home / "root.key")
        relays[workers] = start([sys.executable, "-m", "reference_relay", "--config",
                                 str(home / "relay.toml"), "--port", "0", "--workers",
                                 str(workers), "--log-level", "warning"],
                                "listening", env=env, cwd=home)
    proxy, proxy_url = start(
        [sys.executable, str(ROOT / "bench" / "passthrough.py"), "--upstream",
         f"{fake_url}/v1", "--key", KEY, "--port", "0"], "listening", env=checkout.env())
    token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                        cav.App("bench")]).serialize()
    body: dict[str, object] = {"model": "gpt-4o-mini", "max_tokens": 16,
                               "messages": [{"role": "user", "content": "Say hello."}]}
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    plan = [("chat", body, 1, 1, 600), ("chat", body, 1, 20, 3000), ("chat", body, 1, 100, 4000),
            ("stream", stream_body, 1, 1, 300), ("chat", body, 2, 20, 3000),
            ("chat", body, 2, 100, 4000)]
    if args.streams:
        plan = []
    rows = []
    floor: dict[int, tuple[Result, float]] = {}  # concurrency -> (proxy result, CPU per call)
    try:
        for name, b, workers, conc, n in plan:
            relay, relay_url = relays[workers]
            total = max(int(n * scale) // (conc * ROUNDS) * conc * ROUNDS, conc * ROUNDS)
            warm = max(total // 10, conc)
            asyncio.run(load(fake_url, "/v1/chat/completions", b, KEY, conc, warm, 0))
            asyncio.run(load(relay_url, "/v1/chat/completions", b, token, conc, warm, 0))
            with_floor = name == "chat" and workers == 1
            if with_floor:
                asyncio.run(load(proxy_url, "/v1/chat/completions", b, KEY, conc, warm, 0))
            direct, via, bare = Result([], 0.0, 0), Result([], 0.0, 0), Result([], 0.0, 0)
            fake_cpu = cpu = bare_cpu = 0.0
            # Alternate direct, proxy and relayed rounds so that all see the same machine load.
            for _ in range(ROUNDS):
                f0 = cpu_seconds(fake.pid)
                direct.add(asyncio.run(load(fake_url, "/v1/chat/completions", b, KEY, conc,
                                            total // ROUNDS, 0)))
                fake_cpu += cpu_seconds(fake.pid) - f0
                if with_floor:
                    p0 = cpu_seconds(proxy.pid)
                    bare.add(asyncio.run(load(proxy_url, "/v1/chat/completions", b, KEY, conc,
                                              total // ROUNDS, 0)))
                    bare_cpu += cpu_seconds(proxy.pid) - p0
                r0 = tree_cpu_seconds(relay.pid)
                via.add(asyncio.run(load(relay_url, "/v1/chat/completions", b, token, conc,
                                         total // ROUNDS, 0)))
                cpu += tree_cpu_seconds(relay.pid) - r0
            if with_floor:
                floor[conc] = (bare, bare_cpu / total)
            rows.append((name, workers, conc, total, direct, via, cpu / total,
                         fake_cpu / total))
            print(f"  {name} workers={workers} c={conc}: {total} requests each way",
                  file=sys.stderr, flush=True)
        stream_runs = []
        for i in range(runs):
            stream_runs.append(stream_rounds(fake_url, relays[1][1], relays[1][0].pid,
                                             proxy_url, proxy.pid, token, stream_body, scale))
            print(f"  streams c=1 run {i + 1} of {runs} done", file=sys.stderr, flush=True)
    finally:
        procs = [relay for relay, _ in relays.values()] + [fake, proxy]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)

    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nrelay benchmark ({os.cpu_count()} cores shared by the fake provider, the relay and "
          f"the load generator; load average at the end {load_avg}; times in ms)")
    print_streams(stream_runs)
    if not rows:
        return 0
    print()
    hdr = (f"{'case':<8}{'workers':>8}{'conc':>5}{'reqs':>6} | {'direct p50':>10}{'p99':>7} | "
           f"{'relay p50':>9}{'p99':>7} | {'added p50':>9}{'p99':>7} | "
           f"{'direct rps':>10}{'relay rps':>10}{'ratio':>7} | {'relay cpu/req':>13}"
           f"{'fake cpu/req':>13}")
    print(hdr)
    print("-" * len(hdr))
    for name, workers, conc, total, d, v, cpu, fake_cpu in rows:
        errs = f"  ({d.errors}+{v.errors} errors)" if d.errors or v.errors else ""
        print(f"{name:<8}{workers:>8}{conc:>5}{total:>6} | {d.pct(.5):>10.3f}{d.pct(.99):>7.2f} | "
              f"{v.pct(.5):>9.3f}{v.pct(.99):>7.2f} | {v.pct(.5) - d.pct(.5):>9.3f}"
              f"{v.pct(.99) - d.pct(.99):>7.2f} | {d.rps:>10.0f}{v.rps:>10.0f}"
              f"{v.rps / d.rps:>7.2f} | {cpu * 1000:>10.3f} ms{fake_cpu * 1000:>10.3f} ms"
              f"{errs}")
    print("\nfloor: a bare forwarding proxy on the relay's stack (bench/passthrough.py), in the "
          "same rounds as the one-process relay")
    hdr2 = (f"{'conc':>5} | {'proxy p50':>9}{'added':>7} | {'proxy rps':>9}{'ratio':>7} | "
            f"{'proxy cpu/req':>13}{'relay cpu/req':>14}{'logic cpu/req':>14}")
    print(hdr2)
    print("-" * len(hdr2))
    for name, workers, conc, _total, d, _via, cpu, _ in rows:
        if conc not in floor or workers != 1 or name != "chat":
            continue
        bare, bare_cpu = floor[conc]
        print(f"{conc:>5} | {bare.pct(.5):>9.3f}{bare.pct(.5) - d.pct(.5):>7.3f} | "
              f"{bare.rps:>9.0f}{bare.rps / d.rps:>7.2f} | {bare_cpu * 1000:>10.3f} ms"
              f"{cpu * 1000:>11.3f} ms{(cpu - bare_cpu) * 1000:>11.3f} ms"
              f"{f'  ({bare.errors} errors)' if bare.errors else ''}")
    c1 = rows[0]
    added = c1[5].pct(.5) - c1[4].pct(.5)
    print(f"\ntarget: added p50 at c=1 < 1.5 ms: {added:.3f} ms -> "
          f"{'met' if added < 1.5 else 'MISSED'}")
    if 20 in floor:
        relay_cpu, floor_cpu = rows[1][6], floor[20][1]
        ratio = relay_cpu / floor_cpu
        print(f"target: relay CPU per call at c=20 <= 2 x the floor proxy's: "
              f"{relay_cpu * 1000:.3f} / {floor_cpu * 1000:.3f} ms = {ratio:.1f} x -> "
              f"{'met' if ratio <= 2 else 'MISSED'}")
    for row in (rows[1], rows[4]):
        print(f"(relay rps at c=20 is {row[5].rps / row[4].rps:.2f} x direct with {row[1]} "
              f"worker process(es), all sharing the cores with the fake provider)")
    print(f"(direct p50 at c=1 is {statistics.median(c1[4].latencies) * 1000:.3f} ms; relay CPU "
          f"per call is {rows[1][6] / rows[1][7]:.1f}x the fake provider's at c=20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
