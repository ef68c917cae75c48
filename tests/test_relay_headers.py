"""The headers a model call reads are collected once, by the relay's RequestGuard.

The guard walks the request's headers to measure them; the relay's own guard also keeps the
few a model call reads (reference_relay.app._WANTED) in the same walk, so the call does not
walk them again. These tests drive RequestGuard as an ASGI app over generated header lists
and check that what it collects is exactly what reading the scope's headers gives (the first
of each name, decoded), that the limits refuse the same requests with and without collecting,
and that a guard that does not collect leaves the scope as it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from reference_relay.app import (
    _WANTED,
    HEADERS_SCOPE_KEY,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    RequestGuard,
    _wanted_headers,
)

NAMES = [*sorted(_WANTED), b"host", b"user-agent", b"x-pad", b"accept"]
header = st.tuples(st.sampled_from(NAMES), st.binary(max_size=40))


def _run(guard_collects: bool, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any]]:
    """(status, the scope the inner app saw, or {} if it was not reached)."""
    seen: dict[str, Any] = {}
    status = 0

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    guard = RequestGuard(inner, allowed=("*",), collect=guard_collects)
    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return status, seen


@given(st.lists(header, max_size=12))
def test_the_guard_collects_what_the_call_would_read(headers: list[tuple[bytes, bytes]]) -> None:
    status, seen = _run(True, headers)
    assert status == 200
    expected = {}
    for k, v in headers:
        if k in _WANTED and k.decode() not in expected:
            expected[k.decode()] = v.decode("latin-1")
    assert seen[HEADERS_SCOPE_KEY] == expected
    assert _wanted_headers(seen) is seen[HEADERS_SCOPE_KEY]
    assert _wanted_headers({"headers": headers}) == expected  # no guard: read from the scope


@given(st.lists(header, max_size=12))
def test_a_guard_that_does_not_collect_leaves_the_scope_alone(
        headers: list[tuple[bytes, bytes]]) -> None:
    status, seen = _run(False, headers)
    assert status == 200 and HEADERS_SCOPE_KEY not in seen


def test_the_limits_refuse_the_same_requests_either_way() -> None:
    pad = MAX_HEADER_BYTES - len(b"/v1/chat/completions") - len(b"x-pad") - 4
    cases = {
        "fits": ([(b"x-pad", b"a" * pad)], 200),
        "one byte over": ([(b"x-pad", b"a" * (pad + 1))], 431),
        "too many fields": ([(b"x-pad", b"")] * (MAX_HEADER_FIELDS + 1), 431),
        "as many as allowed": ([(b"x-pad", b"")] * MAX_HEADER_FIELDS, 200),
    }
    for name, (headers, status) in cases.items():
        for collect in (False, True):
            assert _run(collect, headers)[0] == status, (name, collect)
