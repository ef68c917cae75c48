"""What the server's request cycle shows without waiting: whether the app has hung up, whether
that can be seen at all, and whether the whole request body is already here.

The relay (and the bench's floor proxy, which stands for the relay's serving stack) read these
from uvicorn's request cycle, which is ``receive``'s ``__self__`` unless a middleware wrapped
it; under any other server each answer falls back to what is always safe (not gone, no flag to
ask, a body read under its deadline). Kept in one place so that this uvicorn detail lives in
one module, named for what it is.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

# The most body uvicorn's request cycle holds before it stops reading the connection: a last
# ``receive`` that gave more may have left reading paused (``resume_reading``).
PAUSING_BODY = HIGH_WATER_LIMIT


def client_gone(receive: Receive) -> bool:
    """Whether the app has hung up, as far as the server shows it without waiting: uvicorn
    (which serves the relay and the wallet) marks its request cycle ``disconnected`` when the
    connection is lost, and ``receive`` is that cycle's bound method unless a middleware
    wrapped it. Elsewhere False: the answer was sent, and whether it arrived is not known
    (asking ``receive`` would wait, and a listener task per call costs more than it tells)."""
    return getattr(getattr(receive, "__self__", None), "disconnected", False) is True


def shows_hang_up(receive: Receive) -> bool:
    """Whether ``client_gone`` can tell from the server that the app hung up (uvicorn's
    request cycle has the flag, and the connection is being read): then a stream's pump
    asks it before each piece it sends and before it settles, instead of a listener task
    per stream waiting on ``receive``. uvicorn sees a hang-up only while it reads: a body
    whose last read took the cycle past its 64 KiB high-water mark leaves reading paused
    (only ``receive`` resumes it), and the app's FIN is then not seen until a write fails
    (a stream ending soon after was recorded ok, not client_disconnected); the relay's
    handler resumes reading after such a body (``resume_reading``), and were it still
    paused, the listener's ``receive`` would resume it, as before."""
    cycle = getattr(receive, "__self__", None)
    return (hasattr(cycle, "disconnected")
            and getattr(getattr(cycle, "flow", None), "read_paused", True) is False)


def resume_reading(receive: Receive) -> None:
    """Have uvicorn read the connection again after a whole body that left its reading paused,
    so that an app's hang-up from then on shows in ``client_gone`` (and ``shows_hang_up`` is
    True again). uvicorn pauses reading while its request cycle holds more than 64 KiB of body
    (its high-water mark) and resumes it only in ``receive``, which after the body's end
    waits for the disconnect: a plain call would then be recorded ok though the app hung up
    while the provider thought (the answer's write to a half-closed socket still succeeds), and
    a stream's head would go out to an app already gone. This is what that ``receive`` does
    first, without its wait (a task and a wait per large call). The relay's handler calls it
    only for a body past the mark, so the usual call pays nothing. Elsewhere nothing."""
    cycle = getattr(receive, "__self__", None)
    flow = getattr(cycle, "flow", None)
    if (getattr(flow, "read_paused", False) is True
            and getattr(cycle, "more_body", True) is False
            and getattr(cycle, "disconnected", True) is False
            and getattr(cycle, "response_complete", True) is False):
        flow.resume_reading()  # type: ignore[union-attr]


def body_here(receive: Receive) -> bool:
    """Whether the server holds the request's whole body already, so that ``receive`` gives
    it without waiting (the relay's handler then reads it with no deadline to set): uvicorn's
    request cycle (``receive``'s ``__self__``, as for client_gone) has seen the body's end
    and its message event is set. Elsewhere False: the body is read under its deadline."""
    cycle = getattr(receive, "__self__", None)
    if getattr(cycle, "more_body", True) is not False:
        return False
    event = getattr(cycle, "message_event", None)
    return isinstance(event, asyncio.Event) and event.is_set()
