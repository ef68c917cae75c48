"""What a maintenance loop logs of its failed turns (capwallet.maintenance): the first of a run,
one of another kind, one each REMIND seconds' worth of turns while it lasts, and a line when a
turn works again; an sqlite3 error by its code, never by its text. The loops that use it are
tested running, with real failures: tests/test_relay_sweep_failures.py and
tests/wallet/test_expired_counters.py."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3

import pytest

from capwallet.maintenance import REMIND, FailedTurns, describe, run_every
from capwallet.store import StoreUnavailable


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_a_failure_that_lasts_is_logged_once_per_remind_and_its_end_once(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("capwallet.test.maintenance")
    caplog.set_level(logging.INFO, logger=log.name)
    turns = FailedTurns(log, "a sweep", interval=REMIND / 3)  # a reminder every 3rd turn
    for _ in range(7):
        turns.failed(_raised(ValueError("a value: sk-secret")))
    turns.failed(_raised(StoreUnavailable("Redis store failed: ConnectionError: refused")))
    turns.worked()
    turns.worked()  # nothing more: it was already working
    turns.failed(_raised(ValueError("again")))
    got = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in got] == [
        "a sweep failed (tried again every turn)",  # turn 1
        "a sweep failed again, 3 turns in a row",
        "a sweep failed again, 6 turns in a row",
        "a sweep failed (tried again every turn)",  # turn 8: another kind
        "a sweep works again, after 8 failed turn(s)",
        "a sweep failed (tried again every turn)",  # a new run of failures
    ]
    assert all("sk-secret" not in m for m in got)  # an error's own text is not logged
    assert re.search(r": ValueError at test_maintenance\.py:\d+ in _raised$", got[0])
    assert "StoreUnavailable: Redis store failed: ConnectionError: refused at" in got[3]


def test_an_sqlite_error_is_named_by_its_code() -> None:
    db = sqlite3.connect(":memory:")
    try:
        db.execute("SELECT * FROM grants WHERE x = 'cwt1_abc'")
    except sqlite3.Error as exc:
        text = describe(exc)
    assert text.startswith("OperationalError (SQLITE_ERROR) at ")
    assert "cwt1_abc" not in text and "grants" not in text


def test_a_failing_turn_is_tried_again_and_cancelling_ends_the_loop() -> None:
    turns: list[int] = []

    async def turn() -> None:
        turns.append(len(turns))
        if len(turns) < 3:
            raise RuntimeError("not yet")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(run_every(0.001, turn, logging.getLogger("t"), "t"))
        while len(turns) < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.wait([task], timeout=1)
        assert task.cancelled()

    asyncio.run(main())
