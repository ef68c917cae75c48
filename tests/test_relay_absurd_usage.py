"""A provider reporting an absurd usage (2^63 tokens), or an unreadable one (a negative, NaN
or text count), is charged the reserved worst case, plain or streamed, on every route: the app
gets its answer, the ledger says usage_missing, the counters hold the worst case, and one log
line names the token id (reference_relay.calls, Call._settlement).

Before, the settlement reached the store with counts no store holds (SQLite binds 64-bit
integers, the Redis store refuses amounts past 2^53): a plain answer's queued settlement
failed with a log line, a stream's pump died with "background task failed: OverflowError",
and either way the ledger had no row until the lease closed the reservation. The same held for
a charge past 2^53 on the Redis store where neither count nor the cost was: the token quota's
(input + output) and a budget's in a currency other than the ledger's.

Behind the relay: a real HTTP server on a loopback port answering each route with the usage
the test sets (``USAGE``), or with no usage at all (the worst case the relay already charges
for a missing usage, which the absurd one must cost exactly).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from relay_harness import (
    LogCapture,
    Relay,
    ServerThread,
    start_relay,
    token_id,
)

from capwallet import caveats as cav
from capwallet.store import LedgerEntry, open_store

# The output count the provider reports (None: no usage at all), and the input count;
# either ABSENT: the usage leaves that count out.
USAGE: dict[str, Any] = {"output": None, "input": 10}
ABSENT = "absent"

ROUTES = {
    "chat": ("/v1/chat/completions", {"model": "relay-test", "max_tokens": 8,
                                      "messages": [{"role": "user", "content": "hi"}]}),
    "messages": ("/v1/messages", {"model": "claude-test", "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", {"model": "relay-test", "max_output_tokens": 8,
                                    "input": "hi"}),
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _event(obj: dict[str, Any], name: str | None = None) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + _dumps(obj) + b"\n\n"


def _counts(**counts: Any) -> dict[str, Any]:
    """A usage object of the counts given, less those ABSENT."""
    return {name: v for name, v in counts.items() if v != ABSENT}


def _answer(path: str, stream: bool) -> bytes:
    out, given = USAGE["output"], USAGE["input"]
    if path.endswith("/chat/completions"):
        usage = None if out is None else _counts(prompt_tokens=given, completion_tokens=out,
                                                 total_tokens=out)
        choice = {"index": 0, "message": {"role": "assistant", "content": "hi"},
                  "finish_reason": "stop"}
        if not stream:
            return _dumps({"id": "c", "object": "chat.completion", "choices": [choice],
                           **({"usage": usage} if usage else {})})
        chunk = {"id": "c", "object": "chat.completion.chunk"}
        body = _event({**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]})
        if usage:
            body += _event({**chunk, "choices": [], "usage": usage})
        return body + b"data: [DONE]\n\n"
    if path.endswith("/messages"):
        usage = None if out is None else _counts(input_tokens=given, output_tokens=out)
        if not stream:
            return _dumps({"id": "m", "type": "message", "role": "assistant",
                           "content": [{"type": "text", "text": "hi"}],
                           "stop_reason": "end_turn", **({"usage": usage} if usage else {})})
        start: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant",
                                 "content": []}
        if usage:
            start["usage"] = _counts(input_tokens=given, output_tokens=1)
        delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
        if usage:
            delta["usage"] = _counts(output_tokens=out)
        return (_event({"type": "message_start", "message": start}, "message_start")
                + _event(delta, "message_delta")
                + _event({"type": "message_stop"}, "message_stop"))
    response: dict[str, Any] = {
        "id": "r", "object": "response", "status": "completed", "output": [],
        "usage": None if out is None else _counts(input_tokens=given, output_tokens=out)}
    if not stream:
        return _dumps(response)
    return _event({"type": "response.completed", "response": response}, "response.completed")


async def provider(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    stream = bool(json.loads(body).get("stream"))
    out = _answer(scope["path"], stream)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream" if stream else b"application/json"),
        (b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def absurd_relay(tmp_path_factory: pytest.TempPathFactory,
                 captured_logs: LogCapture) -> Iterator[Relay]:
    server = ServerThread(provider).start()
    r = start_relay(server.url, tmp_path_factory.mktemp("absurd"))
    try:
        yield r
    finally:
        r.close()
        server.stop()


def _call(r: Relay, route: str, stream: bool, output: Any,
          given: Any = 10) -> tuple[str, int, int, int, int]:
    """One call with the provider reporting ``output`` tokens, and ``given`` as the input
    count (10 again after it): (ledger status, input and output tokens, cost, budget used),
    from the ledger row and the counters."""
    USAGE["output"] = output
    tok = r.mint(cav.Budget(1000, "USD", "month"))
    path, body = ROUTES[route]
    USAGE["input"] = given
    try:
        sent = r.post(path, {**body, "stream": stream}, tok)
    finally:
        USAGE["input"] = 10
    assert sent.status_code == 200, sent.text
    if stream:
        assert b"error" not in sent.content
    [row] = r.wait_ledger(tok, 1, timeout=3)
    [used] = r.counters(tok).values()
    assert used == row.cost
    return row.status, row.input_tokens, row.output_tokens, row.cost, used


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("output", [2**63, 2**64 + 1, 2**53], ids=["2^63", "2^64+1", "2^53"])
def test_an_absurd_usage_is_charged_the_worst_case(
        absurd_relay: Relay, captured_logs: LogCapture, route: str, stream: bool,
        output: int) -> None:
    worst = _call(absurd_relay, route, stream, None)  # no usage: the reserved worst case
    assert worst[0] == "usage_missing"
    before = len(captured_logs.lines)
    got = _call(absurd_relay, route, stream, output)
    assert got == worst
    lines = captured_logs.lines[before:]
    assert not [line for line in lines if "background task failed" in line
                or "settle failed" in line or "Traceback" in line]
    absurd = [line for line in lines if "absurd usage" in line]
    assert len(absurd) == 1 and "token=" in absurd[0]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("field", ["output", "input"])
@pytest.mark.parametrize("junk", [-5, math.nan, 1e300, "9", True],
                         ids=["negative", "nan", "1e300", "text", "bool"])
def test_an_unreadable_count_is_charged_the_worst_case(
        absurd_relay: Relay, captured_logs: LogCapture, route: str, stream: bool,
        field: str, junk: Any) -> None:
    # Read as 0 before (metering._int), such a count charged the call nothing for it (status
    # ok, 0 tokens: seen failing so); it is charged as a missing usage now, as an absurd one
    # is, with one log line naming the token id.
    worst = _call(absurd_relay, route, stream, None)
    assert worst[0] == "usage_missing"
    before = len(captured_logs.lines)
    got = _call(absurd_relay, route, stream, junk if field == "output" else 3,
                junk if field == "input" else 10)
    assert got == worst
    lines = captured_logs.lines[before:]
    assert not [line for line in lines if "background task failed" in line
                or "settle failed" in line or "Traceback" in line]
    unreadable = [line for line in lines if "unreadable usage" in line]
    assert len(unreadable) == 1 and "token=" in unreadable[0]


def _usage_lines(lines: list[str]) -> list[str]:
    """The log lines of a usage the relay could not charge as given (Call._settlement)."""
    return [line for line in lines if "usage" in line and "token=" in line
            and "charged the reserved worst case" in line]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_usage_without_its_input_count_is_charged_as_none_and_logged(
        absurd_relay: Relay, captured_logs: LogCapture, route: str, stream: bool) -> None:
    # The output count given (5), the input's left out (an Anthropic stream: message_start's
    # usage without input_tokens): the worst case, as for no usage, status usage_missing
    # and one log line, as for any usage the relay cannot charge as given (spec/budgets.md).
    # Seen failing on the old code: an Anthropic stream was charged the worst case with
    # status ok; every route logged nothing.
    worst = _call(absurd_relay, route, stream, None)
    before = len(captured_logs.lines)
    got = _call(absurd_relay, route, stream, 5, ABSENT)
    assert got == worst and got[0] == "usage_missing"
    lines = _wait_usage_lines(captured_logs, before)
    assert len(lines) == 1 and "usage without an input count token=" in lines[0], lines


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_usage_with_two_flaws_is_logged_once(
        absurd_relay: Relay, captured_logs: LogCapture, route: str, stream: bool) -> None:
    # No output count and an absurd input (2^63): the worst case, one log line naming both.
    # Seen failing on the old code: two lines ('usage without an output count', then
    # 'absurd usage').
    worst = _call(absurd_relay, route, stream, None)
    before = len(captured_logs.lines)
    got = _call(absurd_relay, route, stream, ABSENT, 2**63)
    assert got == worst
    lines = _wait_usage_lines(captured_logs, before)
    assert len(lines) == 1 and "absurd usage without an output count token=" in lines[0], lines


def _wait_usage_lines(captured_logs: LogCapture, before: int) -> list[str]:
    """The usage log lines since ``before``, once there is one (a queued settlement's line
    is written as the store takes it, which the ledger row may precede), and 0.1 s more for
    a second one."""
    deadline = time.monotonic() + 3
    while not _usage_lines(captured_logs.lines[before:]):
        assert time.monotonic() < deadline, "no usage log line"
        time.sleep(0.01)
    time.sleep(0.1)
    return _usage_lines(captured_logs.lines[before:])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_fraction_of_a_token_is_charged_rounded_up(
        absurd_relay: Relay, captured_logs: LogCapture, route: str, stream: bool) -> None:
    before = len(captured_logs.lines)
    status, tokens_in, tokens_out, _, _ = _call(absurd_relay, route, stream, 1.5)
    assert (status, tokens_in, tokens_out) == ("ok", 10, 2)
    assert not [line for line in captured_logs.lines[before:]
                if " ERROR " in line or "Traceback" in line]


def test_the_log_names_the_token_id_only(absurd_relay: Relay,
                                         captured_logs: LogCapture) -> None:
    USAGE["output"] = 2**63
    tok = absurd_relay.mint(cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    path, body = ROUTES["chat"]
    assert absurd_relay.post(path, {**body, "stream": True}, tok).status_code == 200
    absurd_relay.wait_ledger(tok, 1, timeout=3)
    deadline = time.monotonic() + 3
    while not any("absurd usage" in line for line in captured_logs.lines[before:]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    [line] = [x for x in captured_logs.lines[before:] if "absurd usage" in x]
    assert f"token={token_id(tok)}" in line and tok not in line


@pytest.fixture(scope="module")
def redis_relay(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
                captured_logs: LogCapture) -> Iterator[tuple[Relay, str]]:
    server = ServerThread(provider).start()
    url = f"{redis_url}?prefix=absurd{secrets.token_hex(4)}"
    r = start_relay(server.url, tmp_path_factory.mktemp("absurd-redis"), store=open_store(url))
    try:
        yield r, url
    finally:
        r.close()
        server.stop()


def _rows(url: str, token: str, timeout: float = 3) -> list[LedgerEntry]:
    """The token's ledger rows, once there are any (read with a store of this loop's own)."""

    async def read() -> list[LedgerEntry]:
        store = open_store(url)
        try:
            return await store.ledger(token_ids=[token_id(token)])
        finally:
            await store.close()

    deadline = time.monotonic() + timeout
    while not (rows := asyncio.run(read())):
        assert time.monotonic() < deadline, "no ledger row"
        time.sleep(0.02)
    return rows


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_quota_past_the_largest_charge_is_charged_the_worst_case_on_redis(
        redis_relay: tuple[Relay, str], captured_logs: LogCapture, stream: bool) -> None:
    # Input and output each under 2^53 but their sum, the token quota's charge, past it (the
    # input of relay-out is free, so the cost is not: a free local model's would be neither):
    # the Redis store refuses such a charge, so it is charged the worst case as any absurd
    # usage is, its ledger row written at once, not left for the lease.
    USAGE.update(output=8, input=2**53 - 5)
    relay, url = redis_relay
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.TokenQuota(10**6, "month"))
    before = len(captured_logs.lines)
    path, body = ROUTES["chat"]
    sent = relay.post(path, {**body, "model": "relay-out", "stream": stream}, tok)
    assert sent.status_code == 200, sent.text
    [row] = _rows(url, tok)
    try:
        assert (row.status, row.output_tokens) == ("usage_missing", 8)
        lines = captured_logs.lines[before:]
        assert not [line for line in lines if "failed" in line or "Traceback" in line]
    finally:
        USAGE["input"] = 10


def test_a_budget_in_another_currency_past_the_largest_charge_is_charged_the_worst_case(
        redis_relay: tuple[Relay, str], captured_logs: LogCapture) -> None:
    # The ledger counts in the first budget's currency (EUR); the USD budget's charge is the
    # same cost at the harness's 1 USD = 0.87 EUR: past 2^53 microcents where the EUR one is
    # not. The Redis store refuses it, so the call is charged the worst case.
    relay, url = redis_relay
    USAGE["output"] = 32_000_000_000  # 0.3 cent each: 9.6e15 microcents, 8.4e15 in EUR
    tok = relay.mint(cav.Budget(1000, "EUR", "month"), cav.Budget(1000, "USD", "month"))
    before = len(captured_logs.lines)
    path, body = ROUTES["chat"]
    sent = relay.post(path, {**body, "model": "relay-out"}, tok)
    assert sent.status_code == 200, sent.text
    [row] = _rows(url, tok)
    assert (row.status, row.output_tokens, row.currency) == ("usage_missing", 8, "EUR")
    lines = captured_logs.lines[before:]
    assert not [line for line in lines if "failed" in line or "Traceback" in line]
