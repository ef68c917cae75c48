"""The running event loop, found without asyncio.get_running_loop's system call.

On CPython 3.11 ``asyncio.get_running_loop`` checks the loop's process with a getpid system
call on every use, and the relay's request path asks for the loop several times per call (the
call's task and futures, the store's write). A thread runs one loop at a time, so the loop this
thread found last is, while it still runs, the loop running this code: ``running_loop``
remembers it per thread and asks asyncio only when it has stopped (or on a thread's first use).
"""

from __future__ import annotations

import asyncio
import threading

_last = threading.local()  # .loop: the loop this thread found running last


def running_loop() -> asyncio.AbstractEventLoop:
    """The running loop of this thread (RuntimeError if none, as asyncio's)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_last, "loop", None)
    if loop is not None and loop.is_running():
        return loop
    loop = asyncio.get_running_loop()
    _last.loop = loop
    return loop
