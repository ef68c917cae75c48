"""Bounds on request heads for uvicorn's httptools protocol: their size and their time.

Size: h11 refuses a head that grows past ``h11_max_incomplete_event_size`` while it arrives.
The httptools parser has no such bound: a client that trickles header bytes and never ends the
head makes the relay buffer all of them, so a few connections can exhaust its memory. This
protocol counts the bytes of a head that is still incomplete and, past MAX_HEADER_BYTES,
answers 431 ``headers_too_large`` and closes the connection. (A head that completes is
measured exactly by reference_relay.app.RequestGuard.)

Time: neither uvicorn protocol bounds how long a head may take. Its keep-alive timeout runs
only between requests and stops at the first byte, and a new connection has none, so a client
that connects and sends nothing, or one header byte now and then, holds its connection (and a
file descriptor) forever; 900 such clients were all still held after 20 s (issue 13). Here a
head must be complete ``head_timeout`` seconds (HEAD_TIMEOUT) after the connection opens or
after the first byte of a later request on it; else the answer is 408 ``request_timeout`` and
the connection is closed. ``set_head_timeout(config, seconds)`` sets another bound on a
uvicorn.Config (an attribute of the config, so it reaches worker processes with it).

A request the parser refuses is answered 400 ``invalid_request`` in the relay's error shape
(uvicorn's own answer is text/plain, with no reason code), and the connection closed.

It also sends each response's head and body in one write (reference_relay.coalesce): the
writes of an answer are held till the end of the event loop's iteration or, sooner, till the
answer is complete (on_response_complete); a stream's are sent as they come once it calls the
connection's send_now, which each request's scope carries (SEND_NOW_SCOPE_KEY).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reference_relay.app import MAX_HEADER_BYTES
from reference_relay.coalesce import SEND_NOW_SCOPE_KEY, CoalescingTransport
from reference_relay.errors import (
    HEADERS_TOO_LARGE,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    RelayError,
    error_body,
)

HEAD_TIMEOUT = 10.0  # seconds for a whole request head to arrive
_CONFIG_ATTR = "capwallet_head_timeout"


def _answer(status: bytes, err: RelayError) -> bytes:
    body = json.dumps(error_body(err, "openai"), separators=(",", ":")).encode()
    return (b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\nx-capwallet-reason: " + err.code.encode()
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


def _refusal(limit: int) -> bytes:
    return _answer(b"431 Request Header Fields Too Large", RelayError(
        HEADERS_TOO_LARGE, f"request headers exceed the relay's limit ({limit} bytes)"))


_NOT_HTTP = _answer(b"400 Bad Request", RelayError(
    INVALID_REQUEST, "the request is not valid HTTP/1.1, so the server's parser refused it "
    "(a control character in a header, a Content-Length that is not one number, a bad chunk, "
    "a byte that is not allowed in the request line, ...)"))


def _too_slow(seconds: float) -> bytes:
    return _answer(b"408 Request Timeout", RelayError(
        REQUEST_TIMEOUT, f"the request headers did not arrive within {seconds:g} seconds"))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limit = MAX_HEADER_BYTES
    head_timeout = HEAD_TIMEOUT
    _in_head = True  # waiting for (the rest of) a request head
    _head_bytes = 0  # bytes received while the current head is incomplete
    _head_deadline: float | None = None  # when the head being waited for must be complete
    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_timeout = float(getattr(config, _CONFIG_ATTR, HEAD_TIMEOUT))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Head and body of a response in one send (reference_relay.coalesce).
        self._coalescing = CoalescingTransport(cast(asyncio.Transport, transport),
                                               asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, self._coalescing))
        # A new connection owes its first head at once; uvicorn has no timer for it.
        self._head_deadline = self.loop.time() + self.head_timeout
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        # The client half-closed: the transport closes itself when this returns, below the
        # coalescing wrapper, so what the wrapper holds must go out first.
        self.transport.flush()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_deadline is None:  # the first bytes of a later request's head
                self._head_deadline = self.loop.time() + self.head_timeout
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > self.limit:
            self.transport.write(_refusal(self.limit))
            self.transport.close()
        elif self._in_head and self._head_timer is None:
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request httptools refuses: text/plain, no reason code. The
        # relay's own error instead, as for every other refusal (the connection is closed
        # all the same: the parser cannot tell where a next request would start).
        self.transport.write(_NOT_HTTP)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        self._head_deadline = None
        cast(dict[str, Any], self.scope)[SEND_NOW_SCOPE_KEY] = self._coalescing.send_now
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # The answer is whole: nothing more of it can join what is held, so it goes now
        # rather than at the end of the iteration; the next answer is coalesced again.
        self._coalescing.flush()
        self._coalescing.coalesce()
        super().on_response_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _arm_head_timer(self) -> None:
        if self._head_deadline is not None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still going out (a pipelined head came early): never cut it; the
            # next head gets its time once this one is done.
            self._head_deadline = self.loop.time() + self.head_timeout
            self._arm_head_timer()
            return
        self.transport.write(_too_slow(self.head_timeout))
        self.transport.close()


def set_head_timeout(config: uvicorn.Config, seconds: float) -> uvicorn.Config:
    """Give ``config``'s connections ``seconds`` for each request head (see the module doc)."""
    if seconds <= 0:
        raise ValueError("the head timeout must be positive")
    setattr(config, _CONFIG_ATTR, float(seconds))
    return config
