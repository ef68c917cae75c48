"""Relays on Redis under failure: a relay killed mid-call, upstream faults, Redis going away.

Real processes throughout (tests/scaleout_harness.py). The relays here run with short upstream
timeouts and leases so that what a crash leaves behind is closed within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis_server import RedisServer
from relay_harness import HELLO_OPENAI
from scaleout_harness import Fleet, Process, chat_body, fake_process, make_fleet, reason

from capwallet import caveats as cav

__all__ = ["fake_process"]

# lease = int(upstream_timeout + connect_timeout) + 1 + lease_margin = 3 s
SHORT_LEASE = {"upstream_timeout": 2, "connect_timeout": 0.5, "lease_margin": 0,
               "sweep_interval": 0.3}


RELAY_OUT_MICROS = 4_800_000  # one relay-out call: 16 output tokens at 0.3 cent (spec 1.1)


def post(url: str, tok: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout,
                      headers={"authorization": "Bearer " + tok})


def worst_case(fleet: Fleet, model: str, **extra: Any) -> int:
    """What one call reserves, read from the denial of a 1-cent budget."""
    tiny = fleet.mint(cav.Budget(1, "USD", "month"))
    r = post(fleet.urls[0], tiny, chat_body(model, **extra))
    assert r.status_code == 429 and reason(r) == "budget_exceeded", r.text
    return int(r.json()["error"]["needed"])


def fake_requests(fleet: Fleet) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = httpx.get(fleet.fake_url + "/_fake/requests", timeout=10).json()
    return got


# -- a relay killed with calls in flight --------------------------------------------------------

@pytest.fixture(scope="module")
def pair(fake_process: Process, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = make_fleet(tmp_path_factory.mktemp("pair"), fake_process.url, redis_url, 2,
                   **SHORT_LEASE)
    try:
        yield f
    finally:
        f.close()


def test_sigkill_mid_call_charges_reserved_worst_case_once(pair: Fleet) -> None:
    victim, survivor = pair.relays
    plain: tuple[str, dict[str, Any]] = ("fault-delay:4000", {})
    stream: tuple[str, dict[str, Any]] = ("fault-slow_stream:250", {"stream": True})
    worst = {m: worst_case(pair, m, **kw) for m, kw in (plain, stream)}
    budget = 10_000
    tok = pair.mint(cav.Budget(budget, "USD", "month"), cav.Rate(1000))
    calls = [plain] * 3 + [stream] * 3
    seen_before = len(fake_requests(pair))
    started = int(time.time())
    with ThreadPoolExecutor(len(calls)) as pool:
        futures: list[Future[httpx.Response]] = [
            pool.submit(post, victim.url, tok, chat_body(m, **kw)) for m, kw in calls]
        # Every call is reserved and at the provider (which bills it) before the crash.
        deadline = time.monotonic() + 15
        while len(fake_requests(pair)) - seen_before < len(calls):
            assert time.monotonic() < deadline, "calls did not reach the provider"
            time.sleep(0.05)
        reached = int(time.time())
        time.sleep(0.3)  # the streams are mid-output
        victim.kill()
        for f in futures:  # the app sees its connection drop, not an answer
            with pytest.raises(httpx.TransportError):
                f.result(timeout=30)
    # While the leases run, the reservations hold the budget at the worst case.
    reserved = sum(worst[m] for m, _ in calls)
    assert pair.counters(tok)["budget"] == reserved
    # The survivor's sweeper closes them once the 3 s leases have passed.
    rows = pair.wait_ledger(tok, len(calls), timeout=20, status="lease_expired")
    assert sorted(r.status for r in rows) == ["lease_expired"] * len(calls)
    assert len({r.reservation_id for r in rows}) == len(calls)
    assert sorted(r.cost for r in rows) == sorted(worst[m] for m, _ in calls)
    assert {r.model for r in rows} == {"fault-delay:4000", "fault-slow_stream:250"}
    used = pair.counters(tok)
    assert used["budget"] == sum(r.cost for r in rows) == reserved
    # The rate counter is per minute: read it in the minute(s) the calls were made, not now
    # (the leases take seconds, and the minute may have turned meanwhile).
    minutes = {started // 60 * 60, reached // 60 * 60}
    assert sum(pair.counters(tok, at=m)["rate"] for m in minutes) == len(calls)
    # Nothing is charged twice: more sweeps change nothing.
    time.sleep(1.0)
    assert len(pair.ledger(tok)) == len(calls)
    assert pair.counters(tok)["budget"] == reserved
    # The surviving relay serves on, and on the same budget.
    r = post(survivor.url, tok, chat_body())
    assert r.status_code == 200, r.text
    assert pair.counters(tok)["budget"] == reserved + RELAY_OUT_MICROS


# -- upstream faults --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trio(fake_process: Process, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = make_fleet(tmp_path_factory.mktemp("trio"), fake_process.url, redis_url, 2,
                   upstream_timeout=2, connect_timeout=0.5, sweep_interval=1)
    try:
        yield f
    finally:
        f.close()


@pytest.mark.parametrize(("model", "stream", "status", "code", "charged"), [
    ("fault-delay:3000", False, 504, "upstream_timeout", "worst"),  # provider may bill it
    ("fault-http500", False, 502, "upstream_error", "nothing"),
    ("fault-http500", True, 502, "upstream_error", "nothing"),
    ("fault-reset", False, 502, "upstream_error", "nothing"),
    ("fault-reset", True, 502, "upstream_error", "nothing"),
    ("fault-malformed", False, 502, "upstream_error", "worst"),
])
def test_upstream_fault_gives_a_clear_error_and_settles(
        trio: Fleet, model: str, stream: bool, status: int, code: str, charged: str) -> None:
    worst = worst_case(trio, model, stream=stream)
    tok = trio.mint(cav.Budget(1000, "USD", "month"))
    for i, url in enumerate(trio.urls):
        started = time.monotonic()
        r = post(url, tok, chat_body(model, stream=stream))
        assert time.monotonic() - started < 10
        assert r.status_code == status and reason(r) == code, r.text
        rows = trio.wait_ledger(tok, 2 * i + 1)  # each round: the fault, then an ok call
        assert rows[0].status == "upstream_error"
        assert rows[0].cost == (worst if charged == "worst" else 0)
        # The same relay goes on serving.
        ok = post(url, tok, chat_body())
        assert ok.status_code == 200, ok.text
    rows = trio.wait_ledger(tok, 2 * len(trio.urls))
    assert sum(e.cost for e in rows) == trio.counters(tok)["budget"]


def test_stream_cut_after_output_is_charged_conservatively(trio: Fleet) -> None:
    model = "fault-stream_cut:3"
    worst = worst_case(trio, model, stream=True)
    tok = trio.mint(cav.Budget(1000, "USD", "month"))
    for i, url in enumerate(trio.urls):
        client = openai.OpenAI(base_url=url + "/v1", api_key=tok, max_retries=0)
        pieces: list[str] = []
        with pytest.raises(openai.APIError) as err:
            for chunk in client.chat.completions.create(
                    model=model, messages=HELLO_OPENAI, max_tokens=16, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        assert len(pieces) == 3  # the app got what was streamed, then a clear error
        assert "provider 'openai'" in str(err.value)  # says what broke
        [row, *_] = trio.wait_ledger(tok, 2 * i + 1)
        assert row.status == "upstream_error"
        # Charged at least what was streamed (3 tokens), at most what was reserved: the
        # relay cannot know what the provider generated past the cut, so the output cap.
        assert row.output_tokens >= len(pieces)
        assert 0 < row.cost <= worst
        ok = post(url, tok, chat_body())
        assert ok.status_code == 200
    rows = trio.wait_ledger(tok, 2 * len(trio.urls))
    assert sum(e.cost for e in rows) == trio.counters(tok)["budget"]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_missing_is_answered_and_charged_worst_case(trio: Fleet, stream: bool) -> None:
    worst = worst_case(trio, "fault-no_usage", stream=stream)
    tok = trio.mint(cav.Budget(1000, "USD", "month"))
    r = post(trio.urls[-1], tok, chat_body("fault-no_usage", stream=stream))
    assert r.status_code == 200
    [row] = trio.wait_ledger(tok, 1)
    assert row.status == "usage_missing" and row.cost == worst
    assert trio.counters(tok)["budget"] == worst


# -- Redis goes away and comes back -------------------------------------------------------------

def test_redis_outage_fails_closed_and_recovers(fake_process: Process, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persist=True).start()
    (tmp_path / "relays").mkdir()
    try:
        fleet = make_fleet(tmp_path / "relays", fake_process.url, server.url, 1, **SHORT_LEASE)
    except Exception:
        server.stop()
        raise
    try:
        [relay] = fleet.relays
        tok = fleet.mint(cav.Budget(1000, "USD", "month"))
        assert post(relay.url, tok, chat_body()).status_code == 200
        assert fleet.counters(tok)["budget"] == RELAY_OUT_MICROS
        # A call in flight when Redis goes: it is answered, but cannot settle.
        with ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(post, relay.url, tok, chat_body("fault-delay:1500"))
            deadline = time.monotonic() + 10
            while not any(q["body"] and q["body"].get("model") == "fault-delay:1500"
                          for q in fake_requests(fleet)):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            server.stop()
            forwarded = len(fake_requests(fleet))
            for _ in range(3):
                started = time.monotonic()
                r = post(relay.url, tok, chat_body())
                assert time.monotonic() - started < 5  # fails fast, no hang
                assert r.status_code == 503 and reason(r) == "store_unavailable"
                assert "not forwarded" in r.json()["error"]["message"]
            h = httpx.get(relay.url + "/healthz", timeout=10)
            assert h.status_code == 503
            m = httpx.get(relay.url + "/v1/models", headers={"authorization": "Bearer " + tok},
                          timeout=10)
            assert m.status_code == 503 and reason(m) == "store_unavailable"
            assert inflight.result(timeout=20).status_code == 200
        assert len(fake_requests(fleet)) == forwarded  # nothing forwarded without Redis
        # Redis comes back on the same port with its data: the relay recovers by itself.
        server.start()
        deadline = time.monotonic() + 10
        while (r := post(relay.url, tok, chat_body())).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "relay did not recover"
            time.sleep(0.2)
        assert httpx.get(relay.url + "/healthz", timeout=10).status_code == 200
        # The unsettled call's lease expires: charged at its worst case, once.
        rows = fleet.wait_ledger(tok, 1, timeout=15, status="lease_expired")
        expired = [e for e in rows if e.status == "lease_expired"]
        assert len(expired) == 1 and expired[0].model == "fault-delay:1500"
        assert sum(e.cost for e in rows) == fleet.counters(tok)["budget"]
        assert [e.status for e in rows].count("ok") == 2  # before and after the outage
    finally:
        fleet.close()
        server.stop()
