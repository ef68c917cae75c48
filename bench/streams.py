"""The stream rounds at concurrency 1 (bench/relay.py --streams): the added time to the first
byte and to the first content chunk, the cost per chunk, the floor proxy's row, and with
``--against`` an A/B of two relays taking turns in the same blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from dataclasses import dataclass

from loadgen import KEY, ROUNDS, Conn, build, tree_cpu_seconds
from pairs import SETTLE_S, cpu_ns, median_ci, rotation, spread, tree_pids

# Streams per turn when two relays share a block (--streams --against). Taking turns call by
# call (measured, loaded machine) put 0.5 ms on each relay's added first byte (0.8 with a 1 ms
# pause after each call): a relay's first call after a pause is slower, its caches and the
# scheduler's cold. Turns of 10 keep the figures at the blocks' of one relay alone.
STREAM_TURN = 10
LONG = 500  # content chunks of the long stream (the fake provider sends one word per chunk)


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
    return (await streams_side_by_side([(base, auth)], body, n))[0]


async def streams_side_by_side(targets: list[tuple[str, str]], body: dict[str, object], n: int,
                               flip: bool = False) -> list[StreamTimes]:
    """``n`` streamed calls to each target (url, auth), one keep-alive connection each, one
    call at a time, the targets taking turns of STREAM_TURN calls (AB BA AB ..., BA first if
    ``flip``): two relays timed this way are some 30 ms apart, so a change in the machine's
    load hits both alike."""
    conns = []
    for base, auth in targets:
        host, port, head, data = build(base, "/v1/chat/completions", body, auth)
        conns.append((Conn(host, port), head, data))
    outs = [StreamTimes([], [], []) for _ in targets]
    order = list(range(len(targets)))
    for k in range(0, n, STREAM_TURN):
        for j in order if (k // STREAM_TURN + flip) % 2 == 0 else order[::-1]:
            conn, head, data = conns[j]
            for _ in range(min(STREAM_TURN, n - k)):
                t = time.perf_counter()
                status, got = await conn.request(head, data)
                end = time.perf_counter()
                assert conn.proto is not None
                if status != 200 or not conn.proto.first_content:
                    raise SystemExit(f"stream failed: {status} {got[:200]!r}")
                outs[j].first_byte.append(conn.proto.first_byte - t)
                outs[j].first_content.append(conn.proto.first_content - t)
                outs[j].total.append(end - t)
    for conn, _, _ in conns:
        await conn.close()
    return outs


@dataclass
class StreamRound:
    """One round of the short stream, per side ("direct", "floor", "relay", with
    ``--against`` "other"): the p50 first byte of the round's streams and, per server, its CPU
    per stream from the scheduler (schedstat ns, read SETTLE_S after the last stream), in
    seconds."""

    first_byte: dict[str, float]
    cpu: dict[str, float]


@dataclass
class StreamRun:
    """One run of the stream rounds: per kind ("short", "long") and side ("direct",
    "floor", "relay"; with ``--against`` "other", short streams only) the times of every
    call, per kind the CPU seconds of the relay (``cpu``) and of the floor proxy
    (``floor_cpu``), and each round of the short stream (``rounds``)."""

    times: dict[str, StreamTimes]
    cpu: dict[str, float]
    per_round: dict[str, int]
    floor_cpu: dict[str, float]
    rounds: list[StreamRound] = dataclasses.field(default_factory=list)

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
                  scale: float, other: tuple[str, int] | None = None,
                  round0: int = 0) -> StreamRun:
    """Streams at concurrency 1: time to the first byte and to the first content chunk (what a
    chat UI shows) of a 16-chunk stream, and a LONG-chunk stream for the cost per chunk;
    direct, floor-proxy (bench/passthrough.py) and relayed rounds alternate, so all see the
    same machine load, in ABC BCA CAB order (rotated every round, pairs.rotation, counted
    from ``round0`` so that it goes on over the runs). ``other`` (url, pid) is
    ``--against``'s relay: a fourth side, for the short stream only (the A/B is judged on
    it), in this relay's block, the two taking turns of STREAM_TURN calls."""
    long_body = {**stream_body, "max_tokens": LONG}
    run = StreamRun({}, {"short": 0.0, "long": 0.0},
                    {"short": max(int(60 * scale), 10), "long": max(int(20 * scale), 4)},
                    {"short": 0.0, "long": 0.0})
    sides = [("direct", fake_url, KEY, 0), ("floor", floor_url, KEY, floor_pid),
             ("relay", relay_url, token, relay_pid)]
    if other is not None:
        sides.append(("other", other[0], token, other[1]))
    pids = {who: tree_pids(pid) for who, _, _, pid in sides if pid}
    for _, url, auth, _ in sides:
        asyncio.run(stream_times(url, stream_body, auth, 5))  # warm
    for i in range(round0, round0 + ROUNDS):
        this = StreamRound({}, {})
        for kind, b in (("short", stream_body), ("long", long_body)):
            # one block per side; with --against this relay and the other share one block,
            # taking turns of STREAM_TURN calls
            blocks = [[side] for side in sides[:3]]
            if kind == "short":
                blocks[2] += sides[3:]
            for block in rotation(blocks, i):
                c0 = {who: tree_cpu_seconds(pid) for who, _, _, pid in block if pid}
                n0 = {who: cpu_ns(pids[who]) for who, _, _, pid in block if pid}
                gots = asyncio.run(streams_side_by_side([(url, auth) for _, url, auth, _ in block],
                                                        b, run.per_round[kind], i % 2 == 1))
                if c0:
                    # a relay's settlement of the last stream belongs to this block
                    time.sleep(SETTLE_S)
                for (who, _, _, pid), got in zip(block, gots, strict=True):
                    if who == "relay":
                        run.cpu[kind] += tree_cpu_seconds(pid) - c0[who]
                    elif who == "floor":
                        run.floor_cpu[kind] += tree_cpu_seconds(pid) - c0[who]
                    if kind == "short":
                        this.first_byte[who] = statistics.median(got.first_byte)
                        if pid:
                            this.cpu[who] = (cpu_ns(pids[who]) - n0[who]) / 1e9 / len(got.total)
                    have = run.times.setdefault(f"{who} {kind}", StreamTimes([], [], []))
                    have.first_byte += got.first_byte
                    have.first_content += got.first_content
                    have.total += got.total
        run.rounds.append(this)
    return run


