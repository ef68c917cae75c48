"""The CPU ratio in pairs, issue 17's target: see PAIRS in bench/relay.py's docstring for the
method (why pairs, why ABBA, what is excluded), and ``--against`` for an A/B of two relays in
the same rounds."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from loadgen import KEY, TICK, Conn, build

T = TypeVar("T")

PAIRS = 24  # measured floor/relay pairs per run, ABBA order
LAUNCHES = 6  # fresh starts of the floor proxy and the relay, PAIRS / LAUNCHES pairs each
PAIR_CALLS = 400  # calls per block at concurrency PAIR_CONC
PAIR_WARM = 200  # calls to each server after its launch, not measured
PAIR_CONC = 20
SETTLE_S = 0.05  # the pause after a block's last answer before its CPU is read


def tree_pids(pid: int) -> list[int]:
    """A process and its children (a relay's worker processes), found once per run."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return pids


def cpu_ns(pids: list[int]) -> int:
    """CPU nanoseconds the threads of these processes have run (the scheduler's own count,
    /proc/PID/task/TID/schedstat, exact where /proc/PID/stat's utime + stime comes in clock
    ticks of 10 ms: a block of 400 calls is 100-250 ms of CPU, so ticks would be 4-10%)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that ended meanwhile
    return total


def switches(pids: list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of these processes' threads so far: a
    voluntary one is a thread going to sleep (a server's event loop waiting for input), an
    involuntary one a thread preempted by another."""
    vol = invol = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return vol, invol


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of all cores so far, from /proc/stat's first line: busy is
    user + nice + system + irq + softirq (not idle, not iowait, not steal)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return f[0] + f[1] + f[2] + f[5] + f[6], f[7]


def wal_checkpoints(wal: Path | None) -> int:
    """The checkpoint sequence number in a SQLite WAL file's header (bytes 12-15, big-endian):
    SQLite adds one each time a writer restarts the WAL after a checkpoint; 0 without a WAL."""
    if wal is None:
        return 0
    try:
        with wal.open("rb") as f:
            head = f.read(16)
    except OSError:
        return 0
    return int.from_bytes(head[12:16], "big") if len(head) == 16 else 0


def rotation(items: list[T], i: int) -> list[T]:
    """The order of round ``i``: ``items`` rotated left by ``i``. With two, ABBA (AB BA AB
    ...); with three, ABC BCA CAB: each is first, second and third once in every n rounds,
    and none runs twice in a row (ABC CBA ran the last one twice, at every round's end)."""
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


@dataclass
class Block:
    """One block of calls at PAIR_CONC to one server and what it cost, in seconds of CPU."""

    who: str  # "floor" or "relay"
    calls: int
    errors: int
    wall: float
    server: float  # the server's process tree
    fake: float  # the fake provider behind it
    client: float  # this load generator
    others: float  # cores busy with everything else on the machine (other users' processes)
    steal: float  # cores stolen by the hypervisor
    checkpoints: int  # the relay store's WAL restarts during the block
    idle: float  # the other server's CPU meanwhile (it has no calls: timers, a late settle)
    sleeps: int  # the server's voluntary context switches (its threads waiting for input)
    preempted: int  # the server's involuntary ones

    def per_call_ms(self) -> float:
        return self.server / self.calls * 1000


@dataclass
class PairRun:
    """The measured pairs, in run order: each a (floor block, relay block); with ``--against``
    also (floor block, the other checkout's relay block) from the same rounds."""

    pairs: list[tuple[Block, Block]]
    block: int
    launches: int
    others: list[tuple[Block, Block]] = dataclasses.field(default_factory=list)
    against: str = ""  # the other checkout, as checkout.describe() names it

    def ratios(self, pairs: list[tuple[Block, Block]] | None = None) -> list[float]:
        return [r.server / r.calls / (f.server / f.calls)
                for f, r in (self.pairs if pairs is None else pairs)]

    def pooled(self, pairs: list[tuple[Block, Block]] | None = None) -> float:
        """Sum of the relay blocks' CPU per call over the floor's: every checkpoint counted."""
        pairs = self.pairs if pairs is None else pairs
        relay = sum(r.server for _, r in pairs) / sum(r.calls for _, r in pairs)
        floor = sum(f.server for f, _ in pairs) / sum(f.calls for f, _ in pairs)
        return relay / floor


async def _pair_blocks(targets: dict[str, tuple[str, str, list[int]]], fake_pids: list[int],
                       body: dict[str, object], pairs: int, block: int,
                       wals: dict[str, Path], round0: int = 0) -> list[Block]:
    """Warm the servers with PAIR_WARM calls each, then run ``pairs`` rounds of one block per
    server, the order rotated every round (``rotation``, counted from ``round0``): ABBA (floor
    relay, relay floor, ...), with a third server ABC BCA CAB. Each server keeps its PAIR_CONC
    keep-alive connections for the whole launch, so no block pays for connecting."""
    conns: dict[str, list[Conn]] = {}
    reqs: dict[str, tuple[bytes, bytes]] = {}
    for who, (url, auth, _) in targets.items():
        host, port, head, data = build(url, "/v1/chat/completions", body, auth)
        conns[who] = [Conn(host, port) for _ in range(PAIR_CONC)]
        reqs[who] = (head, data)
    per_conn = max(block // PAIR_CONC, 1)
    names = list(targets)
    idle = {who: [pid for name in names if name != who for pid in targets[name][2]]
            for who in names}
    hz = TICK

    async def worker(conn: Conn, head: bytes, data: bytes, n: int) -> int:
        errors = 0
        for _ in range(n):
            status, _ = await conn.request(head, data)
            errors += status != 200
        return errors

    for who, cs in conns.items():
        await asyncio.gather(*(worker(c, *reqs[who], PAIR_WARM // PAIR_CONC) for c in cs))
    blocks: list[Block] = []
    for i in range(pairs):
        for who in rotation(names, round0 + i):
            head, data = reqs[who]
            pids, wal = targets[who][2], wals.get(who)
            s0, f0, c0 = cpu_ns(pids), cpu_ns(fake_pids), time.process_time_ns()
            k0, t0, w0 = machine_ticks(), time.perf_counter(), wal_checkpoints(wal)
            i0, x0 = cpu_ns(idle[who]), switches(pids)
            errors = sum(await asyncio.gather(*(worker(c, head, data, per_conn)
                                                for c in conns[who])))
            wall = time.perf_counter() - t0
            # A relay's work after its last answer (a settlement's commit, a checkpoint on the
            # store's thread) belongs to this block: let it finish before reading the CPU.
            await asyncio.sleep(SETTLE_S)
            s1, f1, c1 = cpu_ns(pids), cpu_ns(fake_pids), time.process_time_ns()
            i1, x1 = cpu_ns(idle[who]), switches(pids)
            k1, w1 = machine_ticks(), wal_checkpoints(wal)
            span = time.perf_counter() - t0  # the block and the pause after it
            server, fake, client = (s1 - s0) / 1e9, (f1 - f0) / 1e9, (c1 - c0) / 1e9
            busy = (k1[0] - k0[0]) / hz
            blocks.append(Block(who, per_conn * PAIR_CONC, errors, wall, server, fake, client,
                                max(busy - server - fake - client - (i1 - i0) / 1e9, 0.0) / span,
                                (k1[1] - k0[1]) / hz / span,
                                w1 - w0, (i1 - i0) / 1e9,
                                x1[0] - x0[0], x1[1] - x0[1]))
    for cs in conns.values():
        for c in cs:
            await c.close()
    return blocks


@dataclass
class PairServers:
    """One launch of the floor proxy and the one-process relay for the pairs."""

    floor: tuple[subprocess.Popen[str], str]
    relay: tuple[subprocess.Popen[str], str]
    wal: Path  # the relay store's WAL file
    other: tuple[subprocess.Popen[str], str] | None = None  # --against's relay
    other_wal: Path | None = None


def pair_rounds(launch: Callable[[int], PairServers], launches: int, fake_pid: int, token: str,
                body: dict[str, object], pairs: int, block: int) -> PairRun:
    """``pairs`` floor/relay pairs at concurrency 20 in ABBA order on each of ``launches``
    fresh launches of the two servers (with ``--against``'s relay, ABC BCA CAB, the rotation
    going on over the launches); see PAIRS in the docstring."""
    out: list[tuple[Block, Block]] = []
    others: list[tuple[Block, Block]] = []
    for k in range(launches):
        servers = launch(k)
        procs = [servers.floor, servers.relay]
        wals = {"relay": servers.wal}
        try:
            targets = {"floor": (servers.floor[1], KEY, tree_pids(servers.floor[0].pid)),
                       "relay": (servers.relay[1], token, tree_pids(servers.relay[0].pid))}
            if servers.other is not None:
                procs.append(servers.other)
                targets["other"] = (servers.other[1], token, tree_pids(servers.other[0].pid))
                if servers.other_wal is not None:
                    wals["other"] = servers.other_wal
            blocks = asyncio.run(_pair_blocks(targets, [fake_pid], body, pairs, block, wals,
                                              k * pairs))
        finally:
            for proc, _ in procs:
                proc.terminate()
            for proc, _ in procs:
                proc.wait(timeout=30)
        n = len(targets)
        for i in range(0, len(blocks), n):
            by = {b.who: b for b in blocks[i:i + n]}
            out.append((by["floor"], by["relay"]))
            if "other" in by:
                others.append((by["floor"], by["other"]))
    return PairRun(out, block, launches, others)


def median_ci(values: list[float]) -> tuple[float, float] | None:
    """A confidence interval of at least 95% for the median, from order statistics (no
    assumption about the values' distribution): the k-th smallest and the k-th largest value,
    k the largest rank with P(fewer than k of n values below the median) <= 2.5% (n = 24:
    the 7th and the 18th). None under 6 values, where no such interval exists."""
    n, s = len(values), sorted(values)
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2**n <= 0.025:
        below += math.comb(n, k) / 2**n
        k += 1
    return (s[k - 1], s[n - k]) if k else None


def spread(values: list[float], fmt: str = ".3f") -> str:
    """``median (IQR q1-q3, range min-max)`` of at least two values."""
    q1, mid, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (f"{mid:{fmt}} (IQR {q1:{fmt}}-{q3:{fmt}}, range {min(values):{fmt}}-"
            f"{max(values):{fmt}})")


def print_pairs(run: PairRun) -> float:
    """The pair table's summary; returns the median of the pair ratios."""
    floors = [f for f, _ in run.pairs]
    relays = [r for _, r in run.pairs]
    ratios = run.ratios()
    mid = statistics.median(ratios)
    ci = median_ci(ratios)
    allb = floors + relays
    print(f"\nCPU per call in pairs at c={PAIR_CONC}: {len(run.pairs)} pairs of a floor block and "
          f"a relay block of {run.block} calls each, "
          f"{'ABC BCA CAB order with --against' if run.others else 'ABBA order'}, "
          f"on {run.launches} fresh "
          f"launch(es) of both servers (each warmed with {PAIR_WARM} calls); CPU from the "
          f"scheduler (/proc/PID/task/*/schedstat), ms per call")
    print(f"  floor proxy  {spread([b.per_call_ms() for b in floors])}")
    print(f"  relay        {spread([b.per_call_ms() for b in relays])}")
    ci_text = (f"{ci[0]:.2f}-{ci[1]:.2f}" if ci is not None
               else "none under 6 pairs")
    print(f"  ratio per pair {spread(ratios, '.2f')}; 95% confidence interval of the median "
          f"{ci_text}; at or under 2x in "
          f"{sum(x <= 2 for x in ratios)} of {len(ratios)}; pooled (all relay CPU over all "
          f"floor CPU) {run.pooled():.2f}x")
    cp = [r.checkpoints for r in relays]
    with_ck = [x for x, c in zip(ratios, cp, strict=True) if c]
    without = [x for x, c in zip(ratios, cp, strict=True) if not c]
    split = "; ".join(f"median ratio of the pairs {name} one {statistics.median(xs):.2f}"
                      for name, xs in (("with", with_ck), ("without", without)) if xs)
    print(f"  relay blocks with a WAL checkpoint: {len(with_ck)} of {len(cp)} "
          f"({sum(cp)} checkpoints){'; ' + split if split else ''}")
    fake = statistics.median(b.fake / b.calls for b in allb) * 1000
    client = statistics.median(b.client / b.calls for b in allb) * 1000
    print(f"  per block, median: fake provider {fake:.3f} ms/call, load generator {client:.3f} "
          f"ms/call; other processes {statistics.median(b.others for b in allb):.2f} cores "
          f"(range {min(b.others for b in allb):.2f}-{max(b.others for b in allb):.2f}); steal "
          f"{statistics.median(b.steal for b in allb):.2f} cores")
    if run.others:
        theirs = run.ratios(run.others)
        ci = median_ci(theirs)
        print(f"  --against {run.against}: relay "
              f"{spread([r.per_call_ms() for _, r in run.others])}; ratio per pair "
              f"{spread(theirs, '.2f')}; 95% CI of the median "
              f"{f'{ci[0]:.2f}-{ci[1]:.2f}' if ci else 'none under 6 pairs'}; pooled "
              f"{run.pooled(run.others):.2f}x")
        ab = [r.server / r.calls / (o.server / o.calls)
              for (_, r), (_, o) in zip(run.pairs, run.others, strict=True)]
        ci = median_ci(ab)
        print(f"  A/B in the same rounds: this relay's CPU per call over the other's, per round: "
              f"{spread(ab, '.3f')}; 95% CI of the median "
              f"{f'{ci[0]:.3f}-{ci[1]:.3f}' if ci else 'none under 6 rounds'}")
        # The load generator's work per call is the same for both relays (same request, same
        # answer), so its CPU per call in a block measures how fast the machine ran that block:
        # each relay's CPU per call over the load generator's in its own block takes out the
        # factor common to every process (r = 0.84-0.93 between the two ratios per round,
        # measured; the spread per round halves).
        speed = [r.server / r.client / (o.server / o.client)
                 for (_, r), (_, o) in zip(run.pairs, run.others, strict=True)
                 if r.client > 0 and o.client > 0]
        ci = median_ci(speed)
        if speed:
            print(f"  A/B, each block's CPU over the load generator's in it: "
                  f"{spread(speed, '.3f') if len(speed) > 1 else f'{speed[0]:.3f}'}; 95% CI "
                  f"of the median {f'{ci[0]:.3f}-{ci[1]:.3f}' if ci else 'none under 6 rounds'}")
        allb += [o for _, o in run.others]
    errors = sum(b.errors for b in allb)
    if errors:
        print(f"  ({errors} calls failed)")
    return mid


def judge_pairs(run: PairRun) -> None:
    mid = print_pairs(run)
    print(f"target (pairs): relay CPU per call at c={PAIR_CONC} <= 2 x the floor proxy's, median "
          f"of {len(run.pairs)} pair ratios: {mid:.2f} x -> {'met' if mid <= 2 else 'MISSED'}")
