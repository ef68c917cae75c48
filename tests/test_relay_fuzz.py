"""Hostile input against a real relay process on Redis: never a 5xx, never a hang.

Hypothesis drives HTTP requests at every relay endpoint (and at paths that are not one) with
random methods, tokens (none, garbage, forged, revoked, valid), headers, bodies (bytes, JSON,
near-valid model calls, bad encodings, oversize) and checks that every answer is a 2xx-4xx
with a stable reason code. Raw sockets send what no HTTP client would (garbage request lines,
oversize headers, bodies that dribble in or stop). Afterwards the relay must be healthy and its
log free of tracebacks.

Limits under test (reference_relay/__main__.py, README "Limits"): request target + headers at
most 16 KiB (431 headers_too_large), a token at most 8192 characters (401 malformed), the body
at most ``max_body_bytes`` (413 request_too_large; 64 KiB in this test's config), and a body
must arrive within ``body_timeout`` seconds (408 request_timeout; 1 s here).
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaleout_harness import Fleet, Process, chat_body, fake_process, make_fleet

from capwallet import caveats as cav
from capwallet.token import Token

__all__ = ["fake_process"]

MAX_BODY = 64 * 1024
PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/models", "/healthz"]
MODELS = ["relay-test", "relay-out", "relay-nolimit", "gpt-4o-mini", "claude-test",
          "text-embedding-3-small", "no-such-model", ""]


@pytest.fixture(scope="module")
def target(fake_process: Process, redis_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = make_fleet(tmp_path_factory.mktemp("fuzz"), fake_process.url, redis_url, 1,
                   max_body_bytes=MAX_BODY, body_timeout=1, upstream_timeout=10)
    try:
        yield f
    finally:
        f.close()
    log = f.logs()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


@pytest.fixture(scope="module")
def tokens(target: Fleet) -> dict[str, str]:
    valid = target.mint(cav.Budget(10**6, "USD", "month"), cav.Rate(10**6))
    revoked = target.mint(cav.Budget(10**6, "USD", "month"))
    target.run(target.store.revoke(Token.parse(revoked).token_id, int(time.time())))
    poor = target.mint(cav.Budget(1, "USD", "month"))
    forged = valid[:-6] + ("AAAAAA" if not valid.endswith("AAAAAA") else "BBBBBB")
    return {"valid": valid, "revoked": revoked, "poor": poor, "forged": forged}


# -- strategies ---------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=5),
    max_leaves=20)
messages = st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
    "content": json_values | st.text(max_size=200),
}), max_size=4) | json_values


@st.composite
def model_call(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(MODELS) | st.text(max_size=20)),
                            "messages": draw(messages)}
    for key, values in (
        ("max_tokens", st.integers(-5, 2**40) | json_values),
        ("max_completion_tokens", st.integers(-5, 2**40)),
        ("stream", st.booleans() | json_values),
        ("stream_options", json_values),
        ("n", st.integers(-1, 200) | json_values),
        ("input", json_values | st.text(max_size=100)),
        ("system", json_values),
    ):
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


@st.composite
def requests(draw: st.DrawFn, tokens: dict[str, str]) -> dict[str, Any]:
    if draw(st.integers(0, 4)) == 0:  # a well-formed call, perturbed: reaches the provider
        call = {**chat_body(draw(st.sampled_from(MODELS[:5]))),
                "max_tokens": draw(st.integers(1, 64)), "stream": draw(st.booleans())}
        extra = draw(st.dictionaries(st.sampled_from(["temperature", "user", "n", "stop",
                                                      "metadata", "tools"]), json_values,
                                     max_size=2))
        return {"method": "POST", "path": "/v1/chat/completions" if call["model"] != (
            "claude-test") else "/v1/messages", "headers": {
            "authorization": "Bearer " + tokens["valid"]},
            "body": json.dumps({**call, **extra}).encode()}
    if draw(st.integers(0, 3)):  # mostly model calls, the surface that matters
        path = draw(st.sampled_from(PATHS[:3]))
        method = "POST"
    else:
        path = draw(st.sampled_from(PATHS) | st.builds(
            lambda s: "/" + s, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                     exclude_characters="?#%"), max_size=30)))
        method = draw(st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    headers: dict[str, str] = {}
    which = draw(st.sampled_from(["valid"] * 4 + ["none", "revoked", "poor", "forged",
                                                  "garbage", "long", "x-api-key", "scheme"]))
    if which in tokens:
        headers["authorization"] = "Bearer " + tokens[which]
    elif which == "garbage":
        headers["authorization"] = "Bearer " + draw(header_text)
    elif which == "long":
        headers["authorization"] = "Bearer cwt1_" + "A" * draw(st.integers(8000, 12000))
    elif which == "x-api-key":
        headers["x-api-key"] = draw(st.sampled_from(list(tokens.values())) | header_text)
    elif which == "scheme":
        headers["authorization"] = draw(header_text)
    for name in draw(st.lists(st.sampled_from([
            "content-type", "anthropic-version", "anthropic-beta", "x-capwallet-approval",
            "content-encoding", "accept", "x-forwarded-for", "origin"]), max_size=4)):
        headers[name] = draw(header_text)
    kind = draw(st.sampled_from(["none", "bytes", "json", "utf16", "gzip", "big"]
                                + ["call"] * 6))
    body: bytes | None
    if kind == "none":
        body = None
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "call":
        body = json.dumps(draw(model_call())).encode()
    elif kind == "utf16":
        body = json.dumps(draw(model_call())).encode("utf-16")
    elif kind == "gzip":
        headers["content-encoding"] = "gzip"
        body = gzip.compress(json.dumps(draw(model_call())).encode())
    else:
        body = b'{"model":"relay-test","messages":[{"role":"user","content":"' + (
            b"x" * draw(st.integers(MAX_BODY - 100, MAX_BODY + 5000))) + b'"}]}'
    # httpx will not send a header value with outer blanks (raw-socket tests send those).
    headers = {k: v.strip() for k, v in headers.items()}
    return {"method": method, "path": path, "headers": headers, "body": body}


# -- the fuzz -----------------------------------------------------------------------------------

def test_fuzzed_requests_never_get_a_5xx(target: Fleet, tokens: dict[str, str]) -> None:
    url = target.urls[0]
    seen: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=20) as client:

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(req=requests(tokens))
        def one(req: dict[str, Any]) -> None:
            r = client.request(req["method"], req["path"], headers=req["headers"],
                               content=req["body"])
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500, (req, r.status_code, r.text[:500])
            if r.status_code >= 400:
                assert r.headers.get("x-capwallet-reason"), (req, r.text[:300])
                assert "Traceback" not in r.text
            tok = tokens["valid"]
            assert tok not in r.text and all(tok not in v for v in r.headers.values())

        one()
    # The fuzz reached past authentication: real answers and refusals of each kind.
    assert seen.get(200, 0) > 0 and seen.get(401, 0) > 0 and seen.get(400, 0) > 0, seen
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200


# -- raw sockets ------------------------------------------------------------------------------

def _raw(url: str, data: bytes, *, read_timeout: float = 10) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.binary(max_size=400) | st.builds(
    lambda line, rest: line + b"\r\n" + rest,
    st.sampled_from([b"POST /v1/chat/completions HTTP/1.1", b"GET /healthz HTTP/1.0",
                     b"POST /v1/messages HTTP/9.9", b"\x00\xff GARBAGE", b"POST * HTTP/1.1"]),
    st.binary(max_size=300)))
def test_garbage_on_the_wire_never_gets_a_5xx(target: Fleet, data: bytes) -> None:
    status = _status(_raw(target.urls[0], data))
    assert status is None or status < 500


def test_header_and_body_limits(target: Fleet, tokens: dict[str, str]) -> None:
    url = target.urls[0]
    tok = tokens["valid"]
    # Target + headers over 16 KiB: 431, however they arrive ...
    big = b"x-pad: " + b"a" * 17_000 + b"\r\n"
    answer = _raw(url, b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n" + big + b"\r\n")
    assert _status(answer) == 431 and b"headers_too_large" in answer
    answer = _raw(url, b"GET /healthz?" + b"q" * 17_000 + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    assert _status(answer) == 431
    # ... and one that trickles in is cut off at the same size, before it ends: the relay
    # never buffers more than the limit (plus one read) of a head.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        sent = 0
        try:
            for _ in range(200):
                s.sendall(b"x-pad: " + b"a" * 1000 + b"\r\n")
                sent += 1
                time.sleep(0.002)
        except ConnectionError:
            pass
        try:
            answer = s.recv(65536)
        except ConnectionError:
            answer = b""
    assert sent < 200  # the relay closed the connection long before 200 KB
    assert _status(answer) in (400, 431, None)  # refused (parser or relay) or cut
    # Just under the limit is served.
    r = httpx.get(url + "/healthz", headers={"x-pad": "a" * 15_000}, timeout=10)
    assert r.status_code == 200
    # A token over 8192 characters: 401 malformed, before any parsing.
    r = httpx.post(url + "/v1/chat/completions", json=chat_body(), timeout=10,
                   headers={"authorization": "Bearer cwt1_" + "A" * 9000})
    assert r.status_code == 401 and r.headers["x-capwallet-reason"] == "malformed"
    # A body over max_body_bytes: 413, announced by content-length ...
    over = b"{" + b" " * MAX_BODY + b"}"
    r = httpx.post(url + "/v1/chat/completions", content=over, timeout=10,
                   headers={"authorization": "Bearer " + tok})
    assert r.status_code == 413 and r.headers["x-capwallet-reason"] == "request_too_large"
    # ... or streamed in chunks with no length.
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer "
            f"{tok}\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n")
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
    answer = _raw(url, head.encode() + chunk * 6 + b"0\r\n\r\n")
    assert _status(answer) == 413
    # Just under the limit is served.
    fits = json.dumps({**chat_body(), "pad": "x" * (MAX_BODY - 200)}).encode()
    assert len(fits) <= MAX_BODY
    r = httpx.post(url + "/v1/chat/completions", content=fits, timeout=10,
                   headers={"authorization": "Bearer " + tok})
    assert r.status_code == 200, r.text


def test_slow_and_stalled_clients_do_not_hold_up_others(target: Fleet,
                                                        tokens: dict[str, str]) -> None:
    url = target.urls[0]
    host, port = url.removeprefix("http://").split(":")
    tok = tokens["valid"]
    body = json.dumps(chat_body()).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer "
            f"{tok}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    stalled: list[socket.socket] = []
    try:
        # 30 clients that stop mid-headers, 30 that stop mid-body.
        for i in range(60):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(head.encode()[:40] if i % 2 else head.encode() + body[:10])
            stalled.append(s)
        # Meanwhile the relay answers everyone else promptly.
        for _ in range(5):
            started = time.monotonic()
            r = httpx.post(url + "/v1/chat/completions", content=body, timeout=10,
                           headers={"authorization": "Bearer " + tok})
            assert r.status_code == 200 and time.monotonic() - started < 5
        # A body that stops arriving is answered 408 after body_timeout (1 s here).
        for s in stalled[0::2]:
            s.settimeout(10)
            answer = s.recv(65536)
            assert _status(answer) == 408, answer[:200]
            assert b"request_timeout" in answer
        # A body that dribbles in, slower than any sane client but within the limit, works.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head.encode())
            for i in range(0, len(body), 16):
                s.sendall(body[i:i + 16])
                time.sleep(0.01)
            answer = s.recv(65536)
            assert _status(answer) == 200, answer[:300]
    finally:
        for s in stalled:
            s.close()
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
