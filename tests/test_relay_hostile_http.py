"""Requests the HTTP parser itself refuses get the relay's JSON error, on its real protocol.

The relay (``python -m reference_relay``) and the wallet server both parse requests with
reference_relay.http_limits.BoundedHttpToolsProtocol. A request httptools cannot parse never
reaches the app: uvicorn answered it ``400 text/plain "Invalid HTTP request received."``,
with no reason code, where every other refusal of the relay is a JSON error with
``x-capwallet-reason`` (hostile11, session 11). Each row below is such a request; each must be
answered 400 ``invalid_request`` in the relay's error shape, and the connection closed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_harness import FAKE_KEY, ServerThread, config_data, fake

from capwallet.keys import RootKey
from reference_relay.app import create_app
from reference_relay.config import parse_config
from reference_relay.http_limits import BoundedHttpToolsProtocol

__all__ = ["fake"]

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer x\r\n"
BODY = b'{"model":"relay-test","messages":[{"role":"user","content":"hi"}]}'
REFUSED = {
    "NUL in a header value": HEAD + b"x-note: a\x00b\r\ncontent-length: 2\r\n\r\n{}",
    "a negative Content-Length": HEAD + b"content-length: -5\r\n\r\n" + BODY,
    "two Content-Lengths that differ": HEAD + b"content-length: %d\r\ncontent-length: 5\r\n\r\n"
                                       % len(BODY) + BODY,
    "Content-Length with chunked": HEAD + b"content-length: 5\r\ntransfer-encoding: chunked"
                                   b"\r\n\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "a chunk size that is not hex": HEAD + b"transfer-encoding: chunked\r\n\r\nzz\r\n" + BODY
                                    + b"\r\n0\r\n\r\n",
    "a byte 0xff in the target": b"GET /v1/models/\xff HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
    "a request line that is not HTTP": b"\x00\xff GARBAGE\r\n\r\n",
}


@pytest.fixture(scope="module")
def relay_url(fake: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("hostile_http")
    RootKey.generate().save(tmp / "root.key")
    app = create_app(parse_config(config_data(fake), tmp), provider_keys=lambda pid: FAKE_KEY)
    server = ServerThread(app, http=BoundedHttpToolsProtocol).start()
    try:
        yield server.url
    finally:
        server.stop()


def _exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):  # the relay closes the connection after its answer
            answer += chunk
    return answer


@pytest.mark.parametrize("request_bytes", REFUSED.values(), ids=REFUSED.keys())
def test_a_request_the_parser_refuses_gets_the_relays_json_error(relay_url: str,
                                                                 request_bytes: bytes) -> None:
    answer = _exchange(relay_url, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert lines[0] == b"HTTP/1.1 400 Bad Request", answer[:200]
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-capwallet-reason"] == b"invalid_request"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["reason"] == error["code"] == "invalid_request"
    assert "not valid HTTP" in error["message"]


def test_a_request_the_parser_takes_still_reaches_the_relay(relay_url: str) -> None:
    """The control: the same head, well formed, is the relay's own answer (a bad token)."""
    answer = _exchange(relay_url, HEAD + b"content-length: %d\r\nconnection: close\r\n\r\n"
                       % len(BODY) + BODY)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"x-capwallet-reason: malformed" in answer
