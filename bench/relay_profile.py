"""Where the relay's CPU per call goes: a profile of the one-process relay under load.

    python bench/relay_profile.py [--calls N] [--concurrency C] [--sampler cprofile|py-spy]
                                  [--top N] [--out FILE]
    python bench/relay_profile.py --sampler none [--rounds R] [--in-process]
    python bench/relay_profile.py --sampler callgrind [--calls N]

Not a benchmark (bench/relay.py measures; this explains). One run, on loopback: the fake
provider and a one-process relay (``python -m reference_relay``, as deployed, in a subprocess),
warmed up, then ``--calls`` plain chat calls at ``--concurrency`` (the load generator of
bench/relay.py). With ``--passthrough`` the floor proxy (bench/passthrough.py) is profiled
the same way instead, for comparison.

Samplers:

* ``yappi`` (default; ``pip install yappi``): the relay runs under yappi with its CPU clock, so
  a function's time is CPU spent in it, not wall time: a socket write that wakes the peer
  process and loses the core to it shows as its few microseconds of CPU, not the wait (a
  wall-clock profiler charges that wait to the write). Printed: the top functions by own
  and by inclusive CPU time, per request. yappi's own cost inflates every figure (the relay
  runs several times slower under it): read the shares and the ranking.

* ``none``: no profile; the relay and the floor proxy run side by side, ``--rounds`` alternating
  rounds of ``--calls`` each, and the CPU per call of each (user and system apart) and their
  ratio are printed per round: a quick check of a change against the floor, the same split as
  bench/relay.py's floor table without its other rows; below each round, the relay's writes
  per call (write calls, bytes, bytes to the disk) and its SQLite worker thread's CPU: the
  store's share of its system time (see _io). ``--in-process`` drives the relay's and the
  floor's ASGI apps in this one process instead (no uvicorn, no sockets from a client):
  on a loaded machine its rounds spread far less, so an A/B of two versions of the code
  (run it from each checkout in turn) shows changes of 10% that the three-process rounds hide.

* ``callgrind``: instructions per call of the relay and of the floor (valgrind's callgrind,
  ``apt-get install valgrind``), each ASGI app driven in-process as ``--in-process`` does:
  a count that hardly moves with the machine's load (two runs of one tree agreed within 1%:
  the SQLite store's commit batches vary with timing), for an A/B of two versions of the
  code on a busy machine (run it from each checkout in turn; a few minutes per run, the
  code runs some 50 times slower under valgrind: ``--calls 1000`` is plenty). A difference
  under 2% is noise. Instructions are not time: read it beside a timed run.
* ``cprofile``: the relay runs under ``python -m cProfile``; printed are the Python
  function calls per request (what "about 500 calls per request" counts) and the top
  functions by own time and by cumulative time. cProfile's own cost per call inflates the
  times of small functions: read the ranking and the call counts, not the absolute figures.
* ``py-spy``: samples the running relay (``pip install py-spy``; needs ptrace, i.e. root or
  ``kernel.yama.ptrace_scope=0``) without pausing it, only while a thread holds the GIL (so
  the SQLite worker thread waiting for work is not counted); ``--native`` adds the frames of C
  extensions. ``--out`` writes a speedscope file; the top functions by own and by inclusive
  samples are printed. Low overhead, so its shares are close to the real ones, time in C
  (JSON, SQLite, the event loop) attributed to its Python caller.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkout
from loadgen import KEY, ROOT, TICK, cpu_seconds, load, start
from relay import EXAMPLE

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

BODY: dict[str, object] = {"model": "gpt-4o-mini", "max_tokens": 16,
                           "messages": [{"role": "user", "content": "Say hello."}]}


def _relay_dir(tmp: Path, fake_url: str, root: RootKey) -> Path:
    text = EXAMPLE.read_text()
    for url in ("https://api.openai.com/v1", "https://api.deepseek.com/v1",
                "http://127.0.0.1:11434/v1"):
        text = text.replace(f'"{url}"', f'"{fake_url}/v1"')
    text = text.replace('"https://api.anthropic.com"', f'"{fake_url}"')
    (tmp / "relay.toml").write_text(text)
    root.save(tmp / "root.key")
    return tmp


def _print_cprofile(path: Path, calls: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]  # typeshed leaves out the raw table
    total_calls = sum(v[1] for v in raw.values())  # primitive + recursive calls
    print(f"\ncProfile: {total_calls} Python function calls in the whole run, about "
          f"{total_calls / calls:.0f} per request (startup and warm-up included)\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def _run_under_yappi(out: str, argv: list[str]) -> None:
    """The child side of ``--sampler yappi``: run ``argv`` (``-m module ...`` or a script) as
    ``python`` would, under yappi's CPU clock, and save the stats (pstats format) on exit."""
    import runpy

    import yappi

    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")


