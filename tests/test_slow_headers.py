"""Slow request heads (issue 13): a client that never finishes its head is cut off, on the relay
(``python -m reference_relay``, its real protocol) and on the wallet server (``capwallet serve``'s
uvicorn setup, relay included), while normal clients are served all along.

Bounded: SLOW clients per server, all on loopback, for a few seconds. Half connect and send
nothing; half send a request line and then one header line every 0.2 s, never the blank line
that ends the head. With a head timeout of 1 s each must be closed (the talkers get a 408
request_timeout first) within a few seconds, and a keep-alive connection whose second head
stalls is closed too. Before the fix none of them was ever closed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from scaleout_harness import Process, write_config

from capwallet.keys import RootKey
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import ServeOptions, running_wallet

SLOW = 120
HEAD_TIMEOUT = 1.0
GIVE_UP = 8.0  # seconds: a slow client still open by then was held


@dataclass
class Outcome:
    closed_after: float | None  # seconds after connecting, None if still open at GIVE_UP
    answer: bytes


async def _slow_client(host: str, port: int, talk: bool) -> Outcome:
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    got = b""
    try:
        if talk:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        n = 0
        while time.monotonic() - start < GIVE_UP:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                return Outcome(time.monotonic() - start, got)
            if chunk:
                got += chunk
                continue
            if talk:
                n += 1
                writer.write(f"X-Slow-{n}: y\r\n".encode())
                try:
                    await writer.drain()
                except ConnectionError:
                    return Outcome(time.monotonic() - start, got)
        return Outcome(None, got)
    except ConnectionError:
        return Outcome(time.monotonic() - start, got)
    finally:
        writer.close()


async def _keep_alive_then_stall(host: str, port: int) -> Outcome:
    """One whole request on a keep-alive connection, then a second head that never ends."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await asyncio.wait_for(reader.read(4096), 5)
        assert first.startswith(b"HTTP/1.1 200"), first
        start = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        got = b""
        while time.monotonic() - start < GIVE_UP:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                writer.write(b"X-Slow: y\r\n")
                continue
            if chunk == b"":
                return Outcome(time.monotonic() - start, got)
            got += chunk
        return Outcome(None, got)
    except ConnectionError:
        return Outcome(time.monotonic() - start, b"")
    finally:
        writer.close()


def _normal_clients(url: str, stop: float) -> list[int]:
    """Plain requests, one after another, while the slow clients hang on."""
    codes = []
    with httpx.Client(timeout=5) as c:
        while time.monotonic() < stop:
            codes.append(c.get(url + "/healthz").status_code)
            time.sleep(0.05)
    return codes


async def _siege(url: str) -> tuple[list[Outcome], Outcome, list[int]]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    slow = [asyncio.create_task(_slow_client(host, int(port), talk=i % 2 == 0))
            for i in range(SLOW)]
    stall = asyncio.create_task(_keep_alive_then_stall(host, int(port)))
    await asyncio.sleep(0.3)  # every slow client is connected and waiting
    codes = await asyncio.to_thread(_normal_clients, url, time.monotonic() + 2.5)
    return await asyncio.gather(*slow), await stall, codes


def _check(outcomes: list[Outcome], stall: Outcome, codes: list[int]) -> None:
    held = [o for o in outcomes if o.closed_after is None]
    assert not held, f"{len(held)} of {len(outcomes)} slow clients still held after {GIVE_UP}s"
    talkers = outcomes[::2]
    assert all(o.answer.startswith(b"HTTP/1.1 408") for o in talkers), talkers[0].answer[:200]
    assert all(b"request_timeout" in o.answer for o in talkers)
    assert stall.closed_after is not None and stall.answer.startswith(b"HTTP/1.1 408")
    assert codes and set(codes) == {200}, codes  # normal clients were served meanwhile


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[Process]:
    RootKey.generate().save(tmp_path / "root.key")
    config = write_config(tmp_path, "http://127.0.0.1:9", f"sqlite:///{tmp_path}/relay.db",
                          header_timeout=HEAD_TIMEOUT)
    relay = Process([sys.executable, "-m", "reference_relay", "--config", str(config),
                     "--port", "0", "--log-level", "warning"], tmp_path / "relay.log",
                    env=dict(os.environ), cwd=tmp_path).start()
    try:
        yield relay
    finally:
        relay.stop()


def test_relay_closes_slow_heads_and_serves_others(relay_process: Process) -> None:
    outcomes, stall, codes = asyncio.run(_siege(relay_process.url))
    _check(outcomes, stall, codes)


def test_wallet_closes_slow_heads_and_serves_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPWALLET_KDF_LIMITS", "interactive")
    home = WalletHome(tmp_path / "wallet")
    home.ensure()
    ks = Keystore.create(home.keystore_path, "pw")
    ks.add_provider("openai", "sk-test-never-shown-0123456789", "http://127.0.0.1:9/v1",
                    "openai")
    ks.save()
    options = ServeOptions(port=0, head_timeout=HEAD_TIMEOUT)
    with running_wallet(home, ks, options=options) as w:  # pages and relay, as `serve` runs
        outcomes, stall, codes = asyncio.run(_siege(w.base_url))
    _check(outcomes, stall, codes)


def test_a_slow_but_finished_head_is_served(relay_process: Process) -> None:
    async def trickle() -> bytes:
        host, port = relay_process.url.split("//", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            writer.write(part)
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        return answer

    assert asyncio.run(trickle()).startswith(b"HTTP/1.1 200")
