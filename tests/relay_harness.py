"""Test harness for the reference relay: a fake provider and real relays on loopback ports.

The relay runs in-process under a real uvicorn server in a thread (so its log records reach
this process's handlers and can be checked for leaked keys); the fake provider
(the fake_provider package) stands for OpenAI and Anthropic. Configs start from the shipped
reference_relay/relay.example.toml with base URLs pointed at the fake and a few test models.

Test models (prices in USD cents per million tokens x 1000, as in prices.toml):
* relay-test / claude-test: 0.1 cent per input token, 0.3 cent per output token, max 64 out;
* relay-out: input free, 0.3 cent per output token (worst case = actual when max_tokens is
  the fake's reply length, 16: 4.8 cents a call, counted in microunits);
* relay-nolimit: priced, no max_output (an app must bound it);
* gpt-5-test: priced like relay-test, max 64 out; the fake treats gpt-5* as a reasoning model
  (8 reasoning tokens before the reply);
* relay-search: priced like relay-test, with web search at 10 USD per 1,000 calls and 100
  search content tokens per call (the fake's own figure);
* fault-<mode>: the fake misbehaves; priced like relay-test.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
import uvicorn
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.limits import EffectiveLimits
from capwallet.store import LedgerEntry, Store, open_store
from capwallet.token import mint
from fake_provider import running_fake_provider
from reference_relay.app import counter_keys, create_app
from reference_relay.config import RelayConfig, parse_config
from reference_relay.listen import listen

T = TypeVar("T")
EXAMPLE = Path(__file__).resolve().parents[1] / "reference_relay" / "relay.example.toml"
FAKE_KEY = "sk-fake-" + secrets.token_hex(20)  # unique, so a leak is findable anywhere
FAULTS = ["http500", "http429", "reset", "malformed", "stream_cut:2", "no_usage",
          "no_output_count", "delay:1500", "slow_stream:40", "long:40"]
WHOLE_TOKEN = re.compile(r"cwt1_[A-Za-z0-9_-]{40,}")  # logs may name a token id, never this
# The one message most tests send (the fake counts 10 input tokens), typed for each SDK: each
# types a message as its own TypedDict, and mypy takes neither for the other nor a plain dict.
HELLO_OPENAI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
HELLO_ANTHROPIC: list[MessageParam] = [{"role": "user", "content": "hello there"}]
TEST_PRICE = {"input": 100_000_000, "output": 300_000_000, "currency": "USD", "max_output": 64}


def test_models() -> list[dict[str, Any]]:
    return [
        {"id": "relay-test", **TEST_PRICE},
        {"id": "relay-out", "input": 0, "output": 300_000_000, "currency": "USD",
         "max_output": 64},
        {"id": "relay-nolimit", "input": 100_000_000, "output": 300_000_000, "currency": "USD"},
        {"id": "gpt-5-test", **TEST_PRICE},
        {"id": "relay-search", **TEST_PRICE, "web_search_call": 1_000_000,
         "web_search_tokens": 100},
        *({"id": f"fault-{f}", **TEST_PRICE} for f in FAULTS),
    ]


def config_data(fake_url: str, **relay: Any) -> dict[str, Any]:
    data = tomllib.loads(EXAMPLE.read_text("utf-8"))
    for p in data["providers"]:
        p["base_url"] = fake_url + ("/v1" if p["api"] == "openai" else "")
        if p["id"] == "gemini":  # the fake's Gemini flavour, at Gemini's own path
            p["base_url"] = fake_url + "/v1beta/openai"
        if p["id"] == "openai":
            p["models"] = [*p["models"], *test_models()]
        if p["id"] == "anthropic":
            p["models"] = [*p["models"], {"id": "claude-test", **TEST_PRICE},
                           *({"id": f"fault-{f}", **TEST_PRICE} for f in FAULTS)]
    data["relay"].update({"sweep_interval": 0.2, **relay})
    return data


@dataclass
class ServerThread:
    """A real uvicorn server for an ASGI app, on a free loopback port, in a thread."""

    app: Any
    url: str = ""
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    http: Any = "h11"  # uvicorn's protocol: its name, or a class (the relay's own httptools)

    def start(self) -> ServerThread:
        sock = listen("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, http=self.http, lifespan="on", log_config=None, access_log=False,
            timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True, name="relay")
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("relay did not start")
            time.sleep(0.005)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._sock = sock
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
        self._sock.close()


@dataclass
class Relay:
    """A running relay with its config, root key and a store handle of the test's own."""

    url: str
    fake: str
    root: RootKey
    config: RelayConfig
    server: ServerThread
    _store: Store | None = field(default=None, repr=False)

    # -- tokens and clients -------------------------------------------------------------------

    def mint(self, *caveats: cav.Caveat) -> str:
        return mint(self.root, list(caveats)).serialize()

    def openai(self, token: str, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=token, max_retries=0, **kw)

    def anthropic(self, token: str, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=token, max_retries=0, **kw)

    def post(self, path: str, body: Any, token: str | None, *,
             headers: dict[str, str] | None = None, auth: str = "bearer") -> httpx.Response:
        h = dict(headers or {})
        if token is not None:
            if auth == "bearer":
                h["authorization"] = "Bearer " + token
            else:
                h["x-api-key"] = token
        kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(self.url + path, headers=h, timeout=30, **kw)
        assert_no_key(r)
        return r

    def chat(self, token: str, model: str = "relay-test", **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}],
                **extra}
        return self.post("/v1/chat/completions", body, token)

    def hang_up_stream(self, path: str, body: dict[str, Any], token: str,
                       until: bytes = b"") -> None:
        """Start a streamed call, read its first chunk (or read until ``until`` has come),
        then close the connection: a client that goes away mid-stream."""
        with httpx.stream("POST", self.url + path, json=body,
                          headers={"authorization": "Bearer " + token}, timeout=30) as r:
            assert r.status_code == 200
            seen = b""
            for chunk in r.iter_raw():
                seen += chunk
                if until in seen:
                    break

    # -- store (the test's own handle on the relay's SQLite file) -------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.store_url)
        return self._store

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def quiesce(self, timeout: float = 10) -> None:
        """Wait until the relay has no call in flight (settlements and denial rows are written
        by tasks that may finish just after the app got its answer: the relay's own, and the
        server's request handlers, which settle a plain call after sending its answer), then
        until the settlements those left queued in the relay's store are written: a handler
        that queued one with settle_soon is gone before the store's batch commits it."""
        relay = self.server.app.state.relay
        tasks = relay.tasks
        assert self.server.server is not None
        handlers = self.server.server.server_state.tasks
        deadline = time.monotonic() + timeout
        while (tasks or handlers) and time.monotonic() < deadline:
            time.sleep(0.005)
        loop = self.server.server.servers[0].get_loop()  # the relay's, in the server's thread
        drained = asyncio.run_coroutine_threadsafe(relay.store.drain(), loop)
        drained.result(timeout=max(deadline - time.monotonic(), 0.1))

    def ledger(self, token: str | None = None) -> list[LedgerEntry]:
        self.quiesce()
        ids = None if token is None else [token_id(token)]
        return self.run(self.store.ledger(token_ids=ids))

    def wait_ledger(self, token: str, n: int, timeout: float = 10) -> list[LedgerEntry]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.ledger(token)
            # calls, not rows: a compacted refusal row stands for `count` refused calls
            if sum(r.count for r in rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def counters(self, token: str) -> dict[str, int]:
        """Used value of each of the token's counters in their current period."""
        from capwallet.verify import Verifier
        from reference_relay.app import counter_keys
        self.quiesce()
        v = Verifier(Keyring([self.root])).check_token(token)
        keys = counter_keys(v.limits, int(time.time()))
        return self.run(self.store.counters(keys))

    def close(self) -> None:
        self.server.stop()
        if self._store is not None:
            asyncio.run(self._store.close())


def relay_out(relay: Relay, token: str, **body: Any) -> httpx.Response:
    """A chat call on relay-out (input free, 0.3 USD cent per output token, so its worst case is
    exactly max_tokens x n x 0.3 cent), with the fake provider's request log cleared first."""
    httpx.delete(relay.fake + "/_fake/requests")
    return relay.post("/v1/chat/completions", {
        "model": "relay-out", "messages": [{"role": "user", "content": "hello there"}], **body},
        token)


def fake_requests(relay: Relay) -> list[dict[str, Any]]:
    """What the fake provider received (oldest first)."""
    data = httpx.get(relay.fake + "/_fake/requests").json()
    return list(data["requests"] if isinstance(data, dict) else data)


def token_id(token: str) -> str:
    from capwallet.token import Token
    return Token.parse(token).token_id


def stored_outcome(url: str, token: str, limits: EffectiveLimits
                   ) -> tuple[list[LedgerEntry], int]:
    """What the store at ``url`` holds for ``token`` once its calls are over: its ledger rows
    and the used amount of the one counter its ``limits`` name."""

    async def read() -> tuple[list[LedgerEntry], int]:
        store = open_store(url)
        try:
            rows = await store.ledger(token_ids=[token_id(token)])
            [used] = (await store.counters(counter_keys(limits, int(time.time())))).values()
            return rows, used
        finally:
            await store.close()

    return asyncio.run(read())


def assert_no_key(r: httpx.Response) -> None:
    assert FAKE_KEY not in r.text
    assert all(FAKE_KEY not in v for v in r.headers.values())


def error_code(r: httpx.Response) -> str:
    body = r.json()
    code = body["error"]["reason"]  # "code" may be the provider's convention (insufficient_quota)
    assert r.headers["x-capwallet-reason"] == code
    return str(code)


def start_relay(fake: str, tmp: Path, *, provider_keys: Callable[[str], str] | None = None,
                store: Store | None = None, **relay: Any) -> Relay:
    root = RootKey.generate()
    root.save(tmp / "root.key")
    data = config_data(fake, **relay)
    config = parse_config(data, tmp)
    app = create_app(config, store=store,
                     provider_keys=provider_keys or (lambda pid: FAKE_KEY))
    server = ServerThread(app).start()
    return Relay(server.url, fake, root, config, server)


class LogCapture(logging.Handler):
    """Keeps every record (formatted, with exception text) for leak checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    with running_fake_provider(FAKE_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def captured_logs() -> Iterator[LogCapture]:
    """All log records of the module, at DEBUG, from every logger (httpx, uvicorn, relay)."""
    handler = LogCapture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    leaked = [line for line in handler.lines if FAKE_KEY in line]
    assert not leaked, f"provider key in {len(leaked)} log line(s)"
    tokens = [WHOLE_TOKEN.sub("cwt1_<token>", line)[:200] for line in handler.lines
              if WHOLE_TOKEN.search(line)]
    assert not tokens, f"a whole capability token in {len(tokens)} log line(s): {tokens[:3]}"


@pytest.fixture(scope="module")
def relay(fake: str, tmp_path_factory: pytest.TempPathFactory,
          captured_logs: LogCapture) -> Iterator[Relay]:
    r = start_relay(fake, tmp_path_factory.mktemp("relay"),
                    wallet_url="http://127.0.0.1:9/wallet")
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def fresh_relay(fake: str, tmp_path: Path,
                captured_logs: LogCapture) -> Iterator[Callable[..., Relay]]:
    """Start a relay with other settings: fresh_relay(log_bodies=True, ...)."""
    started: list[Relay] = []

    def make(**kw: Any) -> Relay:
        d = tmp_path / f"r{len(started)}"
        d.mkdir()
        r = start_relay(fake, d, **kw)
        started.append(r)
        return r

    try:
        yield make
    finally:
        for r in started:
            r.close()
