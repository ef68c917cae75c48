"""The relay counts its model calls in flight, and tells its SQLite store when one is alone.

With a single call in flight no other call's write can join its reservation's batch, so the
store commits it at once instead of waiting a turn of the event loop for company (a turn on
the way to the provider's request). With two or more the store waits the turn as before, so
concurrent calls still share a commit. The count must come back to zero however a call ends
(answered, streamed, refused, the app hanging up), or the store would wait for company that
never comes; it is read here on a real relay behind a real server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from relay_harness import FAKE_KEY, Relay, config_data
from test_relay_cancelled_handler import InProcess

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.store.sqlite import SQLiteStore
from reference_relay.app import create_app
from reference_relay.config import parse_config


def _wait(cond: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_the_store_waits_for_company_only_while_other_calls_are_in_flight(
        fresh_relay: Callable[..., Relay]) -> None:
    r = fresh_relay()
    relay = r.server.app.state.relay
    store = relay.store
    assert isinstance(store, SQLiteStore)
    assert store.alone == relay._alone  # the relay's count decides
    token = r.mint(cav.Budget(10**9, "USD", "month"), cav.App("t"))
    assert r.chat(token).status_code == 200
    r.quiesce()
    assert relay.calls == 0 and relay._alone()

    # Two slow calls in flight: neither is alone.
    seen: list[int] = []
    slow = [threading.Thread(target=lambda: seen.append(
        r.chat(token, model="fault-delay:1500").status_code)) for _ in range(2)]
    for t in slow:
        t.start()
    try:
        assert _wait(lambda: relay.calls == 2)
        assert not relay._alone()
    finally:
        for t in slow:
            t.join(timeout=20)
    assert seen == [200, 200]

    # However a call ends, it leaves the count: a stream read to its end, one the app hung up
    # on, a refusal (an unknown model), a bad token.
    with r.openai(token).chat.completions.create(
            model="relay-test", messages=[{"role": "user", "content": "hi"}],
            stream=True) as stream:
        assert any(c.choices and c.choices[0].delta.content for c in stream)
    r.hang_up_stream("/v1/chat/completions", {
        "model": "fault-slow_stream:40", "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}, token)
    assert r.chat(token, model="no-such-model").status_code == 404
    assert r.chat("cwt1_not-a-token").status_code == 401
    r.quiesce()
    assert _wait(lambda: relay.calls == 0), relay.calls
    assert relay._alone()
    assert len(r.wait_ledger(token, 5)) >= 5


def test_two_relays_on_one_store_object_count_together(fake: str, tmp_path: Path) -> None:
    # Two relays in one process on one SQLiteStore object (create_app(store=...)): a write is
    # alone only if neither has another call in flight. The store once took the first
    # relay's count alone, so the second relay's concurrent calls were each committed at
    # once, none waiting for the other's company; and it kept a closed relay's count.
    root = RootKey.generate()
    root.save(tmp_path / "root.key")
    config = parse_config(config_data(fake, store=f"sqlite:///{tmp_path}/relay.db"), tmp_path)

    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "relay.db"))
        a = InProcess(create_app(config, store=store, provider_keys=lambda p: FAKE_KEY), root)
        b = InProcess(create_app(config, store=store, provider_keys=lambda p: FAKE_KEY), root)
        alone = store.alone
        assert alone is not None and alone()

        async def until(cond: Callable[[], bool]) -> None:
            for _ in range(1000):
                if cond():
                    return
                await asyncio.sleep(0.005)
            raise AssertionError("never")

        try:
            # Two calls in flight on the second relay, none on the first.
            calls = [asyncio.ensure_future(b.call("fault-delay:1500")) for _ in range(2)]
            await until(lambda: b.relay.calls == 2)
            assert a.relay.calls == 0 and not alone()
            await asyncio.gather(*calls)
            # One call on each: each relay alone by itself, but two calls in flight.
            calls = [asyncio.ensure_future(r.call("fault-delay:1500")) for r in (a, b)]
            await until(lambda: a.relay.calls == 1 and b.relay.calls == 1)
            assert not alone()
            await asyncio.gather(*calls)
            await until(lambda: a.relay.calls == 0 and b.relay.calls == 0)
            assert alone()
            # The first relay closed: the store counts the second one's calls alone.
            await a.relay.aclose()
            assert store.alone == b.relay._alone
            one = asyncio.ensure_future(b.call("fault-delay:1500"))
            await until(lambda: b.relay.calls == 1)
            assert store.alone()
            await one
            rows, _ = await b.settled()
            assert [r.status for r in rows] == ["ok"] * 4  # the second relay's token
        finally:
            await a.relay.aclose()
            await b.relay.aclose()
            await store.close()

    asyncio.run(main())
