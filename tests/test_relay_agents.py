"""The OpenAI Agents SDK through the relay, with its default settings (the Responses API), and
its tracing leak: set_default_openai_client(client) makes the SDK upload traces to OpenAI with
that client's key, which at the relay is the whole capability token.

The README's setup passes use_for_tracing=False; these tests run the agent that way and check
that no trace upload is attempted, and show the leak the flag prevents (the SDK default sends
the token) against a local stand-in for OpenAI's trace ingest endpoint.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from relay_harness import Relay, fake_requests

from capwallet import caveats as cav

agents = pytest.importorskip("agents")  # openai-agents, a test dependency (pyproject.toml)


class _Ingest(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def trace_ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """Point the SDK's trace exporter at a loopback server that records what it receives."""
    from agents.tracing.processors import default_exporter

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    exporter = default_exporter()
    old = exporter.endpoint
    exporter.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces/ingest"
    exporter.set_api_key("")
    _Ingest.seen = []
    try:
        yield _Ingest.seen
    finally:
        exporter.set_api_key("")
        exporter.endpoint = old
        server.shutdown()


def _agent() -> Any:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agents.Agent(name="helper", instructions="Answer briefly.", model="gpt-5",
                        tools=[agents.function_tool(get_weather)])


async def _closing(client: Any, run: Any) -> Any:
    """Await ``run``, then close ``client`` in the same event loop. An AsyncOpenAI client left
    open closes itself when it is collected, as a task of whatever loop runs at that moment: a
    later test's, which then fails on this loop's closed transports ("Event loop is closed",
    raised by pytest's anyio runner in an unrelated async test)."""
    try:
        return await run
    finally:
        await client.close()


def test_agent_run_and_run_streamed_without_trace_upload(
        relay: Relay, trace_ingest: list[dict[str, str]]) -> None:
    from openai import AsyncOpenAI

    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    client = AsyncOpenAI(base_url=relay.url + "/v1", api_key=tok, max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)  # as the README says

    async def both() -> tuple[Any, list[str]]:
        # One event loop for both: the client's connection pool belongs to it.
        result = await agents.Runner.run(_agent(), "What is the weather in Paris?")
        run = agents.Runner.run_streamed(_agent(), "And in Rome?")
        kinds = [e.type async for e in run.stream_events()]
        assert str(run.final_output).split()[:2] == ["alpha", "bravo"]
        return result, kinds

    result, kinds = asyncio.run(_closing(client, both()))
    assert result.final_output.split()[:2] == ["alpha", "bravo"]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    # Each run: turn 1 called the tool; turn 2 sent its output back (and the reasoning item
    # by id, which the relay reserved at the model's largest output).
    sent = [r for r in fake_requests(relay) if r["path"] == "/v1/responses"][-4:]
    assert [any(i.get("type") == "function_call_output" for i in r["body"]["input"])
            for r in sent] == [False, True, False, True]
    assert sent[2]["body"]["stream"] is True
    rows = relay.wait_ledger(tok, 4)
    assert [r.status for r in rows] == ["ok"] * 4 and all(r.cost > 0 for r in rows)

    agents.flush_traces()
    assert trace_ingest == []  # no upload attempted: there is no key to send


def test_sdk_default_would_upload_the_token(relay: Relay,
                                            trace_ingest: list[dict[str, str]]) -> None:
    from openai import AsyncOpenAI

    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    client = AsyncOpenAI(base_url=relay.url + "/v1", api_key=tok, max_retries=0)
    agents.set_default_openai_client(client)  # the SDK default: use_for_tracing=True
    try:
        asyncio.run(_closing(client, agents.Runner.run(_agent(), "What is the weather in Paris?")))
        agents.flush_traces()
    finally:
        agents.set_default_openai_client(client, use_for_tracing=False)
    assert trace_ingest, "the trace exporter sent nothing"
    assert trace_ingest[0]["authorization"] == f"Bearer {tok}"


def test_readme_snippet_runs_verbatim(relay: Relay, trace_ingest: list[dict[str, str]]) -> None:
    """The README's Agents SDK block, executed as written (with `conn` from the block before
    it standing for a connection), then an agent run: answered, and no trace upload."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
               if "set_default_openai_client" in b]
    assert "use_for_tracing=False" in block
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    scope: dict[str, Any] = {"conn": SimpleNamespace(openai_base_url=relay.url + "/v1",
                                                     token=tok)}
    exec(compile(block, "README.md", "exec"), scope)  # our own README
    result = asyncio.run(_closing(scope["client"], agents.Runner.run(
        _agent(), "What is the weather in Paris?")))
    assert result.final_output.split()[:2] == ["alpha", "bravo"]
    agents.flush_traces()
    assert trace_ingest == []
