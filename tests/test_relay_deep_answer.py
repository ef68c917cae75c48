"""A provider answer nested deeper than a JSON parser goes is an unreadable answer: 502
upstream_error, charged the reserved worst case at once (the rule for a malformed answer,
reference_relay.calls), never the relay's own 500.

The answer's usage is read by orjson, and by the json module where orjson cannot (or could
read it otherwise): orjson refuses nesting past 1024 levels, and the json module then raised
RecursionError, not the ValueError the relay catches for an unreadable answer, so the call
ended as an internal error (500) and its reservation stayed open until the lease sweep.

Behind the relay here: a real HTTP server on a loopback port that answers every request with
a 200 whose body is a chat completion holding a 5000-deep array.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from relay_harness import ServerThread, stored_outcome
from test_relay_cancelled_handler import in_process, run

from reference_relay.metering import answer_usage

DEEP = (b'{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,'
        b'"completion_tokens":16,"total_tokens":26},"extra":' + b"[" * 5000 + b"]" * 5000
        + b"}")


async def deep_provider(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the request to its end
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(DEEP))]})
    await send({"type": "http.response.body", "body": DEEP})


def test_a_deeply_nested_answer_is_an_upstream_error_charged_the_worst_case(
        tmp_path: Path) -> None:
    server = ServerThread(deep_provider).start()
    seen: dict[str, Any] = {}
    url = f"sqlite:///{tmp_path}/relay.db"
    try:
        async def main() -> None:
            async with in_process(server.url, tmp_path, warm=False, store=url) as r:
                seen["token"] = r.token
                seen["limits"] = r.relay.verifier.check_token(r.token).limits
                sent = await r.call("relay-test")
                seen["status"] = sent[0]["status"]
                seen["headers"] = dict(sent[0]["headers"])
                seen["body"] = json.loads(sent[1]["body"])

        run(main())
    finally:
        server.stop()
    assert seen["status"] == 502
    assert seen["headers"][b"x-capwallet-reason"] == b"upstream_error"
    assert "not valid JSON" in seen["body"]["error"]["message"]

    rows, used = stored_outcome(url, seen["token"], seen["limits"])
    # relay-test's worst case: the input estimate and max_tokens (32) of output, both priced.
    assert [e.status for e in rows] == ["upstream_error"]
    assert rows[0].output_tokens == 32 and rows[0].cost > 32 * 3_000 * 100
    assert used == rows[0].cost


@pytest.mark.parametrize("flavor", ["openai", "anthropic", "responses"])
@pytest.mark.parametrize("depth", [10, 990, 1010, 1020, 5000])
def test_answer_usage_reads_any_depth_or_says_value_error(flavor: str, depth: int) -> None:
    # Nesting inside the usage object itself: orjson reads up to 1024 levels, deeper than
    # Python's recursion limit lets a walk of it go (_inexact), and the json module's depth.
    body = (b'{"usage":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
    try:
        answer_usage(flavor, body)
    except ValueError:
        pass  # an unreadable answer: charged the worst case (Call._answered)
