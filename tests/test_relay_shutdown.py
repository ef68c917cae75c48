"""A server stopping past its grace: the calls in flight still close their reservations
exactly, on SQLite and on Redis.

A plain call whose request could not go out on an idle pooled connection runs in a task of
the relay's (reference_relay.calls.Call._plain). When the provider refuses it or sends an
answer that is not JSON, that task ends by queueing the release (or the worst-case
settlement) in the store (Call._answered: release_soon, settle_soon) rather than awaiting
it, and so does an answer the app left before it was sent. A server past its grace cancels
the request handlers (uvicorn's timeout_graceful_shutdown), then runs the lifespan's
shutdown, Relay.aclose, which waits for the relay's tasks it finds, drains the store and then
closes it: the queued write must reach the store before it closes, or the reservation stays
open until a lease sweep charges its worst case.

These tests cancel the handler of such a call as a server does, call Relay.aclose at once,
and read the ledger and the counters afterwards from a new handle on the same store: one row,
and the budget used exactly what the row says.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from relay_harness import FAKE_KEY, stored_outcome
from test_relay_cancelled_handler import in_process, run

from fake_provider import running_fake_provider


@pytest.fixture(scope="module")
def fake() -> Any:
    with running_fake_provider(FAKE_KEY) as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@pytest.mark.parametrize(("model", "status", "charged"), [
    ("fault-http500", "upstream_error", False),  # released: Call._answered queues it
    ("fault-malformed", "upstream_error", True),  # the worst case: queued as well
    ("relay-test", "client_disconnected", True),  # settled by the call's task itself
])
def test_aclose_waits_for_what_a_call_task_spawns(fake: str, tmp_path: Path, backend: str,
                                                  model: str, status: str, charged: bool,
                                                  request: pytest.FixtureRequest) -> None:
    # An older Relay.aclose returned with the spawned write still running, and on Redis often
    # lost it (it raced the store's close): three runs each.
    for attempt in range(3):
        tmp = tmp_path / str(attempt)
        tmp.mkdir()
        if backend == "redis":
            url = request.getfixturevalue("redis_url") + f"?prefix=shut{secrets.token_hex(4)}"
        else:
            url = f"sqlite:///{tmp}/relay.db"
        rows, used, left = _shut_down_during(fake, tmp, url, model)
        assert left == []
        assert [e.status for e in rows] == [status]
        assert (rows[0].cost > 0) is charged
        assert used == rows[0].cost  # the reservation was closed: the counter holds the charge


def _shut_down_during(fake: str, tmp: Path, url: str, model: str
                      ) -> tuple[list[Any], int, list[Any]]:
    """Cancel the handler of a call in flight on the task path, as a server past its grace
    does, and shut the relay down; the token's ledger rows and budget used afterwards, and
    the relay's tasks still running when Relay.aclose returned."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with in_process(fake, tmp, warm=False, store=url) as r:
            seen["token"] = r.token
            seen["limits"] = r.relay.verifier.check_token(r.token).limits
            handler = asyncio.get_running_loop().create_task(r.call(model))
            while not r.relay.tasks:  # the call's task is in flight (no idle connection)
                await asyncio.sleep(0)
            handler.cancel()  # the server's grace is over: it cancels its handlers...
            with pytest.raises(asyncio.CancelledError):
                await handler
            await r.relay.aclose()  # ...then runs the lifespan's shutdown
            # Nothing of the relay's is left running once it returns (the store is closed).
            seen["left"] = [t for t in r.relay.tasks if not t.done()]

    run(main())

    rows, used = stored_outcome(url, seen["token"], seen["limits"])
    return rows, used, seen["left"]
