"""Several real relay processes on one Redis, against a fake provider process, on loopback.

Each relay is ``python -m reference_relay --config relay.toml --port 0`` (the command an
operator runs); the fake provider is ``python -m fake_provider --port 0``. Both
announce their URL on the first line of stdout. Their logs go to files in the test's temp
directory (read them after a failure). Configs start from the test models of relay_harness
(prices in its docstring) with the store pointed at Redis under a fresh key prefix, so tests
share one redis-server without seeing each other's data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from relay_harness import FAKE_KEY, TEST_PRICE, config_data

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.store import LedgerEntry, Store, open_store
from capwallet.token import Token, mint
from capwallet.verify import Verifier
from reference_relay.app import counter_keys

HELLO = [{"role": "user", "content": "hello there"}]
START_TIMEOUT = 20.0


class Process:
    """A child process that prints ``... listening on URL`` first; stderr goes to a file."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Process:
        err = self.log.open("a")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True,
                                     env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL)
        err.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.readline()
            line += chunk
            if line.endswith("\n"):
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        if " listening on http" not in line:
            self.stop()
            raise RuntimeError(f"{self.args[2]} did not start: {line!r}; "
                               f"log: {self.log.read_text(errors='replace')[-3000:]}")
        self.url = line.split()[-1]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no settlement, as in a crash."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_fake(tmp: Path) -> Process:
    return Process([sys.executable, "-m", "fake_provider", "--port", "0",
                    "--api-key", FAKE_KEY], tmp / "fake.log").start()


@dataclass
class Fleet:
    """N relay processes sharing one store, one root key and one fake provider."""

    tmp: Path
    fake_url: str
    store_url: str
    root: RootKey
    config: Path
    relays: list[Process] = field(default_factory=list)
    _store: Store | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    # -- processes --------------------------------------------------------------------------

    def start_relay(self) -> Process:
        i = len(self.relays)
        env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "ANTHROPIC_API_KEY": FAKE_KEY}
        p = Process([sys.executable, "-m", "reference_relay", "--config", str(self.config),
                     "--port", "0", "--log-level", "warning"], self.tmp / f"relay{i}.log",
                    env=env, cwd=self.tmp).start()
        self.relays.append(p)
        return p

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.relays if r.alive()]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for r in self.relays:
            r.stop()
        if self._store is not None:
            self.run(self._store.close())
        if self._loop is not None:
            self._loop.close()

    # -- tokens and the test's own store handle -------------------------------------------------

    def mint(self, *caveats: cav.Caveat) -> str:
        return mint(self.root, list(caveats)).serialize()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on this fleet's own loop (a Redis client belongs to one loop)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store

    def ledger(self, tok: str) -> list[LedgerEntry]:
        rows: list[LedgerEntry] = self.run(
            self.store.ledger(token_ids=[Token.parse(tok).token_id], limit=100_000))
        return rows

    def wait_ledger(self, tok: str, n: int, timeout: float = 20,
                    status: str | None = None) -> list[LedgerEntry]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.ledger(tok)
            hits = rows if status is None else [r for r in rows if r.status == status]
            if sum(r.count for r in hits) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def counters(self, tok: str, at: int | None = None) -> dict[str, int]:
        """Used value of each of the token's counters, keyed by kind (budget, quota, rate), in
        the periods of time ``at`` (default now: a per-minute rate reads 0 once the minute of
        the calls has passed)."""
        v = Verifier(Keyring([self.root])).check_token(tok)
        keys = counter_keys(v.limits, int(time.time()) if at is None else at)
        used: dict[str, int] = self.run(self.store.counters(keys))
        return {c.kind: used[k] for c, k in zip(v.limits.counters, keys, strict=True)}


# Extra fault models (the fake misbehaves as the name says; priced like relay-test).
EXTRA_FAULTS = ["delay:4000", "delay:3000", "slow_stream:250", "stream_cut:3"]


def write_config(tmp: Path, fake_url: str, store_url: str, **relay: Any) -> Path:
    data = config_data(fake_url, store=store_url, **relay)
    for p in data["providers"]:
        if p["id"] == "openai":
            p["models"] += [{"id": f"fault-{f}", **TEST_PRICE} for f in EXTRA_FAULTS]
    path = tmp / "relay.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def make_fleet(tmp: Path, fake_url: str, redis_url: str, n: int, **relay: Any) -> Fleet:
    root = RootKey.generate()
    root.save(tmp / "root.key")
    store_url = f"{redis_url}?prefix=f{secrets.token_hex(6)}"
    fleet = Fleet(tmp, fake_url, store_url, root, write_config(tmp, fake_url, store_url,
                                                              **relay))
    try:
        for _ in range(n):
            fleet.start_relay()
    except Exception:
        fleet.close()
        raise
    return fleet


@pytest.fixture(scope="module")
def fake_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    p = start_fake(tmp_path_factory.mktemp("fake"))
    try:
        yield p
    finally:
        p.stop()


def chat_body(model: str = "relay-out", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, "max_tokens": 16, **extra}


def reason(r: httpx.Response) -> str:
    """The response's reason code (header), checked against the body's."""
    code: str = r.headers.get("x-capwallet-reason", "")
    body = r.json()
    err = body["error"]
    assert err["reason"] == code, (code, body)
    assert err["message"], body
    return code
