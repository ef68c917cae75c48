"""capwallet.loops.running_loop: the loop running this code, whichever it is."""

from __future__ import annotations

import asyncio
import threading

import pytest

from capwallet.loops import running_loop


async def _which() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
    return running_loop(), asyncio.get_running_loop()


def test_each_new_loop_is_found_not_the_one_before() -> None:
    first = asyncio.run(_which())
    second = asyncio.run(_which())
    assert first[0] is first[1] and second[0] is second[1]
    assert first[1] is not second[1]


def test_another_thread_finds_its_own_loop_while_this_ones_runs() -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        running_loop()  # this thread's loop is remembered, and keeps running meanwhile
        t = threading.Thread(target=lambda: seen.append(asyncio.run(_which())))
        t.start()
        await asyncio.to_thread(t.join)
        assert running_loop() is asyncio.get_running_loop()

    asyncio.run(main())
    assert seen[0][0] is seen[0][1]


def test_no_running_loop_is_an_error_as_in_asyncio() -> None:
    asyncio.run(_which())  # remembered, then closed
    with pytest.raises(RuntimeError):
        running_loop()
