"""The origin caveat at the relay (issue 12 section 2): a token granted to a web origin is
refused when a browser presents it from another origin (the relay passes the request's Origin
header to the verifier); a server-side call, which sends no Origin, is governed by the other
caveats. Checked through the real relay and the official openai SDK."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from relay_harness import HELLO_OPENAI, Relay, error_code, fake_requests

from capwallet import caveats as cav
from capwallet.token import Token

NOTES = "https://notes.example"
HELLO = [{"role": "user", "content": "hello there"}]


def _call(relay: Relay, token: str, origin: str | None) -> httpx.Response:
    headers = {} if origin is None else {"origin": origin}
    return relay.post("/v1/chat/completions",
                      {"model": "relay-test", "messages": HELLO, "max_tokens": 16}, token,
                      headers=headers)


def test_a_token_is_refused_from_another_origin(relay: Relay) -> None:
    token = relay.mint(cav.Budget(100, "USD", "month"), cav.Origin(NOTES))
    httpx.delete(relay.fake + "/_fake/requests")
    evil = _call(relay, token, "https://evil.example")
    assert evil.status_code == 403, evil.text
    assert error_code(evil) == "origin_mismatch"
    assert "https://evil.example" in evil.json()["error"]["message"]
    assert error_code(_call(relay, token, "null")) == "origin_mismatch"
    assert fake_requests(relay) == [], "a refused call must not reach the provider"
    assert _call(relay, token, NOTES).status_code == 200
    assert _call(relay, token, "https://NOTES.example:443").status_code == 200
    assert _call(relay, token, None).status_code == 200  # server-side: no Origin header


def test_the_origin_check_comes_before_the_body_and_covers_models(relay: Relay) -> None:
    token = relay.mint(cav.Budget(100, "USD", "month"), cav.Origin(NOTES))
    broken = relay.post("/v1/chat/completions", b"{not json", token,
                        headers={"origin": "https://evil.example",
                                 "content-type": "application/json"})
    assert broken.status_code == 403 and error_code(broken) == "origin_mismatch"
    listed = httpx.get(relay.url + "/v1/models", headers={
        "authorization": f"Bearer {token}", "origin": "https://evil.example"})
    assert listed.status_code == 403 and error_code(listed) == "origin_mismatch"


def test_an_attenuated_token_cannot_move_to_another_origin(relay: Relay) -> None:
    parent = relay.mint(cav.Budget(100, "USD", "month"), cav.Origin(NOTES))
    child = Token.parse(parent).attenuate([cav.Origin("https://evil.example")]).serialize()
    client = relay.openai(child, default_headers={"origin": "https://evil.example"})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                       max_tokens=16)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["code"] == "origin_mismatch"


def test_origin_caveat_api() -> None:
    assert cav.encode(cav.Origin("http://[::1]:5500")) == b"origin http://%5B::1%5D:5500"
    with pytest.raises(ValueError, match=re.escape("write 'https://notes.example'")):
        cav.Origin("https://Notes.example:443")
