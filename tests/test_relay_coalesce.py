"""reference_relay.coalesce: writes of one event-loop iteration leave as one send, in order."""

from __future__ import annotations

import asyncio

from reference_relay.coalesce import CoalescingTransport


class Wire:
    """The transport under the wrapper (the operating system's socket, as far as the wrapper
    can tell): it records each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_one_send_per_iteration_in_order() -> None:
    async def main() -> list[bytes]:
        wire = Wire()
        t = CoalescingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"ok")
        assert wire.writes == []  # nothing sent before the iteration ends
        assert t.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        t.write(b"next")  # a later iteration: a send of its own
        await asyncio.sleep(0)
        return wire.writes

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"next"]


def test_close_sends_what_is_buffered_first_and_the_rest_passes_through() -> None:
    async def main() -> Wire:
        wire = Wire()
        t = CoalescingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"last words")
        t.close()
        assert t.get_extra_info("peername") == "info:peername"
        assert t.is_closing()
        t.write(b"after close")  # dropped, as a closing transport drops it
        await asyncio.sleep(0)
        return wire

    wire = asyncio.run(main())
    assert wire.writes == [b"last words"] and wire.closed