def _print_yappi(path: Path, calls: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]  # typeshed leaves out the raw table
    total = max(v[3] for v in raw.values())

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        file = file.replace(str(ROOT) + "/", "")
        if "site-packages/" in file:
            file = file.split("site-packages/", 1)[1]
        elif "/lib/python3" in file:
            file = "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return f"{func} ({file}:{line})"

    print(f"\nyappi (CPU clock): {total:.2f} s in the whole run; per request, under yappi:")
    for title, col in (("own", 2), ("inclusive", 3)):
        print(f"\ntop {top} by {title} CPU time: us per request, share, calls per request")
        rows = sorted(raw.items(), key=lambda kv: kv[1][col], reverse=True)[:top]
        for key, v in rows:
            print(f"{v[col] / calls * 1e6:8.1f} {100 * v[col] / total:5.1f}% "
                  f"{v[1] / calls:6.2f}  {name(key)}")


def _print_speedscope(path: Path, top: int) -> None:
    """Own and inclusive sample counts per frame from a py-spy speedscope file."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: collections.Counter[int] = collections.Counter()
    incl: collections.Counter[int] = collections.Counter()
    n = 0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            n += weight
            if stack:
                own[stack[-1]] += weight
            for f in set(stack):
                incl[f] += weight

    def name(i: int) -> str:
        f = frames[i]
        file = f.get("file", "").replace(str(ROOT) + "/", "")
        if "site-packages/" in file:
            file = file.split("site-packages/", 1)[1]
        return f"{f['name']} ({file}:{f.get('line', '?')})"

    print(f"\npy-spy: {n:.1f} s sampled")
    for title, counter in (("own", own), ("inclusive", incl)):
        print(f"\ntop {top} by {title} samples")
        for i, c in counter.most_common(top):
            print(f"{100 * c / n:6.1f}%  {name(i)}")


def _times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _io(pid: int) -> tuple[int, int, int, float]:
    """What a process has written so far: (write system calls, bytes handed to write calls,
    bytes it sent to the disk itself, CPU seconds of its threads other than the main one).

    For the relay: beyond the floor's two socket writes per call, every other write call is
    SQLite's (two pwrite calls per WAL frame), and the bytes it sends to the disk are the WAL
    written back when the store's worker thread checkpoints (synchronous=NORMAL syncs the WAL
    then): the write calls per call follow its commits per call, which follow the machine's
    load (issue 17). The other threads' CPU is that worker's (checkpoints, their syncs and the
    commit after each), counted in the process's CPU as the rest is.

    Measured (2026-12-07, quiet VM, perf record -e cpu-clock of each server, 12,000 calls at
    c=20): of the relay's kernel time per call beyond the floor's, pwrite is about a third,
    fdatasync (the worker) and fcntl (WAL locks, six per commit) a seventh together, and as
    much as pwrite is its socket writes costing more than the floor's same writes (thread
    CPU around the response's write: 11-15 us against 6-7 us; the upstream request's 5
    against 4): each write wakes a peer (the client, the provider), which sleeps more often
    when the server takes longer per call. That part is not the store's, and no count here
    shows it."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name != str(pid):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            others += (int(fields[11]) + int(fields[12])) / TICK
    return int(io["syscw"]), int(io["wchar"]), int(io["write_bytes"]), others


