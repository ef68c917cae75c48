"""A server that cancels the request handler when the app hangs up (uvicorn does not; other
ASGI servers may, and any server does at a shutdown past its grace): a plain call is still
read to its end, metered and settled exactly, wherever the handler is cancelled.

The handler reads a plain call's answer itself when the request went out on an idle pooled
connection, and settles it after sending it (reference_relay.calls.Call.run,
_SettleAfterSend). These tests drive the relay's ASGI app in-process with the real fake
provider behind it, cancel the handler's task at each await it makes (waiting for the
provider's head, waiting on the task path, sending the answer; after the send it has no
wait left: the settlement is queued in the store), and read the ledger and the counters: one
row, the answer's real usage, charged once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from relay_harness import FAKE_KEY, config_data, token_id

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.store import LedgerEntry
from capwallet.store.sqlite import SQLiteStore
from capwallet.token import mint
from fake_provider import running_fake_provider
from reference_relay.app import Relay, counter_keys, create_app
from reference_relay.config import parse_config

HELLO = [{"role": "user", "content": "hello there"}]
# relay-test answers with 10 input and 16 output tokens (0.1 cent per input token, 0.3 cent
# per output token): 5.8 cents; fault-delay:1500 the same, after 1.5 s.
COST = 5_800_000


@pytest.fixture(scope="module")
def fake() -> Any:
    with running_fake_provider(FAKE_KEY) as url:
        yield url


class InProcess:
    """The relay's ASGI app in this process's loop, and a token for it."""

    def __init__(self, app: Any, root: RootKey) -> None:
        self.app = app
        self.relay: Relay = app.state.relay
        self.token = mint(root, [cav.Budget(1000, "USD", "month")]).serialize()

    async def call(self, model: str, send: Callable[[dict[str, Any]], Any] | None = None
                   ) -> list[dict[str, Any]]:
        """One plain chat call; the ASGI messages the app sent."""
        data = json.dumps({"model": model, "messages": HELLO, "max_tokens": 32}).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"host", b"127.0.0.1"),
                             (b"authorization", b"Bearer " + self.token.encode()),
                             (b"content-type", b"application/json"),
                             (b"content-length", str(len(data)).encode())]}
        given = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # no disconnect message: the server cancels instead
            raise AssertionError("unreachable")

        async def record(message: dict[str, Any]) -> None:
            sent.append(message)
            if send is not None:
                await send(message)

        await self.app(scope, receive, record)
        return sent

    async def settled(self) -> tuple[list[LedgerEntry], int]:
        """The token's ledger rows and its budget's used amount, once nothing is in flight."""
        deadline = time.monotonic() + 10
        while self.relay.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.relay.tasks), timeout=1)
        await self.relay.store.drain()  # the settlements queued after a send (settle_soon)
        rows = await self.relay.store.ledger(token_ids=[token_id(self.token)])
        v = self.relay.verifier.check_token(self.token)
        [used] = (await self.relay.store.counters(
            counter_keys(v.limits, int(time.time())))).values()
        return rows, used


@asynccontextmanager
async def in_process(fake: str, tmp: Path, *, warm: bool,
                     store: str | None = None) -> AsyncIterator[InProcess]:
    root = RootKey.generate()
    root.save(tmp / "root.key")
    data = config_data(fake, **({"store": store} if store else {}))
    app = create_app(parse_config(data, tmp), provider_keys=lambda pid: FAKE_KEY)
    r = InProcess(app, root)
    try:
        if warm:  # a call before: its connection waits idle in the pool for the next one
            assert (await r.call("relay-test"))[0]["status"] == 200
        yield r
    finally:
        await r.relay.aclose()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("warm", [True, False], ids=["idle-connection", "new-connection"])
def test_cancelled_while_the_provider_thinks(fake: str, tmp_path: Path, warm: bool) -> None:
    # With an idle connection the handler itself waits for the provider (no task of the
    # relay's in flight); without, the call's task does. Either way the cancelled call is
    # read to its end and charged its real usage, as an answer the app did not get.
    async def main() -> None:
        async with in_process(fake, tmp_path, warm=warm) as r:
            before = await r.settled()
            handler = asyncio.get_running_loop().create_task(r.call("fault-delay:1500"))
            await asyncio.sleep(0.3)
            assert bool(r.relay.tasks) is not warm  # which path the call took
            handler.cancel()
            with pytest.raises(asyncio.CancelledError):
                await handler
            rows, used = await r.settled()
            [row] = [e for e in rows if e not in before[0]]
            assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
                "client_disconnected", 10, 16, COST)
            assert used - before[1] == COST

    run(main())


def test_cancelled_while_sending_the_answer(fake: str, tmp_path: Path) -> None:
    async def cancel_at_the_body(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)  # the cancellation lands here, inside the send

    async def main() -> None:
        async with in_process(fake, tmp_path, warm=True) as r:
            rows0, used0 = await r.settled()
            with pytest.raises(asyncio.CancelledError):
                await r.call("relay-test", cancel_at_the_body)
            rows, used = await r.settled()
            assert [(e.status, e.cost) for e in rows if e not in rows0] == [
                ("client_disconnected", COST)]
            assert used - used0 == COST

    run(main())


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_no_wait_left_after_the_answer_is_sent(fake: str, tmp_path: Path, backend: str,
                                               request: pytest.FixtureRequest) -> None:
    # The answer is out; the handler hands the settlement to the store (Call.settle_soon)
    # and returns in the same step: a server cancelling it right after the send finds it
    # done, and the settlement is written once: one row, charged once. (The old handler
    # awaited the write there, was cancelled at that wait, and wrote it again from a task.)
    store = None
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        store = f"{url}?prefix=cancel{secrets.token_hex(4)}"
    handler: list[asyncio.Task[Any]] = []

    async def cancel_after_the_body(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            task = asyncio.current_task()
            assert task is not None
            handler.append(task)
            asyncio.get_running_loop().call_soon(task.cancel)

    async def main() -> None:
        async with in_process(fake, tmp_path, warm=True, store=store) as r:
            rows0, used0 = await r.settled()
            call = asyncio.get_running_loop().create_task(
                r.call("relay-test", cancel_after_the_body))
            sent = await call
            assert handler == [call] and not call.cancelled()
            assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
            rows, used = await r.settled()
            assert [(e.status, e.cost) for e in rows if e not in rows0] == [("ok", COST)]
            assert used - used0 == COST

    run(main())


def test_a_settlement_the_store_fails_is_logged_and_holds_the_worst_case(
        fake: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The store fails the queued settlement for real (its ledger table is gone: the batch
    # rolls back). Nobody waits for that write, so its failure is logged, with the token id
    # only, and the reservation stays open at its worst case for the lease to charge.
    async def main() -> None:
        async with in_process(fake, tmp_path, warm=True) as r:
            store = r.relay.store
            assert isinstance(store, SQLiteStore)
            _, used0 = await r.settled()
            handler = asyncio.get_running_loop().create_task(r.call("fault-delay:1500"))
            await asyncio.sleep(0.3)  # reserved; the provider thinks
            with sqlite3.connect(store.path) as other:
                other.execute("DROP TABLE ledger")
            with caplog.at_level(logging.ERROR, logger="reference_relay.calls"):
                sent = await handler
                await store.drain()
            assert sent[0]["status"] == 200  # the app got its answer
            [record] = [rec for rec in caplog.records
                        if rec.getMessage().startswith("settle failed")]
            failed = record.getMessage()
            assert record.exc_info is None and record.exc_text is None  # the store's own
            assert f"token={token_id(r.token)} " in failed and r.token not in failed
            assert "no such table" in failed  # the store's reason
            v = r.relay.verifier.check_token(r.token)
            [used] = (await store.counters(counter_keys(v.limits, int(time.time())))).values()
            assert used - used0 > COST  # the worst case, reserved, stays until the lease
            with sqlite3.connect(store.path) as other:
                [(open_,)] = other.execute("SELECT count(*) FROM reservations").fetchall()
            assert open_ == 1

    run(main())
