"""Benchmark: the relay beside the gateways users would pick instead (not a timed test).

    python bench/peers.py [--quick] [--rounds N] [--seconds S]

The same upstream (the fake provider) and the same load go through four paths on loopback:

* direct: the fake provider itself (the baseline);
* relay: ``python -m reference_relay``, one process, SQLite store, a capability token with a
  budget and a token quota (verification, reservation, settlement and a ledger row per call);
* Portkey: Portkey's open-source AI gateway (npm ``@portkey-ai/gateway``, Node), routing only,
  no budgets, pointed at the fake provider with ``x-portkey-custom-host``;
* LiteLLM: the LiteLLM proxy (PyPI ``litellm[proxy]``) with a master key and no database.

The peers are installed at pinned versions into throwaway folders under ``.bench-peers/``
(delete it at will): LiteLLM into its own venv from ``bench/peers/litellm.requirements.txt``
with ``pip --require-hashes`` (every package pinned by hash; litellm 1.82.7 and 1.82.8 were
backdoored on PyPI in March 2026, and the installed version is checked before use), Portkey
with ``npm ci`` from ``bench/peers/portkey/package-lock.json``.

Load comes from wrk (Debian's package), a C load generator that is not the bottleneck here:
non-streamed and streamed chat requests at concurrency 1 and 20. Rounds alternate the four
paths (and rotate their order) so that a change in the machine's load hits all alike.
Reported per case: the median over rounds of p50 latency and requests/s per path, the
relay's added p50 at concurrency 1, and the throughput ratios relay/LiteLLM and relay/Portkey
with their range over rounds. Targets (issue tracker): at concurrency 20 the relay at least
10x LiteLLM's and 2x Portkey's throughput.

``--quick`` is a smoke run (one short round) for CI: it installs and starts every peer and
checks that each path answers 200, but its figures mean little.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import checkout
import httpx

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
CACHE = ROOT / ".bench-peers"
EXAMPLE = ROOT / "reference_relay" / "relay.example.toml"
KEY = "sk-bench-" + secrets.token_hex(12)
MASTER = "sk-litellm-bench-" + secrets.token_hex(8)
LITELLM_VERSION = "1.108.7"
BACKDOORED = {"1.82.7", "1.82.8"}
PORTKEY_VERSION = "1.15.2"
MODEL = "gpt-4o-mini"


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def install_litellm() -> Path:
    """A venv holding litellm[proxy] at the pinned version, every package checked by hash."""
    req = PEERS / "litellm.requirements.txt"
    home = CACHE / f"litellm-{_digest(req)}"
    py = home / "bin" / "python"
    if not (home / ".installed").exists():
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--require-hashes",
                        "-r", str(req)], check=True)
        (home / ".installed").touch()
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m;"
                          "print(m.version('litellm'))"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if out != LITELLM_VERSION or out in BACKDOORED:
        raise SystemExit(f"litellm {out} installed, expected {LITELLM_VERSION}: refusing to run")
    return home


def install_portkey() -> Path:
    """Portkey's gateway at the pinned version, from the lockfile (npm ci)."""
    lock = PEERS / "portkey" / "package-lock.json"
    home = CACHE / f"portkey-{_digest(PEERS / 'portkey' / 'package.json', lock)}"
    entry = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not (home / ".installed").exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PEERS / "portkey" / name, home / name)
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=home,
                       check=True)
        (home / ".installed").touch()
    pkg = json.loads((entry.parents[1] / "package.json").read_text())
    if pkg["version"] != PORTKEY_VERSION:
        raise SystemExit(f"portkey {pkg['version']} installed, expected {PORTKEY_VERSION}")
    return entry


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(cmd: list[str], url: str, ready_path: str, *, env: dict[str, str] | None = None,
           cwd: Path | None = None, headers: dict[str, str] | None = None,
           timeout: float = 120) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server and wait until ``ready_path`` answers (any HTTP status)."""
    err = None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode} before it answered")
            try:
                httpx.get(url + ready_path, headers=headers, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{cmd} did not answer within {timeout} s") from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class Path_:
    name: str
    url: str  # the chat completions URL
    headers: dict[str, str]


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
"""