def _compare(fake_url: str, d: Path, root: RootKey, calls: int, conc: int, rounds: int) -> None:
    """The relay and the floor proxy in alternating rounds: CPU per call of each."""
    env = checkout.env(OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY)
    relay, relay_url = start([sys.executable, "-m", "reference_relay", "--config",
                              str(d / "relay.toml"), "--port", "0", "--log-level", "warning"],
                             "listening", env=env, cwd=d)
    proxy, proxy_url = start([sys.executable, str(ROOT / "bench" / "passthrough.py"),
                              "--upstream", f"{fake_url}/v1", "--key", KEY, "--port", "0"],
                             "listening")
    token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                        cav.App("bench")]).serialize()
    targets = (("floor", proxy, proxy_url, KEY), ("relay", relay, relay_url, token))
    ratios = []
    try:
        for _, _proc, url, auth in targets:
            asyncio.run(load(url, "/v1/chat/completions", BODY, auth, conc, max(calls // 5, conc),
                             0))
        print(f"CPU per call at concurrency {conc}, {calls} calls per round (ms: user + system)")
        for i in range(rounds):
            got = {}
            relay_io = [0.0, 0.0, 0.0, 0.0]
            for name, proc, url, auth in targets:
                u0, s0 = _times(proc.pid)
                io0 = _io(proc.pid)
                r = asyncio.run(load(url, "/v1/chat/completions", BODY, auth, conc, calls, 0))
                u1, s1 = _times(proc.pid)
                io1 = _io(proc.pid)
                n = len(r.latencies)
                got[name] = ((u1 - u0) / n * 1000, (s1 - s0) / n * 1000, r.errors)
                if name == "relay":
                    relay_io = [(b - a) / n for a, b in zip(io0, io1, strict=True)]
            (fu, fs, fe), (ru, rs, re_) = got["floor"], got["relay"]
            ratios.append((ru + rs) / (fu + fs))
            print(f"round {i + 1}: floor {fu + fs:.3f} ({fu:.3f} + {fs:.3f})  relay "
                  f"{ru + rs:.3f} ({ru:.3f} + {rs:.3f})  logic {ru + rs - fu - fs:.3f}  "
                  f"ratio {ratios[-1]:.2f}x" + (f"  errors {fe}+{re_}" if fe or re_ else ""))
            calls_w, wchar, disk, worker = relay_io
            print(f"  relay per call: {calls_w:.2f} write calls, {wchar / 1024:.1f} KiB "
                  f"written, {disk / 1024:.1f} KiB to disk, store worker thread "
                  f"{worker * 1e6:.1f} us CPU (see _io)")
        print(f"ratio relay/floor: median {statistics.median(ratios):.2f}x, "
              f"{min(ratios):.2f}-{max(ratios):.2f}; load average {os.getloadavg()[0]:.2f}")
    finally:
        for p in (relay, proxy):
            p.terminate()
            p.wait(timeout=30)


def _asgi_scope(auth: str, length: int) -> dict[str, object]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + auth.encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(length).encode())]}


