"""What the relay reads from the server's request cycle instead of waiting on ``receive``.

Two shortcuts on every call depend on it (reference_relay.calls): a body the server holds whole
is read with no deadline to set (``body_here``), and a stream's pump asks the server whether
the app hung up as it sends (``client_gone``), with no listener task per stream, wherever
the server can tell (``shows_hang_up``). Checked here against real uvicorn servers, with the
protocols the relay is served with (its own httptools protocol; h11, the tests'), so that a
uvicorn whose cycle changed shows as a failure rather than as the slow path taken silently;
and the slow path itself: a relay behind a middleware that wraps ``receive`` still sees a
stream's app hang up, and so does a relay whose server stopped reading the connection (a body
past uvicorn's 64 KiB high-water mark leaves reading paused: a hang-up shows no flag then).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from relay_harness import FAKE_KEY, Relay, ServerThread, config_data
from starlette.types import Receive, Scope, Send

from capwallet import caveats as cav
from capwallet.keys import RootKey
from reference_relay.app import create_app
from reference_relay.config import parse_config
from reference_relay.http_limits import BoundedHttpToolsProtocol
from reference_relay.listen import listen
from reference_relay.server_flags import (
    body_here,
    client_gone,
    resume_reading,
    shows_hang_up,
)


class Recorder:
    """An ASGI app that notes what the shortcuts read on entry, then answers 200."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool, bool]] = []
        self.wait = 0.0  # seconds to let the server read before noting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.wait:
            await asyncio.sleep(self.wait)
        self.seen.append((shows_hang_up(receive), body_here(receive), client_gone(receive)))
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=["httptools", "h11"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, int]]:
    app = Recorder()
    sock = listen("127.0.0.1", 0)
    http: Any = BoundedHttpToolsProtocol if request.param == "httptools" else "h11"
    server = uvicorn.Server(uvicorn.Config(app, http=http, lifespan="off", log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        yield app, sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


HEAD = b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 10\r\n\r\n"


def _ask(port: int, *parts: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.2)  # the app runs with only the first part received
            s.sendall(part)
        return s.recv(65536)


def test_a_whole_body_is_here_and_the_server_shows_a_hang_up(served: tuple[Recorder, int]
                                                             ) -> None:
    app, port = served
    assert _ask(port, HEAD + b"0123456789").startswith(b"HTTP/1.1 200")
    assert app.seen == [(True, True, False)]


def test_a_body_still_arriving_is_not_here(served: tuple[Recorder, int]) -> None:
    # Read under the body's deadline: the relay's 408 for a stalled body rests on it.
    app, port = served
    assert _ask(port, HEAD + b"01234", b"56789").startswith(b"HTTP/1.1 200")
    assert app.seen == [(True, False, False)]


def test_a_body_past_the_high_water_mark_pauses_reading_and_hides_a_hang_up(
        served: tuple[Recorder, int]) -> None:
    # uvicorn stops reading a connection whose cycle holds more than 64 KiB of body, until
    # receive resumes it: a hang-up then shows only when a write fails, so the relay does not
    # count on the flag (a stream's response listens: test_a_stream_hang_up_after_a_large_...).
    app, port = served
    app.wait = 0.2  # the server has read what it will before it pauses
    size = 200_000
    head = b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n" % size
    assert _ask(port, head + b"x" * size).startswith(b"HTTP/1.1 200")
    [(shows_hang_up, _, gone)] = app.seen
    assert (shows_hang_up, gone) == (False, False)


def test_elsewhere_nothing_is_assumed() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    assert (shows_hang_up(receive), body_here(receive), client_gone(receive)) == (
        False, False, False)


class WrapsReceive:
    """A middleware that hands the app a receive of its own, as some do: the relay cannot
    read the server's request cycle through it, and takes the slow paths. It notes what the
    shortcuts read of the receive it hands on (shows_hang_up, body_here, client_gone)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.seen: list[tuple[bool, bool, bool]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def own() -> Any:
            return await receive()

        if scope["type"] == "http":
            self.seen.append((shows_hang_up(own), body_here(own), client_gone(own)))
        await self.app(scope, own, send)


BODY_TIMEOUT = 0.5  # the wrapped relay's body_timeout (seconds)


@pytest.fixture
def wrapped_relay(fake: str, tmp_path: Path) -> Iterator[Relay]:
    yield from _served(fake, tmp_path, WrapsReceive, "h11", body_timeout=BODY_TIMEOUT)


def test_behind_a_middleware_a_body_is_read_under_its_deadline(wrapped_relay: Relay) -> None:
    # Through the middleware the relay cannot see that the server holds a body whole
    # (body_here False: no flag to read), so it reads every body under body_timeout: a whole
    # body is answered, and one that stops arriving is answered 408 once the deadline passes
    # (with no deadline, as for a body the server holds, the relay would wait for ever:
    # checked so by making body_here True where it cannot tell, not committed).
    wrapped = wrapped_relay.server.app
    assert isinstance(wrapped, WrapsReceive)
    tok = wrapped_relay.mint(cav.Budget(1000, "USD", "month"))
    r = wrapped_relay.chat(tok, max_tokens=16)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16
    assert wrapped.seen[-1] == (False, False, False)
    host, port = wrapped_relay.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "relay-test", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hello there"}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (host.encode(), tok.encode(), len(body)))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        started = time.monotonic()
        s.sendall(head + body[:-5])  # the last 5 bytes never come
        answer = s.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:300]
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 5, waited
    assert wrapped.seen[-1] == (False, False, False)


def test_behind_a_middleware_a_stream_hang_up_is_still_seen(wrapped_relay: Relay) -> None:
    # The response listens for the disconnect itself (no server flag to ask): the app that
    # left after one chunk is recorded as gone, and the stream is still metered to its end.
    tok = wrapped_relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-slow_stream:40", "max_tokens": 32, "stream": True,
            "messages": [{"role": "user", "content": "hello there"}]}
    wrapped_relay.hang_up_stream("/v1/chat/completions", body, tok)
    [row] = wrapped_relay.wait_ledger(tok, 1)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "client_disconnected", 10, 16, 5_800_000)


def _hang_up_after(relay: Relay, token: str, body: bytes, split: int, until: bytes) -> None:
    """POST a stream with ``body`` sent in two writes (the second ``split`` bytes from its
    end, after the relay has read the first), read the answer until ``until`` has come, then
    close the connection."""
    host, port = relay.url.removeprefix("http://").split(":")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (host.encode(), token.encode(), len(body)))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body[:-split])
        time.sleep(0.2)  # the handler has read the first part and waits for the rest
        s.sendall(body[-split:])
        seen = b""
        while until not in seen:
            got = s.recv(65536)
            assert got, seen
            seen += got
        assert seen.startswith(b"HTTP/1.1 200"), seen[:200]


@pytest.mark.parametrize("size", [1_000, 200_000, 2_000_000], ids=["small", "large", "huge"])
def test_a_stream_hang_up_after_a_large_body_is_still_seen(relay: Relay, size: int) -> None:
    # A body whose last part the server received past its 64 KiB high-water mark leaves
    # the connection's reading paused (uvicorn resumes it only in receive): the app's
    # hang-up, a FIN, is then not seen by the server until a write fails, and the app that
    # left before the last piece was recorded ok (seen failing so on 15cda3b: "large" at
    # every run, "huge" at some, as the reads fall). Now the response listens there, and
    # the app is recorded as gone, as after a small body.
    tok = relay.mint()
    text = "x" * size
    body = json.dumps({"model": "fault-slow_stream:40", "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": text}]}).encode()
    _hang_up_after(relay, tok, body, len(body) // 2, b'"finish_reason":"')
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "client_disconnected"


@pytest.fixture(params=["httptools", "h11"])
def served_relay(fake: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Relay]:
    """The relay served with each protocol it is served with (its own httptools; h11)."""
    http: Any = BoundedHttpToolsProtocol if request.param == "httptools" else "h11"
    yield from _served(fake, tmp_path, lambda app: app, http)


def _served(fake: str, tmp_path: Path, wrap: Callable[[Any], Any],
            http: Any, **settings: Any) -> Iterator[Relay]:
    """A relay app (``wrap``ped) served on a loopback port with ``http`` and the [relay]
    ``settings``, closed after."""
    root = RootKey.generate()
    root.save(tmp_path / "root.key")
    config = parse_config(config_data(fake, **settings), tmp_path)
    server = ServerThread(wrap(create_app(config, provider_keys=lambda _: FAKE_KEY)), http=http)
    server.start()
    relay = Relay(server.url, fake, root, config, server)
    try:
        yield relay
    finally:
        relay.close()


def _hang_up_before_the_answer(relay: Relay, token: str, body: bytes) -> None:
    """POST ``body`` whole, give the relay time to read it, then close the connection
    before the answer comes (the provider thinks for longer)."""
    host, port = relay.url.removeprefix("http://").split(":")
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (host.encode(), token.encode(), len(body)))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        time.sleep(0.3)  # the relay has read the body and waits for the provider


@pytest.mark.parametrize("size", [1_000, 200_000, 2_000_000], ids=["small", "large", "huge"])
def test_a_plain_call_s_hang_up_after_a_large_body_is_recorded(served_relay: Relay,
                                                               size: int) -> None:
    # The app hangs up while the provider thinks. After a body past uvicorn's 64 KiB
    # high-water mark the server read no more of the connection, the FIN went unseen and the
    # answer's write to the half-closed socket succeeded: the call was recorded ok (seen
    # failing so on ef8bc16: "huge" on both protocols, "large" not in that run, as the reads
    # fall). Now the handler has the server read again after such a body (resume_reading):
    # client_disconnected, charged the answer all the same, as after a small body.
    tok = served_relay.mint()
    body = json.dumps({"model": "fault-delay:1500", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "x" * size}]}).encode()
    _hang_up_before_the_answer(served_relay, tok, body)
    [row] = served_relay.wait_ledger(tok, 1)
    assert row.status == "client_disconnected"
    assert row.cost > 0


class ResumesReading(Recorder):
    """Reads the whole body, has the server read again (resume_reading), waits for the app
    to hang up, then notes what the shortcuts read."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.2)  # the server has read what it will before it pauses
        while (message := await receive()).get("more_body"):
            pass
        if len(message.get("body", b"")) > 65536:
            self.seen.append((shows_hang_up(receive), False, client_gone(receive)))
        resume_reading(receive)
        await asyncio.sleep(0.3)  # the app hangs up meanwhile
        self.seen.append((shows_hang_up(receive), False, client_gone(receive)))


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_after_resume_reading_a_hang_up_shows_past_the_high_water_mark(http: str) -> None:
    app = ResumesReading()
    sock = listen("127.0.0.1", 0)
    protocol: Any = BoundedHttpToolsProtocol if http == "httptools" else "h11"
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, lifespan="off", log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.005)
    try:
        size = 200_000
        head = b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n" % size
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=10) as s:
            s.sendall(head + b"x" * size)
            time.sleep(0.3)  # the app has read the body
        deadline = time.monotonic() + 5
        while len(app.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # paused and blind before; reading and seeing the hang-up after
        assert app.seen == [(False, False, False), (True, False, True)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
