"""reference_relay.coalesce: writes of one event-loop iteration leave as one send, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from reference_relay.coalesce import CoalescingTransport


class Wire:
    """The transport under the wrapper (the operating system's socket, as far as the wrapper
    can tell): it records each write it is given. It has the methods the wrapper calls, not
    asyncio.Transport's whole interface: hence the arg-type ignores where one is passed."""

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

    def get_extra_info(self, name: str) -> object:
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


def test_send_now_sends_what_is_held_and_the_rest_of_the_answer_at_once() -> None:
    async def main() -> list[bytes]:
        wire = Wire()
        t = CoalescingTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"head;")
        t.write(b"first;")
        t.send_now()
        assert wire.writes == [b"head;first;"]  # at once, together
        t.write(b"second;")
        t.write(b"third;")
        assert wire.writes == [b"head;first;", b"second;", b"third;"]  # each as it comes
        t.coalesce()  # the next answer's writes wait for the end of the iteration again
        t.write(b"next head;")
        t.write(b"next body")
        assert len(wire.writes) == 3
        await asyncio.sleep(0)
        return wire.writes

    assert asyncio.run(main())[3:] == [b"next head;next body"]


class Socket(Wire):
    """The transport under the server's protocol: what uvicorn asks a transport for."""

    def get_extra_info(self, name: str) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: object) -> None:
        pass


REQUEST = b"POST /%s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\nhi"


def test_the_server_sends_a_whole_answer_at_once_and_a_stream_as_it_goes() -> None:
    """Through the relay's server protocol (uvicorn's, with reference_relay.http_limits): a
    whole answer is on the wire as soon as its last part is sent, not at the end of the
    iteration; an app that calls the scope's send_now has its head and each later piece sent
    at once; and the next answer on the connection is coalesced again."""
    import uvicorn
    from uvicorn.server import ServerState

    from reference_relay.coalesce import SEND_NOW_SCOPE_KEY
    from reference_relay.http_limits import BoundedHttpToolsProtocol

    seen: dict[str, list[bytes]] = {}
    whole: list[list[bytes]] = []  # the writes by the time each whole answer was sent

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        wire = sockets[-1]
        if scope["path"] == "/whole":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            whole.append(list(wire.writes))  # before the loop turns
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        before = len(wire.writes)
        scope[SEND_NOW_SCOPE_KEY]()
        seen["head"] = wire.writes[before:]
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        seen["piece"] = wire.writes[before + 1:]
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sockets: list[Socket] = []

    async def main() -> list[bytes]:
        config = uvicorn.Config(app, http=BoundedHttpToolsProtocol, lifespan="off",
                                log_config=None)
        config.load()
        proto = BoundedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        sockets.append(Socket())
        proto.connection_made(sockets[-1])  # type: ignore[arg-type]
        for path in (b"stream", b"whole", b"whole"):
            proto.data_received(REQUEST % path)
            for _ in range(20):
                await asyncio.sleep(0)
        return sockets[-1].writes

    writes = asyncio.run(main())
    [head] = seen["head"]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert seen["piece"] == [b"9\r\ndata: 1\n\n\r\n"]
    # The stream's end, then each whole answer in one write, sent before the loop turned.
    assert writes[2] == b"0\r\n\r\n"
    assert len(writes) == 5 and whole == [writes[:4], writes]
    for answer in writes[3:]:
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