async def _drive(app: Any, auth: str, calls: int, conc: int) -> int:
    """``calls`` requests through an ASGI app, ``conc`` at a time; the number that failed."""
    data = json.dumps(BODY, separators=(",", ":")).encode()
    errors = 0

    async def one() -> None:
        nonlocal errors
        given = False
        status = 0

        async def receive() -> dict[str, object]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the call runs to its end
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await app(_asgi_scope(auth, len(data)), receive, send)
        errors += status != 200

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await asyncio.gather(*(worker(calls // conc) for _ in range(conc)))
    return errors


def _in_process(fake_url: str, d: Path, root: RootKey, calls: int, conc: int,
                rounds: int) -> None:
    """The relay's ASGI app and the floor's, driven in this process (no HTTP server, no
    load generator process): process CPU per call, alternating rounds. What it leaves out
    (uvicorn, the sockets from the client) is the same for both, so the difference is the
    capability logic with less of the machine's noise than three processes have."""
    import gc

    from passthrough import Forward
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from reference_relay.app import RequestGuard, create_app
    from reference_relay.config import load_config

    os.environ["OPENAI_API_KEY"] = KEY
    token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                        cav.App("bench")]).serialize()

    async def run() -> None:
        relay_app = create_app(load_config(d / "relay.toml"))
        floor_app = Starlette(
            routes=[Route("/v1/chat/completions", Forward(f"{fake_url}/v1", KEY),
                          methods=["POST"])],
            middleware=[Middleware(RequestGuard, allowed=("127.0.0.1", "localhost"))])
        targets = (("floor", floor_app, KEY), ("relay", relay_app, token))
        for _, app, auth in targets:  # warm: connections, caches, statements
            await _drive(app, auth, max(calls // 5, conc), conc)
        gc.freeze()  # as the relay's process does (reference_relay.__main__._tune_gc)
        gc.set_threshold(20_000, 50, 1000)
        print(f"CPU per call at concurrency {conc} in one process (us), {calls} calls per round")
        ratios = []
        for i in range(rounds):
            got = {}
            for name, app, auth in targets:
                t0 = time.process_time()
                errors = await _drive(app, auth, calls, conc)
                got[name] = (time.process_time() - t0) / calls * 1e6
                if errors:
                    raise SystemExit(f"{name}: {errors} calls failed")
            ratios.append(got["relay"] / got["floor"])
            print(f"round {i + 1}: floor {got['floor']:.1f}  relay {got['relay']:.1f}  logic "
                  f"{got['relay'] - got['floor']:.1f}  ratio {ratios[-1]:.2f}x")
        print(f"ratio relay/floor: median {statistics.median(ratios):.2f}x, "
              f"{min(ratios):.2f}-{max(ratios):.2f}; load average {os.getloadavg()[0]:.2f}")
        await relay_app.state.relay.aclose()

    try:  # the relay's loop when installed, as uvicorn picks it
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


def _count_child(target: str, calls: int, warm: int, conc: int, d: Path,
                 fake_url: str) -> None:
    """The child side of ``--sampler callgrind``: build ``target``'s ASGI app (relay or
    floor) as --in-process does, warm it up with ``warm`` calls, then drive ``calls`` calls
    (none: the run that is subtracted, start-up and warm-up alone)."""
    import gc

    from passthrough import Forward
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from reference_relay.app import RequestGuard, create_app
    from reference_relay.config import load_config

    key = (d / "provider.key").read_text()  # the fake provider's (KEY is per process)
    os.environ["OPENAI_API_KEY"] = key

    async def run() -> None:
        if target == "relay":
            app: Any = create_app(load_config(d / "relay.toml"))
            auth = (d / "token").read_text()
        else:
            app = Starlette(
                routes=[Route("/v1/chat/completions", Forward(f"{fake_url}/v1", key),
                              methods=["POST"])],
                middleware=[Middleware(RequestGuard, allowed=("127.0.0.1", "localhost"))])
            auth = key
        await _drive(app, auth, warm, conc)
        gc.freeze()
        gc.set_threshold(20_000, 50, 1000)
        store = app.state.relay.store if target == "relay" else None
        commits = getattr(store, "commits", 0)
        if calls and await _drive(app, auth, calls, conc):
            raise SystemExit(f"{target}: calls failed")
        # The SQLite store's commits during the counted calls (its batches follow timing)
        print(f"commits: {getattr(store, 'commits', 0) - commits}", file=sys.stderr)

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


def _callgrind(fake_url: str, d: Path, root: RootKey, calls: int, conc: int) -> None:
    """Instructions per call of the relay and of the floor, counted by valgrind's callgrind:
    each app driven in-process (as --in-process) in a child under callgrind, once with
    ``calls`` calls and once with none, the difference divided by ``calls``. The count
    hardly depends on what else the machine runs (within 1% between runs: the store's
    commit batches follow timing), so it shows a change of a few percent that wall-clock
    rounds on a loaded machine cannot (it is not time: a cache miss or a system call's
    kernel side costs more than its instructions)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    (d / "provider.key").write_text(KEY)
    (d / "token").write_text(mint(root, [cav.Budget(10**9, "USD", "month"),
                                         cav.TokenQuota(10**12, "month"),
                                         cav.App("bench")]).serialize())
    env = checkout.env(PYTHONHASHSEED="0")
    # Both runs of a target start alike and warm up alike, so that what they share cancels:
    # - each on a new store file: the second run used to open the file the first had filled
    #   (1,400 calls' rows), while the first created it, a difference of some 2 K
    #   instructions per call counted as the relay's (its schema's CREATE statements);
    # - warmed up with twice the counted calls at the same concurrency: the SQLite store
    #   prepares one statement per batch size it meets (each number of rows of a multi-row
    #   INSERT is a statement of its own, kept for the process's life), and after 400 calls
    #   the counted calls still met new sizes: 3 K instructions per call in sqlite3_prepare
    #   alone (10-12 K with the Python side), which a relay pays once per size, in its first
    #   minutes, not per call (after 2,000 warm-up calls: 0.3 K).
    warm = max(2 * calls, conc, 400)

    commits: dict[str, int] = {}

    def collected(target: str, n: int) -> int:
        for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
            (d / name).unlink(missing_ok=True)
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             str(Path(__file__).resolve()), "--count-child", target, str(n), str(warm),
             str(conc), str(d), fake_url], env=env, capture_output=True, text=True,
            check=True)
        found = [line for line in run.stderr.splitlines() if "Collected :" in line]
        if not found:
            raise SystemExit(f"callgrind printed no count:\n{run.stderr[-2000:]}")
        if n:
            commits[target] = int(next(line for line in run.stderr.splitlines()
                                       if line.startswith("commits: ")).split()[-1])
        return int(found[-1].split()[-1])

    got = {}
    for target in ("floor", "relay"):
        got[target] = (collected(target, calls) - collected(target, 0)) / calls
    print(f"instructions per call at concurrency {conc}, in-process, {calls} calls "
          f"(callgrind): floor {got['floor']:,.0f}  relay {got['relay']:,.0f}  logic "
          f"{got['relay'] - got['floor']:,.0f}  ratio {got['relay'] / got['floor']:.2f}x; "
          f"store commits per relay call {commits['relay'] / calls:.3f} (each commit's cost "
          "is shared by the calls of its batch, so the count moves with it: compare two "
          "runs at like commits per call)")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--run-under-yappi":
        _run_under_yappi(sys.argv[2], sys.argv[3:])
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--count-child":
        child = sys.argv[2:8]  # target, calls, warm-up, concurrency, relay dir, provider URL
        _count_child(child[0], int(child[1]), int(child[2]), int(child[3]), Path(child[4]),
                     child[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=6000, help="profiled calls (default 6000)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--sampler", choices=["yappi", "cprofile", "py-spy", "none",
                                              "callgrind"], default="yappi")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --sampler none")
    parser.add_argument("--in-process", action="store_true",
                        help="--sampler none: drive both ASGI apps in this process")
    parser.add_argument("--passthrough", action="store_true",
                        help="profile the floor proxy (bench/passthrough.py) instead")
    parser.add_argument("--native", action="store_true",
                        help="py-spy: include frames of C extensions (uvloop, sqlite3, json)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    parser.add_argument("--out", type=Path, help="keep the profile here (pstats or speedscope)")
    args = parser.parse_args()
    print(f"code measured: {checkout.describe()}")
    if args.sampler == "yappi":
        try:
            import yappi  # noqa: F401
        except ImportError:
            raise SystemExit("yappi is not installed: pip install yappi (or --sampler "
                             "cprofile, which needs nothing)") from None
    if args.sampler == "py-spy" and shutil.which("py-spy") is None and not (
            Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="relay-profile-"))
    fake, fake_url = start([sys.executable, "-m", "fake_provider", "--port", "0",
                            "--api-key", KEY], "listening")
    root = RootKey.generate()
    d = _relay_dir(tmp, fake_url, root)
    if args.sampler == "callgrind":
        try:
            _callgrind(fake_url, d, root, args.calls, args.concurrency)
        finally:
            fake.terminate()
            fake.wait(timeout=30)
        return 0
    if args.sampler == "none":
        try:
            compare = _in_process if args.in_process else _compare
            compare(fake_url, d, root, args.calls, args.concurrency, args.rounds)
        finally:
            fake.terminate()
            fake.wait(timeout=30)
        return 0
    out = args.out or tmp / ("relay.json" if args.sampler == "py-spy" else "relay.pstats")
    if args.passthrough:
        cmd = [str(ROOT / "bench" / "passthrough.py"), "--upstream", f"{fake_url}/v1",
               "--key", KEY, "--port", "0"]
        auth = KEY
    else:
        cmd = ["-m", "reference_relay", "--config", str(d / "relay.toml"), "--port", "0",
               "--log-level", "warning"]
        auth = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                           cav.App("bench")]).serialize()
    if args.sampler == "cprofile":
        cmd = ["-m", "cProfile", "-o", str(out), *cmd]
    elif args.sampler == "yappi":
        cmd = [str(Path(__file__).resolve()), "--run-under-yappi", str(out), *cmd]
    env = checkout.env(OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY)
    server, url = start([sys.executable, *cmd], "listening", env=env, cwd=d)
    spy: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(load(url, "/v1/chat/completions", BODY, auth, args.concurrency,
                         max(args.calls // 5, args.concurrency), 0))
        if args.sampler == "py-spy":
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen([exe, "record", "--pid", str(server.pid), "--rate", "1000",
                                    "--format", "speedscope", "--output", str(out), "--gil",
                                    "--nonblocking", *(["--native"] if args.native else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let it attach
        c0 = cpu_seconds(server.pid)
        result = asyncio.run(load(url, "/v1/chat/completions", BODY, auth, args.concurrency,
                                  args.calls, 0))
        cpu = cpu_seconds(server.pid) - c0
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        server.send_signal(signal.SIGINT)  # cProfile writes its file as the server returns
        server.wait(timeout=60)
        fake.terminate()
        fake.wait(timeout=30)
    n = len(result.latencies)
    print(f"{'passthrough' if args.passthrough else 'relay'}: {n} calls at concurrency "
          f"{args.concurrency}, {result.errors} errors, {cpu / n * 1000:.3f} ms CPU per call "
          f"under the {args.sampler} sampler; profile in {out}")
    if args.sampler == "cprofile":
        _print_cprofile(out, n + max(args.calls // 5, args.concurrency), args.top)
    elif args.sampler == "yappi":
        _print_yappi(out, n + max(args.calls // 5, args.concurrency), args.top)
    else:
        _print_speedscope(out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
