"""A bound on request heads for uvicorn's httptools protocol.

h11 refuses a head that grows past ``h11_max_incomplete_event_size`` while it arrives. The
httptools parser has no such bound: a client that trickles header bytes and never ends the
head makes the relay buffer all of them, so a few connections can exhaust its memory. This
protocol counts the bytes of a head that is still incomplete and, past MAX_HEADER_BYTES,
answers 431 ``headers_too_large`` and closes the connection. (A head that completes is
measured exactly by reference_relay.app.RequestGuard.) It also sends each response's head
and body in one write (reference_relay.coalesce).
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reference_relay.app import MAX_HEADER_BYTES
from reference_relay.coalesce import CoalescingTransport
from reference_relay.errors import HEADERS_TOO_LARGE, RelayError, error_body


def _refusal(limit: int) -> bytes:
    err = RelayError(HEADERS_TOO_LARGE, f"request headers exceed the relay's limit "
                     f"({limit} bytes)")
    body = json.dumps(error_body(err, "openai"), separators=(",", ":")).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nx-capwallet-reason: " + err.code.encode()
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limit = MAX_HEADER_BYTES
    _in_head = True  # waiting for (the rest of) a request head
    _head_bytes = 0  # bytes received while the current head is incomplete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Head and body of a response in one send (reference_relay.coalesce).
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(
            cast(asyncio.Transport, transport), asyncio.get_running_loop())))

    def eof_received(self) -> None:
        # The client half-closed: the transport closes itself when this returns, below the
        # coalescing wrapper, so what the wrapper holds must go out first.
        self.transport.flush()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limit and not self.transport.is_closing():
            self.transport.write(_refusal(self.limit))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
