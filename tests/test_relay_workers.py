"""``python -m reference_relay --workers N``: several processes on one port and one SQLite file.

The relay keeps no state of its own, so worker processes need nothing shared but the store:
a budget spent through both workers at once is exact, and stopping the parent stops them all.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relay_harness import FAKE_KEY
from scaleout_harness import Process, chat_body, fake_process, reason, write_config

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.money import MICROS_PER_MINOR
from capwallet.store import open_store
from capwallet.token import mint

__all__ = ["fake_process"]
CALL_MICROS = 4_800_000  # relay-out: 16 output tokens at 0.3 cent each, reserved and charged


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == pid and b"multiprocessing.spawn" in cmd:
                out.append(int(d))
    return out


@pytest.fixture
def workers(fake_process: Process, tmp_path: Path) -> Iterator[tuple[Process, RootKey, str]]:
    root = RootKey.generate()
    root.save(tmp_path / "root.key")
    store_url = f"sqlite:///{tmp_path}/relay.db"
    config = write_config(tmp_path, fake_process.url, store_url)
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "ANTHROPIC_API_KEY": FAKE_KEY}
    relay = Process([sys.executable, "-m", "reference_relay", "--config", str(config),
                     "--port", "0", "--workers", "2", "--log-level", "warning"],
                    tmp_path / "relay.log", env=env, cwd=tmp_path).start()
    try:
        yield relay, root, store_url
    finally:
        relay.stop()


def test_two_workers_share_one_port_and_one_budget_exactly(
        workers: tuple[Process, RootKey, str]) -> None:
    relay, root, store_url = workers
    assert len(_children(relay.pid)) == 2
    tok = mint(root, [cav.Budget(50 * CALL_MICROS // MICROS_PER_MINOR, "USD", "month")])
    token = tok.serialize()

    async def spread() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            return await asyncio.gather(*(
                client.post(relay.url + "/v1/chat/completions", json=chat_body(),
                            headers={"authorization": "Bearer " + token})
                for _ in range(200)))

    rs = asyncio.run(spread())
    assert sum(r.status_code == 200 for r in rs) == 50
    assert {reason(r) for r in rs if r.status_code != 200} == {"budget_exceeded"}

    async def ledger() -> list[str]:
        store = open_store(store_url)
        try:
            deadline = time.monotonic() + 20
            while True:
                rows = await store.ledger(token_ids=[tok.token_id], limit=1000)
                # refusals are compacted: a row per token, reason and minute, with a count
                if sum(r.count for r in rows) >= 200 or time.monotonic() > deadline:
                    return [r.status for r in rows for _ in range(r.count)]
                await asyncio.sleep(0.05)
        finally:
            await store.close()

    statuses = asyncio.run(ledger())
    assert statuses.count("ok") == 50
    assert statuses.count("denied:budget_exceeded") == 150


def test_stopping_the_parent_stops_every_worker(workers: tuple[Process, RootKey, str]) -> None:
    relay, _, _ = workers
    children = _children(relay.pid)
    assert len(children) == 2
    relay.stop()  # SIGTERM, as a service manager sends
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{c}").exists() for c in children)
