"""Metering under stress: concurrency, disconnects, upstream faults, leases, the ledger."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from relay_harness import (
    EXAMPLE,
    FAKE_KEY,
    HELLO_ANTHROPIC,
    HELLO_OPENAI,
    LogCapture,
    Relay,
    error_code,
    token_id,
)

from capwallet import caveats as cav
from capwallet.store import Hold, Reservation

HELLO = [{"role": "user", "content": "hello there"}]


def budget_used(relay: Relay, tok: str) -> int:
    [used] = relay.counters(tok).values()
    return used


# -- concurrency ------------------------------------------------------------------------------

async def _burst(relay: Relay, tok: str, model: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        body = {"model": model, "messages": HELLO, "max_tokens": 16}
        return await asyncio.gather(*(
            client.post(relay.url + "/v1/chat/completions", json=body,
                        headers={"authorization": "Bearer " + tok}) for _ in range(n)))


def test_200_concurrent_calls_never_overspend(relay: Relay) -> None:
    # relay-out: worst case = actual = 4.8 cents; 240 cents afford exactly 50 calls.
    tok = relay.mint(cav.Budget(240, "USD", "month"), cav.TokenQuota(10**9, "day"))
    rs = asyncio.run(_burst(relay, tok, "relay-out", 200))
    ok = [r for r in rs if r.status_code == 200]
    denied = [r for r in rs if r.status_code != 200]
    assert len(ok) == 50
    assert {r.status_code for r in denied} == {429}
    assert {r.json()["error"]["reason"] for r in denied} == {"budget_exceeded"}
    rows = relay.wait_ledger(tok, 200)
    assert sum(e.count for e in rows) == 200  # refusals: one row per reason and minute
    paid = [e for e in rows if e.status == "ok"]
    assert len(paid) == 50
    budget_used_, quota_used = relay.counters(tok).values()  # in caveat order
    assert sum(e.cost for e in rows) == budget_used_ == 240_000_000
    assert sum(e.input_tokens + e.output_tokens for e in rows) == quota_used


def test_concurrent_calls_settle_below_reservations(relay: Relay) -> None:
    # relay-test reserves its input estimate but is charged for the fake's count: the
    # settled spend stays within the budget and matches the ledger exactly.
    tok = relay.mint(cav.Budget(300, "USD", "month"))
    rs = asyncio.run(_burst(relay, tok, "relay-test", 200))
    ok = sum(r.status_code == 200 for r in rs)
    assert ok >= 10
    assert all(r.status_code in (200, 429) for r in rs)
    rows = relay.wait_ledger(tok, 200)
    assert sum(e.cost for e in rows) == budget_used(relay, tok) <= 300_000_000
    assert sum(e.status == "ok" for e in rows) == ok


# -- client disconnects -----------------------------------------------------------------------

def test_stream_client_disconnect_is_still_metered(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-slow_stream:40", "messages": HELLO, "max_tokens": 32,
            "stream": True}
    relay.hang_up_stream("/v1/chat/completions", body, tok)  # after one chunk
    [row] = relay.wait_ledger(tok, 1)
    # The relay read the provider's stream to the end and charged its reported usage.
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "client_disconnected", 10, 16, 5_800_000)
    assert budget_used(relay, tok) == 5_800_000


def test_stream_client_gone_near_the_end_is_recorded_as_gone(relay: Relay) -> None:
    # The app reads every content chunk, up to the finish reason, and hangs up before the
    # usage event and [DONE]: it did not stay to the end, and the ledger says so; the relay
    # still reads the usage and charges it.
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-slow_stream:40", "messages": HELLO, "max_tokens": 32,
            "stream": True}
    relay.hang_up_stream("/v1/chat/completions", body, tok, until=b'"finish_reason":"')
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "client_disconnected", 10, 16, 5_800_000)


@pytest.mark.parametrize("client", ["httpx", "openai"])
def test_non_stream_client_disconnect_is_still_metered(relay: Relay, client: str) -> None:
    # The app gives up while the provider thinks: the relay still reads the answer, charges
    # its reported usage, and the ledger says the app left before the answer was sent (as
    # for a stream), not ok: it was charged for an answer it never got.
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-delay:1500", "messages": HELLO, "max_tokens": 32}
    if client == "httpx":
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(relay.url + "/v1/chat/completions", json=body,
                       headers={"authorization": "Bearer " + tok},
                       timeout=httpx.Timeout(10, read=0.3))
    else:
        with pytest.raises(openai.APITimeoutError):
            relay.openai(tok, timeout=0.3).chat.completions.create(
                model="fault-delay:1500", messages=HELLO_OPENAI, max_tokens=32)
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.input_tokens, row.output_tokens, row.cost) == (
        "client_disconnected", 10, 16, 5_800_000)
    assert budget_used(relay, tok) == 5_800_000


def test_non_stream_answer_the_app_got_is_ok(relay: Relay) -> None:
    # The same slow answer, waited for: ok (the disconnect test above is not always true).
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    got = relay.openai(tok, timeout=30).chat.completions.create(
        model="fault-delay:1500", messages=HELLO_OPENAI, max_tokens=32)
    assert got.usage is not None and got.usage.completion_tokens == 16
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.cost) == ("ok", 5_800_000)


def test_stream_client_gone_before_the_provider_answers_is_still_metered(relay: Relay) -> None:
    # The app hangs up while the relay waits for the provider's head: the relay still reads
    # the stream the provider then sends (in one burst), and charges its reported usage. The
    # ledger says the app left: it got none of the stream (the relay asks the server whether
    # the app is still there before it sends the head, and listens for the hang-up after).
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-delay:1500", "messages": HELLO, "max_tokens": 32,
            "stream": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(relay.url + "/v1/chat/completions", json=body,
                   headers={"authorization": "Bearer " + tok},
                   timeout=httpx.Timeout(10, read=0.3))
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "client_disconnected"
    assert (row.input_tokens, row.output_tokens, row.cost) == (10, 16, 5_800_000)
    assert budget_used(relay, tok) == 5_800_000


def test_stream_call_cancelled_before_the_provider_answers_releases(relay: Relay) -> None:
    # The call's task is cancelled (as at a shutdown past its grace) while it waits for the
    # provider's head: the app gets a refusal instead of a hang, and nothing is charged.
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    body = {"model": "fault-delay:1500", "messages": HELLO, "max_tokens": 16, "stream": True}
    tasks = relay.server.app.state.relay.tasks
    got: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: got.append(httpx.post(
        relay.url + "/v1/chat/completions", json=body, timeout=30,
        headers={"authorization": "Bearer " + tok})))
    sender.start()
    deadline = time.monotonic() + 10
    while not tasks and time.monotonic() < deadline:
        time.sleep(0.005)
    for task in list(tasks):
        task.get_loop().call_soon_threadsafe(task.cancel)
    sender.join(timeout=30)
    [r] = got
    # The refusal the cancelled call answers with (an uncancelled call streams a 200).
    assert r.status_code == 502 and error_code(r) == "upstream_error"
    assert "cancelled" in r.json()["error"]["message"]
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.cost) == ("upstream_error", 0)
    assert budget_used(relay, tok) == 0


# -- upstream faults ----------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "code"), [
    ("http500", 502, "upstream_error"),
    ("http429", 429, "upstream_rate_limited"),
    ("reset", 502, "upstream_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failure_before_output_releases(relay: Relay, fault: str, status: int,
                                                 code: str, stream: bool) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.Rate(100))
    r = relay.chat(tok, model=f"fault-{fault}", max_tokens=16, stream=stream)
    assert r.status_code == status and error_code(r) == code
    [row] = relay.wait_ledger(tok, 1)
    assert (row.status, row.cost) == ("upstream_error", 0)
    assert set(relay.counters(tok).values()) == {0}  # budget and rate both released


def test_anthropic_upstream_failure_releases(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.post("/v1/messages", {"model": "fault-http500", "max_tokens": 16,
                                    "messages": HELLO}, tok, auth="x-api-key")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert r.json()["type"] == "error"
    assert relay.wait_ledger(tok, 1)[0].cost == 0 and budget_used(relay, tok) == 0


def _worst(relay: Relay, model: str, stream: bool = False) -> int:
    """What a relay-test-priced call with max_tokens 16 reserves (seen via a budget denial)."""
    tok = relay.mint(cav.Budget(1, "USD", "month"))
    r = relay.chat(tok, model=model, max_tokens=16, stream=stream)
    assert r.status_code == 429
    return int(r.json()["error"]["needed"])


def test_stream_cut_after_output_charges_worst_case(relay: Relay) -> None:
    worst = _worst(relay, "fault-stream_cut:2", stream=True)
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    with pytest.raises(openai.APIError):
        for _ in relay.openai(tok).chat.completions.create(
                model="fault-stream_cut:2", messages=HELLO_OPENAI, max_tokens=16, stream=True):
            pass
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "upstream_error" and row.output_tokens == 16
    assert row.cost == worst == budget_used(relay, tok) > 5_800_000


def test_anthropic_stream_cut_charges_known_input_and_worst_output(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error type for a broken stream
        with relay.anthropic(tok).messages.stream(model="fault-stream_cut:2", max_tokens=16,
                                                  messages=HELLO_ANTHROPIC) as s:
            for _ in s.text_stream:
                pass
    [row] = relay.wait_ledger(tok, 1)
    # message_start told the input (10 tokens); the output is charged at its cap.
    assert (row.status, row.input_tokens, row.output_tokens) == ("upstream_error", 10, 16)
    assert row.cost == 5_800_000 == budget_used(relay, tok)  # 10 * 0.1 + 16 * 0.3 cents


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_charges_worst_case(relay: Relay, stream: bool) -> None:
    worst = _worst(relay, "fault-no_usage", stream)
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.chat(tok, model="fault-no_usage", max_tokens=16, stream=stream)
    assert r.status_code == 200  # the app still gets its answer
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "usage_missing" and row.cost == worst == budget_used(relay, tok)


def test_malformed_answer_charges_worst_case(relay: Relay) -> None:
    worst = _worst(relay, "fault-malformed")
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.chat(tok, model="fault-malformed", max_tokens=16, stream=False)
    assert r.status_code == 502 and error_code(r) == "upstream_error"
    [row] = relay.wait_ledger(tok, 1)
    assert row.status == "upstream_error" and row.cost == worst == budget_used(relay, tok)


def test_provider_exceeding_the_cap_is_charged_its_real_usage(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    r = relay.chat(tok, model="fault-long:40", max_tokens=16)
    assert r.status_code == 200
    [row] = relay.wait_ledger(tok, 1)
    assert (row.output_tokens, row.cost) == (40, 13_000_000)  # 10 * 0.1 + 40 * 0.3 cents
    assert budget_used(relay, tok) == 13_000_000


def test_upstream_timeout(fresh_relay: Callable[..., Relay]) -> None:
    r = fresh_relay(upstream_timeout=0.4)
    tok = r.mint(cav.Budget(1000, "USD", "month"))
    resp = r.chat(tok, model="fault-delay:1500", max_tokens=16)
    assert resp.status_code == 504 and error_code(resp) == "upstream_timeout"
    [row] = r.wait_ledger(tok, 1)
    # The request reached the provider, which may bill it: charged conservatively.
    assert row.status == "upstream_error" and row.cost == budget_used(r, tok) > 0
    # A stream that times out before its first byte is charged alike (it was released).
    tok = r.mint(cav.Budget(1000, "USD", "month"))
    resp = r.chat(tok, model="fault-delay:1500", max_tokens=16, stream=True)
    assert resp.status_code == 504 and error_code(resp) == "upstream_timeout"
    [streamed] = r.wait_ledger(tok, 1)
    assert streamed.status == "upstream_error"
    assert streamed.cost == budget_used(r, tok) > 0


# -- leases -----------------------------------------------------------------------------------

def test_sweeper_closes_expired_leases(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    now = int(time.time())
    res = Reservation(secrets.token_hex(16), token_id(tok), (Hold("crashed/x", 42, 100),),
                      lease_until=now - 1, created_at=now - 700,
                      meta={"model": "relay-test", "provider": "openai", "cost": 42,
                            "currency": "USD"})
    assert relay.run(relay.store.reserve(res)).ok
    [row] = relay.wait_ledger(tok, 1, timeout=5)
    assert (row.status, row.cost) == ("lease_expired", 42)
    assert relay.run(relay.store.counters(["crashed/x"])) == {"crashed/x": 42}


# -- ledger bodies --------------------------------------------------------------------------------

def test_bodies_logged_only_when_token_and_config_allow(
        relay: Relay, fresh_relay: Callable[..., Relay]) -> None:
    logging_relay = fresh_relay(log_bodies=True)
    full = logging_relay.mint(cav.Budget(1000, "USD", "month"), cav.Logging("full"))
    meta = logging_relay.mint(cav.Budget(1000, "USD", "month"), cav.Logging("metadata"))
    for tok in (full, meta):
        assert logging_relay.chat(tok, max_tokens=4).status_code == 200
    r = logging_relay.chat(full, max_tokens=4, stream=True)
    assert r.status_code == 200
    plain, streamed = logging_relay.ledger(full)[1], logging_relay.ledger(full)[0]
    assert plain.request_body is not None and "hello there" in plain.request_body
    assert plain.response_body is not None and "alpha" in plain.response_body
    assert streamed.response_body is not None and "data:" in streamed.response_body
    assert logging_relay.ledger(meta)[0].request_body is None
    # The module's relay has log_bodies = false: even a "full" token logs metadata only.
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.Logging("full"))
    assert relay.chat(tok, max_tokens=4).status_code == 200
    assert relay.ledger(tok)[0].request_body is None


# -- the command line, and no key in any log ------------------------------------------------------

def test_command_line_relay(fake: str, tmp_path: Path) -> None:
    from capwallet.keys import RootKey
    from capwallet.token import mint
    text = EXAMPLE.read_text()
    for url in ("https://api.openai.com/v1", "https://api.deepseek.com/v1",
                "http://127.0.0.1:11434/v1"):
        text = text.replace(f'"{url}"', f'"{fake}/v1"')
    text = text.replace('"https://api.anthropic.com"', f'"{fake}"')
    (tmp_path / "relay.toml").write_text(text)
    root = RootKey.generate()
    root.save(tmp_path / "root.key")
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "ANTHROPIC_API_KEY": FAKE_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_relay", "--config", str(tmp_path / "relay.toml"),
         "--port", "0", "--log-level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("relay listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        tok = mint(root, [cav.Budget(1000, "USD", "month")]).serialize()
        client = openai.OpenAI(base_url=url + "/v1", api_key=tok, max_retries=0)
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO_OPENAI, max_tokens=8)
        assert r.usage is not None and r.usage.completion_tokens == 8
        assert (tmp_path / "relay.db").exists()  # store path relative to the config file
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -15), err
    assert "Application shutdown complete" in err
    assert FAKE_KEY not in out + err
    assert tok not in out + err
    assert f"token={token_id(tok)}" in err  # the call was logged, by token id


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text("[relay]\nroot_keys = []\n")
    p = subprocess.run([sys.executable, "-m", "reference_relay", "--config",
                        str(tmp_path / "relay.toml")], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "root_keys" in p.stderr


def test_logs_name_token_ids_never_keys_or_tokens(relay: Relay,
                                                  captured_logs: LogCapture) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    assert relay.chat(tok, max_tokens=4).status_code == 200
    relay.wait_ledger(tok, 1)
    lines = captured_logs.lines
    assert any(f"token={token_id(tok)}" in line for line in lines)
    assert not any(tok in line for line in lines)
    assert not any(FAKE_KEY in line for line in lines)