def wrk(target: Path_, body: dict[str, object], concurrency: int, seconds: float,
        tmp: Path) -> tuple[float, float, int]:
    """(requests/s, p50 ms, non-2xx count) from one wrk run."""
    script = tmp / f"wrk-{target.name}.lua"
    hdrs = {"content-type": "application/json", **target.headers}
    script.write_text(WRK_SCRIPT.format(
        body=json.dumps(json.dumps(body, separators=(",", ":"))),
        headers="\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                          for k, v in hdrs.items())))
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(seconds, 1):.0f}s",
                          "--timeout", "10s", "--latency", "-s", str(script), target.url],
                         capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in", out)
    if done is None or int(done.group(1)) == 0:
        raise SystemExit(f"{target.name}: no request completed in {seconds:.0f} s:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    median = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    assert rate is not None and median is not None, out
    rps = float(rate.group(1))
    p50 = _ms(median.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return rps, p50, errors


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def ratio(per: dict[str, list[tuple[float, float, int]]], a: str, b: str) -> str:
    """Median and range over rounds of a's throughput over b's (same round)."""
    if any(x[2] for x in per[a] + per[b]):
        return "n/a (errors)"  # a path that answers errors fast is not faster
    rs = [x[0] / y[0] for x, y in zip(per[a], per[b], strict=True) if y[0] > 0]
    if not rs:
        return "n/a"
    return f"{statistics.median(rs):.1f}x ({min(rs):.1f}-{max(rs):.1f})"


def check_answers(targets: list[Path_], body: dict[str, object]) -> None:
    """Every path must answer the request with 200 before it is measured."""
    for t in targets:
        r = httpx.post(t.url, json=body, headers=t.headers, timeout=30)
        if r.status_code != 200:
            raise SystemExit(f"{t.name} answered {r.status_code}: {r.text[:300]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    args = parser.parse_args()
    print(f"code measured: {checkout.describe()}")
    # LiteLLM answers in about 0.7 s at concurrency 20 here: a run shorter than 2 s sees
    # almost none of its answers.
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (scripts/system-deps.sh does)")
    litellm_home, portkey_entry = install_litellm(), install_portkey()
    tmp = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    ports = {name: free_port() for name in ("fake", "relay", "portkey", "litellm")}
    fake_url = f"http://127.0.0.1:{ports['fake']}"
    root = RootKey.generate()
    text = EXAMPLE.read_text().replace('"https://api.openai.com/v1"', f'"{fake_url}/v1"')
    (tmp / "relay.toml").write_text(text)
    root.save(tmp / "root.key")
    (tmp / "litellm.yaml").write_text(json.dumps({
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": f"{fake_url}/v1", "api_key": KEY}}],
        "general_settings": {"master_key": MASTER},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))
    token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                        cav.App("bench")]).serialize()
    base_env = checkout.env(OPENAI_API_KEY=KEY)
    litellm_env = {**base_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DISABLE_SCHEMA_UPDATE":
                   "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
    auth = {"authorization": f"Bearer {KEY}"}
    targets = [
        Path_("direct", f"{fake_url}/v1/chat/completions", auth),
        Path_("relay", f"http://127.0.0.1:{ports['relay']}/v1/chat/completions",
              {"authorization": f"Bearer {token}"}),
        Path_("portkey", f"http://127.0.0.1:{ports['portkey']}/v1/chat/completions",
              {**auth, "x-portkey-provider": "openai",
               "x-portkey-custom-host": f"{fake_url}/v1"}),
        Path_("litellm", f"http://127.0.0.1:{ports['litellm']}/v1/chat/completions",
              {"authorization": f"Bearer {MASTER}"}),
    ]
    body: dict[str, object] = {"model": MODEL, "max_tokens": 16,
                               "messages": [{"role": "user", "content": "Say hello."}]}
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    cases = [("chat", body, 1), ("chat", body, 20), ("stream", stream, 1), ("stream", stream, 20)]
    py = sys.executable
    with (server([py, "-m", "fake_provider", "--port", str(ports["fake"]), "--api-key", KEY],
                 fake_url, "/v1/models", headers=auth),
          server([py, "-m", "reference_relay", "--config", str(tmp / "relay.toml"), "--port",
                  str(ports["relay"]), "--log-level", "warning"],
                 f"http://127.0.0.1:{ports['relay']}", "/healthz", env=base_env, cwd=tmp),
          server(["node", str(portkey_entry), f"--port={ports['portkey']}", "--headless"],
                 f"http://127.0.0.1:{ports['portkey']}", "/", env={**base_env,
                                                                   "NODE_ENV": "production"}),
          server([str(litellm_home / "bin" / "litellm"), "--config", str(tmp / "litellm.yaml"),
                  "--port", str(ports["litellm"]), "--host", "127.0.0.1", "--num_workers", "1"],
                 f"http://127.0.0.1:{ports['litellm']}", "/health/liveliness", env=litellm_env,
                 cwd=tmp, timeout=240)):
        check_answers(targets, body)
        # results[case][name] = list over rounds of (rps, p50, errors)
        results: dict[tuple[str, int], dict[str, list[tuple[float, float, int]]]] = {}
        for r in range(rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for kind, b, conc in cases:
                for t in order:
                    got = wrk(t, b, conc, seconds, tmp)
                    results.setdefault((kind, conc), {}).setdefault(t.name, []).append(got)
    print(f"bench/peers.py: {rounds} round(s) of {seconds:.0f} s per path and case, wrk, "
          f"2-core VM; litellm {LITELLM_VERSION} (proxy, no database), portkey gateway "
          f"{PORTKEY_VERSION}; medians over rounds, ratio ranges over rounds")
    print(f"{'case':<10}{'conc':>5} | " + " | ".join(
        f"{t.name:>8} rps   p50" for t in targets) + " | relay/litellm | relay/portkey")
    for (kind, conc), per in results.items():
        med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
                   sum(x[2] for x in v)) for n, v in per.items()}
        cells = " | ".join(f"{med[t.name][0]:>8.0f} {med[t.name][1]:>5.2f}" for t in targets)
        print(f"{kind:<10}{conc:>5} | {cells} | {ratio(per, 'relay', 'litellm'):>13} | "
              f"{ratio(per, 'relay', 'portkey'):>13}")
        errs = {n: m[2] for n, m in med.items() if m[2]}
        if errs:
            print(f"{'':<16}errors: {errs}")
        if conc == 1:
            added = med["relay"][1] - med["direct"][1]
            print(f"{'':<16}relay added p50: {added:.2f} ms; portkey "
                  f"{med['portkey'][1] - med['direct'][1]:.2f} ms; litellm "
                  f"{med['litellm'][1] - med['direct'][1]:.2f} ms")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
