"""The reservation is committed before any byte of the call goes to the provider, on every route,
plain and streamed, one call at a time and twenty at once (the relay sends the request from
the handler the moment the store says the reservation is in: reference_relay.upstream
Upstream.begin).

Behind the relay: the fake provider, wrapped so that, as each request's body arrives and
before it answers, it reads the relay's SQLite file through a connection of its own (which
sees committed rows only) and notes whether the reservation of the token that sent the call
(named in the call's text) is there. The relay's store is the real SQLite store with each
reservation handed to it DELAY seconds late, so that a request sent before the commit would
arrive while nothing is committed yet.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from relay_harness import (
    FAKE_KEY,
    Relay,
    ServerThread,
    start_relay,
    token_id,
)
from starlette.types import Message, Receive, Scope, Send

from capwallet import caveats as cav
from capwallet.store import Reservation, ReserveResult
from capwallet.store.sqlite import SQLiteStore
from fake_provider.server import create_app as fake_app

MARK = re.compile(rb"cwmark-([0-9a-f]{32})")
DELAY = 0.05  # seconds each reservation waits before it goes to the store


class LateStore(SQLiteStore):
    """The SQLite store, each reservation handed to it DELAY seconds after it is asked for."""

    async def reserve(self, reservation: Reservation) -> ReserveResult:
        await asyncio.sleep(DELAY)
        return await super().reserve(reservation)


class Watch:
    """The fake provider, noting for each request whether its token's reservation was
    committed when the request's body had arrived."""

    def __init__(self) -> None:
        self.app = fake_app(FAKE_KEY)
        self.db: Path | None = None
        self.seen: dict[str, bool] = {}  # token id -> reservation committed when it came

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        mark = MARK.search(body)
        if mark is not None and self.db is not None:
            tid = mark.group(1).decode()
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
                held = db.execute("SELECT 1 FROM reservations WHERE token_id = ?",
                                  (tid,)).fetchone()
            self.seen[tid] = held is not None

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, Watch]]:
    tmp = tmp_path_factory.mktemp("commit-first")
    watch = Watch()
    watch.db = tmp / "relay.db"  # the example config's store file (sqlite:///relay.db, in tmp)
    server = ServerThread(watch).start()
    store = LateStore(str(watch.db))
    r = start_relay(server.url, tmp, store=store)
    try:
        yield r, watch
    finally:
        r.close()
        server.stop()
        asyncio.run(store.close())


def _call(r: Relay, route: str, stream: bool, tok: str) -> None:
    text = f"cwmark-{token_id(tok)} hello"
    if route == "chat":
        client = r.openai(tok)
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": text}]
        if stream:
            assert list(client.chat.completions.create(
                model="relay-test", messages=messages, max_tokens=8, stream=True))
        else:
            client.chat.completions.create(model="relay-test", messages=messages, max_tokens=8)
    elif route == "messages":
        an = r.anthropic(tok)
        msgs: list[MessageParam] = [{"role": "user", "content": text}]
        if stream:
            with an.messages.stream(model="claude-test", max_tokens=8, messages=msgs) as s:
                s.get_final_message()
        else:
            an.messages.create(model="claude-test", max_tokens=8, messages=msgs)
    else:
        client = r.openai(tok)
        if stream:
            assert list(client.responses.create(model="relay-test", input=text,
                                                max_output_tokens=16, stream=True))
        else:
            client.responses.create(model="relay-test", input=text, max_output_tokens=16)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", ["chat", "messages", "responses"])
def test_the_provider_gets_a_call_only_once_its_reservation_is_committed(
        watched: tuple[Relay, Watch], route: str, stream: bool) -> None:
    r, watch = watched
    for _ in range(3):  # the first on a new upstream connection, the others on an idle one
        tok = r.mint(cav.Budget(1000, "USD", "month"))
        _call(r, route, stream, tok)
        assert watch.seen.pop(token_id(tok)) is True


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_twenty_at_once_each_reserved_before_it_goes_upstream(
        watched: tuple[Relay, Watch], stream: bool) -> None:
    r, watch = watched
    toks = [r.mint(cav.Budget(1000, "USD", "month")) for _ in range(20)]

    async def one(tok: str) -> Any:
        client = openai.AsyncOpenAI(base_url=r.url + "/v1", api_key=tok, max_retries=0)
        try:
            got = await client.chat.completions.create(
                model="relay-test", max_tokens=8, stream=stream,
                messages=[{"role": "user", "content": f"cwmark-{token_id(tok)}"}])
            if stream:
                return [c async for c in got]  # type: ignore[union-attr]
            return got
        finally:
            await client.close()

    async def main() -> None:
        await asyncio.gather(*(one(t) for t in toks))

    asyncio.run(main())
    assert {token_id(t): watch.seen.pop(token_id(t)) for t in toks} == {
        token_id(t): True for t in toks}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_call_lowered_to_its_budget_is_reserved_before_it_goes_upstream(
        watched: tuple[Relay, Watch], stream: bool) -> None:
    # The second way to a reservation: the first judgement refuses the app's cap, the relay
    # lowers it to what the budget affords (test_relay_clamp) and reserves that.
    r, watch = watched
    tok = r.mint(cav.Budget(500, "USD", "month"))
    body = {"model": "relay-nolimit", "max_tokens": 64000, "stream": stream,
            "messages": [{"role": "user", "content": f"cwmark-{token_id(tok)}"}]}
    sent = r.post("/v1/chat/completions", body, tok)
    assert sent.status_code == 200, sent.text
    assert "reason=budget" in sent.headers["x-capwallet-output-cap"]
    assert watch.seen.pop(token_id(tok)) is True
