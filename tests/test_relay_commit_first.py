"""The reservation is committed before any byte of the call goes to the provider.

The relay writes the upstream request from the handler that reserved the call, as soon as it
can (reference_relay.upstream.Upstream.begin), and builds the rest of the call after it: a
change that sent the request earlier, before the store's commit, would let a call reach the
provider that the budget never held. Here the provider stand-in is the fake provider behind a
check that runs as each model call arrives: it reads the relay's SQLite file with a connection
of its own (it sees committed rows only) for the token's open reservation. The relay's store
is the real SQLite store, with each reservation started 0.2 s late, so that a request sent
before the commit would arrive while nothing is committed yet.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relay_harness import FAKE_KEY, Relay, ServerThread, start_relay, token_id
from starlette.types import Receive, Scope, Send

from capwallet import caveats as cav
from capwallet.store import Reservation, ReserveResult
from capwallet.store.sqlite import SQLiteStore
from fake_provider.server import create_app as fake_app

HELLO = [{"role": "user", "content": "Say hello."}]
DELAY = 0.2  # seconds each reservation waits before it goes to the store


class LateStore(SQLiteStore):
    """The SQLite store, each reservation handed to it DELAY seconds after it is asked for."""

    async def reserve(self, reservation: Reservation) -> ReserveResult:
        await asyncio.sleep(DELAY)
        return await super().reserve(reservation)


class CheckingProvider:
    """The fake provider, behind a look at the relay's store as each model call arrives:
    whether the token's reservation is committed (``seen``: token id -> open reservations)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.app = fake_app(FAKE_KEY)
        self.seen: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            with sqlite3.connect(self.db) as conn:
                [(n,)] = conn.execute("SELECT count(*) FROM reservations").fetchall()
            self.seen.append(n)
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, CheckingProvider]]:
    tmp = tmp_path_factory.mktemp("commit_first")
    db = tmp / "relay.db"  # the example config's store file (sqlite:///relay.db, in tmp)
    provider = CheckingProvider(db)
    server = ServerThread(provider).start()
    store = LateStore(db)
    relay = start_relay(server.url, tmp, store=store)
    try:
        # A first call opens the relay's pooled connection to the provider: each test's call
        # then goes out on an idle one, the moment the relay lets it (Pool.start).
        warm = relay.mint(cav.Budget(1000, "USD", "month"))
        assert relay.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO,
                                                   "max_tokens": 16}, warm).status_code == 200
        relay.wait_ledger(warm, 1)
        yield relay, provider
    finally:
        relay.close()
        server.stop()
        asyncio.run(store.close())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_the_provider_gets_the_request_after_the_reservation_is_committed(
        setup: tuple[Relay, CheckingProvider], stream: bool) -> None:
    relay, provider = setup
    provider.seen.clear()
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 16, "stream": stream}
    r = httpx.post(relay.url + "/v1/chat/completions", json=body, timeout=30,
                   headers={"authorization": "Bearer " + tok})
    assert r.status_code == 200
    # One call in flight, so one open reservation: the call's own, committed as it arrived.
    assert provider.seen == [1]
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.token_id) == ("ok", token_id(tok))