def stream_ab(runs: list[StreamRun]) -> tuple[list[float], list[float]]:
    """Per round of every run, this relay minus ``--against``'s: the p50 first byte of the
    short stream (ms; the direct call's cancels out, both being in the same round) and the
    CPU per short stream (ms)."""
    rounds = [r for run in runs for r in run.rounds if "other" in r.first_byte]
    return ([(r.first_byte["relay"] - r.first_byte["other"]) * 1000 for r in rounds],
            [(r.cpu["relay"] - r.cpu["other"]) * 1000 for r in rounds])


def print_streams(runs: list[StreamRun], against: str = "") -> None:
    """Each run's stream table (the relay, and the floor proxy below it), then the targets
    judged on the median over the runs (with the range beside it: one run alone is noise on a
    shared machine) and the relay's added first byte split into what the serving stack costs
    (the floor's added first byte) and what the capability logic adds on top (relay - floor);
    with ``--against`` (``against`` names the other checkout) the A/B of the two relays."""
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
    # CPU per short stream (all of it, not only the way to the first byte): steadier than the
    # times on a busy machine, which share the cores with the provider and the client.
    relay_cpu = [r.cpu_per_stream("short") * 1000 for r in runs]
    floor_cpu = [r.cpu_per_stream("short", "floor") * 1000 for r in runs]
    print(f"CPU per short stream: relay {summary(relay_cpu)} ms, floor proxy "
          f"{summary(floor_cpu)} ms, the logic (relay - floor) "
          f"{summary([a - b for a, b in zip(relay_cpu, floor_cpu, strict=True)])} ms")
    mid = statistics.median(ttfb)
    print(f"target: added time to first byte <= 0.5 ms p50 at c=1: {mid:.3f} ms -> "
          f"{'met' if mid <= 0.5 else 'MISSED'}")
    mid_chunk = statistics.median(chunk)
    print(f"target: per-chunk overhead < 20 us: {mid_chunk:.1f} us -> "
          f"{'met' if mid_chunk < 20 else 'MISSED'}")
    if against:
        print_stream_ab(runs, against)


def print_stream_ab(runs: list[StreamRun], against: str) -> None:
    """The short stream's A/B of this relay and ``--against``'s, run side by side in the same
    rounds: each one's added first byte (p50 over a run, as above) and CPU per short stream,
    and the difference this - other per round with the median's 95% confidence interval
    (median_ci: order statistics, as the pairs'). An interval that holds 0 means this run
    cannot tell the two apart."""
    def summary(values: list[float]) -> str:
        return (f"{statistics.median(values):.3f} (range {min(values):.3f}-"
                f"{max(values):.3f})")

    fb, cpu = stream_ab(runs)
    print(f"\nA/B of the short stream against {against}: its relay in the same rounds, "
          f"taking turns of {STREAM_TURN} calls with this one ({len(fb)} rounds of "
          f"{runs[0].per_round['short']} streams each way over {len(runs)} run(s))")
    for who, name in (("relay", "this relay"), ("other", "the other")):
        added = [r.added("short", "first_byte", who) for r in runs]
        per = [r.cpu[who] * 1000 for run in runs for r in run.rounds if who in r.cpu]
        print(f"  {name:<10}: added first byte {summary(added)} ms over the runs; CPU per "
              f"short stream {summary(per)} ms over the rounds")
    for what, diffs in (("p50 first byte", fb), ("CPU per short stream", cpu)):
        ci = median_ci(diffs)
        ci_text = f"{ci[0]:+.3f} to {ci[1]:+.3f} ms" if ci else "none under 6 rounds"
        print(f"  this - other, {what}, per round: {spread(diffs)} ms; 95% CI of the "
              f"median {ci_text}")
