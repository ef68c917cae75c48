"""A relay Call as the Outcome of its queued settlement (capwallet.store.Outcome).

Call.settle_soon / release_soon hand the settlement to the store with the Call itself as the
Outcome (no future per call). The store reads ``done()`` as "this caller no longer wants it":
the SQLite store leaves a write whose outcome is done out of its batch, as it does for a
cancelled caller. So a Call must read as not done until the store has told it, however it
got to the store, or a settlement is silently dropped and its reservation holds the worst
case until the lease sweep charges it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from store_suite import BACKENDS, Opener, entry, res

from capwallet.store import Hold
from reference_relay.calls import Call

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    factory: Callable[[pytest.FixtureRequest, Path], Opener] = request.param
    return factory(request, tmp_path)


def _call(store: object, reservation_id: str) -> Call:
    """A Call with what its Outcome side uses (the rest is not touched here)."""
    none: object = None  # for the parts the Outcome side never touches (hence the ignores)
    return Call(
        store=store, upstream=none, converter=none, spawn=none, loop=asyncio.get_running_loop(),  # type: ignore[arg-type]
        endpoint=none, provider=none, model=none, prepared=none,  # type: ignore[arg-type]
        token_id="t1", app="app", debits=(), reservation_id=reservation_id, worst_raw=0,
        ledger_currency="EUR", key="", started=0.0, log_bodies=False, max_log_bytes=0,
        request_body=b"",
    )


async def test_a_call_handed_to_the_store_directly_is_written(opener: Opener) -> None:
    # The Call given to settle_soon without going through its own settle_soon (no pending
    # ledger entry of its own): the store must still write the settlement (old code: on
    # SQLite the Call read as done, and the batch dropped the write; the reservation stayed
    # open at its worst case of 50).
    store = opener()
    try:
        r = res(Hold("b", 50, 1000))
        assert (await store.reserve(r)).ok
        call = _call(store, r.reservation_id)
        store.settle_soon(r.reservation_id, {"b": 12}, entry(cost=12), call)
        await store.drain()
        assert await store.counters(["b"]) == {"b": 12}
        assert call.done()  # told
        rows = await store.ledger(token_ids=["t1"])
        assert [(x.reservation_id, x.cost) for x in rows] == [(r.reservation_id, 12)]
        # Closed once: a second settle of it changes nothing.
        assert not await store.settle(r.reservation_id, {"b": 40}, entry(cost=40))
        assert await store.counters(["b"]) == {"b": 12}
    finally:
        await store.close()


async def test_a_calls_queued_settlement_is_written_and_logged(
        opener: Opener, caplog: pytest.LogCaptureFixture) -> None:
    # The usual way in (Call.settle_soon): written, told once, its ledger line logged once.
    store = opener()
    try:
        r = res(Hold("b", 50, 1000), Hold("rate", 1, 10))
        assert (await store.reserve(r)).ok
        call = _call(store, r.reservation_id)
        with caplog.at_level(logging.INFO, logger="reference_relay.calls"):
            call._queue({"b": 7, "rate": 1}, entry(cost=7))
            assert not call.done()  # queued, not written in the caller's step
            await store.drain()
        assert call.done()
        assert await store.counters(["b", "rate"]) == {"b": 7, "rate": 1}
        lines = [m for m in caplog.messages if m.startswith("call token=t1")]
        assert len(lines) == 1 and "status=ok" in lines[0], lines
    finally:
        await store.close()
