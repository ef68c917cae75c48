"""Every way the relay refuses a call: the status, the reason code, the body shape, no forward."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest
from relay_harness import HELLO_ANTHROPIC, HELLO_OPENAI, Relay, error_code, fake_requests, token_id

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import Token, mint

HELLO = [{"role": "user", "content": "hello there"}]


def fake_calls(relay: Relay) -> int:
    return len(fake_requests(relay))


def deny(relay: Relay, token: str | None, status: int, code: str, *,
         model: str = "relay-test", path: str = "/v1/chat/completions",
         body: object | None = None, **extra: object) -> httpx.Response:
    httpx.delete(relay.fake + "/_fake/requests")
    payload = body if body is not None else {"model": model, "messages": HELLO,
                                             "max_tokens": 16, **extra}
    r = relay.post(path, payload, token)
    assert r.status_code == status, r.text
    if path == "/v1/messages":
        assert r.json()["type"] == "error"
        assert r.json()["error"]["code"] == code == r.headers["x-capwallet-reason"]
    else:
        assert error_code(r) == code
    assert r.json()
    assert fake_calls(relay) == 0, "a refused call must not reach the provider"
    return r


def test_missing_and_malformed_tokens(relay: Relay) -> None:
    deny(relay, None, 401, "missing_token")
    deny(relay, "sk-not-a-token", 401, "malformed")
    deny(relay, "cwt1_" + "A" * 40, 401, "malformed")
    r = httpx.post(relay.url + "/v1/chat/completions", headers={"authorization": "Basic x"},
                   json={"model": "relay-test", "messages": HELLO})
    assert r.status_code == 401 and error_code(r) == "malformed"


def test_unknown_key_and_bad_signature(relay: Relay) -> None:
    other = mint(RootKey.generate(), [cav.Budget(100, "USD", "month")]).serialize()
    deny(relay, other, 401, "unknown_key")
    tok = Token.parse(relay.mint(cav.Budget(100, "USD", "month")))
    forged = Token(tok.identifier, tok.raw.__class__(
        tok.raw.identifier, tok.raw.caveats, bytes(32))).serialize()
    deny(relay, forged, 401, "bad_signature")


def test_expired_and_not_yet_valid(relay: Relay) -> None:
    deny(relay, relay.mint(cav.Expires(int(time.time()) - 3600)), 401, "expired")
    deny(relay, relay.mint(cav.NotBefore(int(time.time()) + 3600)), 401, "not_yet_valid")


def test_revoked(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(100, "USD", "month"))
    assert relay.chat(tok, max_tokens=4).status_code == 200
    relay.run(relay.store.revoke(token_id(tok), int(time.time())))
    deny(relay, tok, 401, "revoked")
    r = httpx.get(relay.url + "/v1/models", headers={"authorization": "Bearer " + tok})
    assert r.status_code == 401 and error_code(r) == "revoked"


def test_the_remembered_token_checks_are_bounded_and_judged_again_each_call(
        relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relay.handle remembers the chain check per Authorization header (at most
    AUTH_REMEMBERED, the oldest forgotten first); time is judged on every call all the same:
    a remembered token that expires is refused as expired."""
    import reference_relay.app as app_module
    monkeypatch.setattr(app_module, "AUTH_REMEMBERED", 2)
    remembered = relay.server.app.state.relay._by_header
    remembered.clear()
    toks = [relay.mint(cav.Budget(100, "USD", "month"), cav.App(f"a{i}")) for i in range(4)]
    for tok in toks:
        assert relay.chat(tok, max_tokens=4).status_code == 200
        assert len(remembered) <= 2
    assert list(remembered) == ["Bearer " + t for t in toks[2:]]
    soon = relay.mint(cav.Budget(100, "USD", "month"), cav.Expires(int(time.time()) - 30))
    assert relay.chat(soon, max_tokens=4).status_code == 200  # inside the clock allowance
    assert "Bearer " + soon in remembered
    real_time = time.time
    monkeypatch.setattr("reference_relay.app.time.time", lambda: real_time() + 60)
    deny(relay, soon, 401, "expired")


def test_a_token_revoked_just_before_its_reservation_is_refused(
        fresh_relay: Callable[..., Relay], tmp_path: object) -> None:
    """A revocation that lands after the relay last looked but before the call reserves (the
    wallet or another relay revoking at that moment) stops the call: the reservation checks
    the revocation in its own atomic step. A relay that read the revocation first and reserved
    after forwarded this call."""
    from capwallet.store import Reservation, ReserveResult
    from capwallet.store.sqlite import SQLiteStore

    class RevokedMeanwhile(SQLiteStore):
        """A real SQLite store on which ``victim`` is revoked just before each of its
        reservations runs (one more write, committed first)."""

        victim = ""

        async def reserve(self, reservation: Reservation) -> ReserveResult:
            if reservation.token_id == self.victim:
                await self.revoke(self.victim, int(time.time()))
            return await super().reserve(reservation)

    store = RevokedMeanwhile(f"{tmp_path}/race.db")
    r = fresh_relay(store=store)
    tok = r.mint(cav.Budget(100, "USD", "month"))
    store.victim = token_id(tok)
    httpx.delete(r.fake + "/_fake/requests")
    with pytest.raises(openai.AuthenticationError) as err:
        r.openai(tok).chat.completions.create(model="relay-test", messages=HELLO_OPENAI,
                                              max_tokens=4)
    assert err.value.status_code == 401
    assert err.value.response.headers["x-capwallet-reason"] == "revoked"
    assert fake_calls(r) == 0, "a call of a revoked token reached the provider"
    assert r.run(store.is_revoked(token_id(tok)))
    assert list(r.counters(tok).values()) == [0]
    assert [e.status for e in r.ledger(tok)] == []
    # Revoked now: a broken body, or none at all, still gets the token's 401.
    for raw in (b"{not json", b'{"messages": []}'):
        resp = r.post("/v1/chat/completions", raw, tok)
        assert (resp.status_code, error_code(resp)) == (401, "revoked"), resp.text
    assert fake_calls(r) == 0
    r.run(store.close())


def test_a_bad_or_dead_token_is_refused_as_such_whatever_the_body(relay: Relay) -> None:
    # The token is judged before the body: broken JSON, a non-object or no model behind a bad,
    # expired or revoked token still gets the token's 401, not invalid_request.
    httpx.delete(relay.fake + "/_fake/requests")
    revoked = relay.mint(cav.Budget(100, "USD", "month"))
    relay.run(relay.store.revoke(token_id(revoked), int(time.time())))
    tokens = [("cwt1_" + "A" * 40, "malformed"),
              (mint(RootKey.generate(), [cav.Budget(1, "USD", "month")]).serialize(),
               "unknown_key"),
              (relay.mint(cav.Expires(int(time.time()) - 3600)), "expired"),
              (revoked, "revoked")]
    for tok, code in tokens:
        for raw in (b"{not json", b"[1, 2]", b'{"messages": []}'):
            for path in ("/v1/chat/completions", "/v1/messages"):
                r = httpx.post(relay.url + path, content=raw,
                               headers={"authorization": "Bearer " + tok,
                                        "content-type": "application/json"})
                assert (r.status_code, r.headers["x-capwallet-reason"]) == (401, code), (
                    path, raw, r.text)
    # A good token with a broken body is the body's fault.
    good = relay.mint(cav.Budget(100, "USD", "month"))
    r = httpx.post(relay.url + "/v1/chat/completions", content=b"{not json",
                   headers={"authorization": "Bearer " + good})
    assert (r.status_code, error_code(r)) == (400, "invalid_request")
    assert fake_calls(relay) == 0


def test_shape_denials(relay: Relay) -> None:
    deny(relay, relay.mint(cav.Providers(("anthropic",))), 403, "provider_not_allowed")
    deny(relay, relay.mint(cav.Models(("gpt-4o",))), 403, "model_not_allowed")
    deny(relay, relay.mint(cav.Operations(("embeddings",))), 403, "operation_not_allowed")
    deny(relay, relay.mint(cav.ZeroRetention()), 403, "zero_retention_required")
    deny(relay, relay.mint(cav.MaxInputTokens(20)), 400, "input_too_large")
    # A cap above the token's max-output-tokens is lowered, not refused (test_relay_clamp.py);
    # fewer output tokens than choices cannot be served at all.
    deny(relay, relay.mint(cav.MaxOutputTokens(2)), 400, "unbounded_request", n=3)


def test_price_unknown_without_exchange_rate(relay: Relay) -> None:
    r = deny(relay, relay.mint(cav.Budget(1000, "JPY", "month")), 403, "price_unknown")
    assert "JPY" in r.json()["error"]["message"]


def test_counter_denials(relay: Relay) -> None:
    r = deny(relay, relay.mint(cav.Budget(3, "USD", "month")), 429, "budget_exceeded")
    assert "0.03 USD left" in r.json()["error"]["message"]
    r = deny(relay, relay.mint(cav.TokenQuota(50, "day")), 429, "quota_exceeded")
    assert "50 tokens left" in r.json()["error"]["message"]
    tok = relay.mint(cav.Rate(2))
    assert relay.chat(tok, max_tokens=4).status_code == 200
    assert relay.chat(tok, max_tokens=4).status_code == 200
    r = deny(relay, tok, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert "0 requests left" in r.json()["error"]["message"]


def test_budget_exhausted_mid_sequence(relay: Relay) -> None:
    # relay-out: 16 output tokens at 0.3 cent = 4.8 cents a call, worst case = actual.
    tok = relay.mint(cav.Budget(22, "USD", "month"))
    statuses = [relay.chat(tok, model="relay-out", max_tokens=16).status_code
                for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    r = relay.chat(tok, model="relay-out", max_tokens=16)
    assert error_code(r) == "budget_exceeded"
    msg = r.json()["error"]["message"]
    assert "budget 0.22 USD per month: 0.192 USD used, 0.028 USD left" in msg
    err = r.json()["error"]
    assert (err["left"], err["needed"], err["unit"]) == (2_800_000, 4_800_000, "micro-USD")
    # A smaller call still fits what is left.
    assert relay.chat(tok, model="relay-out", max_tokens=6).status_code == 200
    rows = relay.ledger(tok)
    assert [sum(e.cost for e in rows)] == [*relay.counters(tok).values()] == [21_000_000]
    # refusals of one token, reason and minute are one ledger row with a count
    assert sum(e.count for e in rows if e.status == "denied:budget_exceeded") == 3


def test_anthropic_error_shape(relay: Relay) -> None:
    r = deny(relay, relay.mint(cav.Budget(1, "USD", "month")), 429, "budget_exceeded",
             path="/v1/messages", body={"model": "claude-test", "max_tokens": 16,
                                        "messages": HELLO})
    # Anthropic's own shape for a spent limit (tests/test_relay_sdk_errors.py: the SDK's class)
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        relay.anthropic(relay.mint(cav.Models(("x",)))).messages.create(
            model="claude-test", max_tokens=16, messages=HELLO_ANTHROPIC)
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["code"] == "model_not_allowed"
    with pytest.raises(openai.AuthenticationError):
        relay.openai("cwt1_bogus").chat.completions.create(model="relay-test",
                                                           messages=HELLO_OPENAI)


def test_request_errors(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"))
    deny(relay, tok, 404, "model_not_found", model="no-such-model")
    deny(relay, tok, 400, "wrong_api", model="claude-test")
    deny(relay, tok, 400, "unbounded_request", model="relay-nolimit", max_tokens=None)
    deny(relay, tok, 400, "unbounded_request", body={
        "model": "relay-test", "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]})
    deny(relay, tok, 400, "unbounded_request", tools=[{"type": "web_search"}])
    deny(relay, tok, 400, "invalid_request", body=b"{not json")
    deny(relay, tok, 400, "invalid_request", body={"messages": HELLO})
    deny(relay, tok, 400, "invalid_request", max_tokens=-1)
    deny(relay, tok, 413, "request_too_large", body=b'{"x": "' + b"a" * (5 << 20) + b'"}')
    deny(relay, tok, 400, "unbounded_request", path="/v1/messages", body={
        "model": "claude-test", "max_tokens": 4, "messages": HELLO,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]})


def test_routes_and_hosts(relay: Relay) -> None:
    r = httpx.get(relay.url + "/v1/nothing")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = httpx.get(relay.url + "/v1/chat/completions")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"
    r = httpx.get(relay.url + "/healthz", headers={"host": "evil.example"})
    assert r.status_code == 421 and error_code(r) == "bad_host"
    r = httpx.get(relay.url.replace("127.0.0.1", "localhost") + "/healthz")
    assert r.status_code == 200


def test_confirmation_and_single_use_approval(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(1000, "USD", "month"), cav.ConfirmAbove(5, "USD"))
    data = json.dumps({"model": "relay-test", "messages": HELLO, "max_tokens": 16}).encode()
    r = deny(relay, tok, 403, "confirmation_required", body=data)
    err = r.json()["error"]
    pid = err["approval_request_id"]
    assert err["approval_url"] == f"http://127.0.0.1:9/wallet/approvals/{pid}"
    assert "above the 0.05 USD" in err["message"]
    assert r.headers["x-capwallet-approval-request"] == pid
    pending = relay.run(relay.store.get_pending(pid))
    assert pending is not None and pending.status == "pending"
    assert pending.token_id == token_id(tok)
    # The wallet approves exactly these bytes; the app retries them with the approval.
    digest = approvals.request_digest("POST", "/v1/chat/completions", data)
    assert pending.digest == digest.hex()
    raw = relay.post
    a = approvals.issue(relay.root, bytes.fromhex(token_id(tok)), digest,
                        int(time.time()) + 300, kind=approvals.Kind.MODEL_CALL).serialize()
    hdr = {"x-capwallet-approval": a, "content-type": "application/json"}
    ok = raw("/v1/chat/completions", data, tok, headers=hdr)
    assert ok.status_code == 200, ok.text
    again = raw("/v1/chat/completions", data, tok, headers=hdr)
    assert again.status_code == 403 and error_code(again) == "approval_invalid"
    assert "already used" in again.json()["error"]["message"]
    other = raw("/v1/chat/completions", data.replace(b"16", b"15"), tok, headers=hdr)
    assert other.status_code == 403 and error_code(other) == "approval_invalid"
    garbage = raw("/v1/chat/completions", data, tok,
                  headers={"x-capwallet-approval": "cwa1_nope", "content-type":
                           "application/json"})
    assert error_code(garbage) == "approval_invalid"


def test_store_unavailable_denies(fresh_relay: Callable[..., Relay], tmp_path: object) -> None:
    from capwallet.store.sqlite import SQLiteStore
    store = SQLiteStore(f"{tmp_path}/closed.db")
    r = fresh_relay(store=store)
    r.run(store.close())
    tok = r.mint(cav.Budget(100, "USD", "month"))
    resp = r.chat(tok, max_tokens=4)
    assert resp.status_code == 503 and error_code(resp) == "store_unavailable"
    assert httpx.get(r.url + "/healthz").status_code == 503


def test_missing_provider_key(fresh_relay: Callable[..., Relay]) -> None:
    r = fresh_relay(provider_keys=lambda pid: "")
    tok = r.mint(cav.Budget(100, "USD", "month"))
    resp = r.chat(tok, max_tokens=4)
    assert resp.status_code == 502 and error_code(resp) == "provider_unavailable"
    assert "OPENAI_API_KEY" in resp.json()["error"]["message"]
    assert list(r.counters(tok).values()) == [0]


def test_a_rotated_provider_key_is_read_and_checked_on_every_call(
        fresh_relay: Callable[..., Relay]) -> None:
    """The relay checks a provider key once and remembers it passed (forwarding), but reads
    the key on every call: a key changed under a running relay is used, or refused, at the
    next call, with nothing reserved or sent for a refused one."""
    from relay_harness import FAKE_KEY
    current = [FAKE_KEY]
    r = fresh_relay(provider_keys=lambda pid: current[0])
    tok = r.mint(cav.Budget(100, "USD", "month"))
    assert r.chat(tok, max_tokens=4).status_code == 200
    spent = sum(r.counters(tok).values())
    for bad in ("sk-bad\r\nx-evil: 1", ""):
        current[0] = bad
        httpx.delete(r.fake + "/_fake/requests")
        resp = r.chat(tok, max_tokens=4)
        assert resp.status_code == 502 and error_code(resp) == "provider_unavailable", resp.text
        assert fake_calls(r) == 0
        assert sum(r.counters(tok).values()) == spent
    current[0] = "sk-wrong-" + FAKE_KEY  # fits a header, the provider refuses it
    httpx.delete(r.fake + "/_fake/requests")
    resp = r.chat(tok, max_tokens=4)
    assert resp.status_code == 502 and error_code(resp) == "upstream_error", resp.text
    assert [q["auth_ok"] for q in fake_requests(r)] == [False]
    current[0] = FAKE_KEY
    httpx.delete(r.fake + "/_fake/requests")
    assert r.chat(tok, max_tokens=4).status_code == 200
    assert [q["auth_ok"] for q in fake_requests(r)] == [True]


def test_forwarded_headers_and_keys_cannot_add_header_lines(
        relay: Relay, fresh_relay: Callable[..., Relay]) -> None:
    """The app's anthropic-version / anthropic-beta go upstream only as visible ASCII, and a
    provider key that cannot go in a header refuses the call: either way before anything is
    reserved or sent."""
    tok = relay.mint(cav.Budget(100, "USD", "month"))
    body = {"model": "claude-test", "max_tokens": 4, "messages": HELLO}
    for name, value in (("anthropic-beta", "tools\tx-evil: 1"),
                        ("anthropic-version", "2023-06-01\t2")):
        httpx.delete(relay.fake + "/_fake/requests")
        r = relay.post("/v1/messages", body, tok, headers={name: value})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
        assert name in r.json()["error"]["message"]
        assert fake_calls(relay) == 0
    assert list(relay.counters(tok).values()) == [0]
    bad_key = "sk-bad\r\nx-evil: 1"
    keyless = fresh_relay(provider_keys=lambda pid: bad_key)
    tok = keyless.mint(cav.Budget(100, "USD", "month"))
    resp = keyless.chat(tok, max_tokens=4)
    assert resp.status_code == 502 and error_code(resp) == "provider_unavailable"
    assert "sk-bad" not in resp.text
    assert list(keyless.counters(tok).values()) == [0]


def test_header_limits(relay: Relay) -> None:
    headers = {f"x-filler-{i}": "y" for i in range(120)}
    r = httpx.get(relay.url + "/healthz", headers=headers)
    assert r.status_code == 431 and error_code(r) == "headers_too_large"
    r = httpx.get(relay.url + "/healthz", headers={"x-big": "y" * 15000, "x-big2": "z" * 2000})
    assert r.status_code in (400, 431)  # h11 itself may stop it first


def test_cors_for_browser_apps(relay: Relay, fresh_relay: Callable[..., Relay]) -> None:
    none = httpx.options(relay.url + "/v1/chat/completions", headers={
        "origin": "https://app.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in none.headers  # off by default
    relay = fresh_relay(allowed_origins=["*"])
    origin = {"origin": "https://app.example"}
    pre = httpx.options(relay.url + "/v1/chat/completions", headers={
        **origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert pre.headers["access-control-allow-private-network"] == "true"
    r = httpx.post(relay.url + "/v1/chat/completions", headers=origin,
                   json={"model": "relay-test", "messages": HELLO})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-capwallet-reason" in r.headers["access-control-expose-headers"]
    strict = fresh_relay(allowed_origins=["https://good.example"])
    bad = httpx.options(strict.url + "/v1/chat/completions", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in bad.headers


def test_dead_token_is_refused_before_the_request_is_judged(relay: Relay) -> None:
    expired = relay.mint(cav.Expires(int(time.time()) - 3600))
    deny(relay, expired, 401, "expired", model="no-such-model")
    tok = relay.mint(cav.Budget(100, "USD", "month"))
    relay.run(relay.store.revoke(token_id(tok), int(time.time())))
    deny(relay, tok, 401, "revoked", model="relay-nolimit", max_tokens=None)


def _with_raw_caveat(token: str, raw: bytes) -> str:
    from capwallet import macaroon
    t = Token.parse(token)
    mac = macaroon.RawMacaroon(t.raw.identifier, (*t.raw.caveats, raw),
                               macaroon.extend(t.raw.signature, raw))
    return Token(t.identifier, mac).serialize()


def test_unknown_and_invalid_caveats_fail_closed(relay: Relay) -> None:
    tok = relay.mint(cav.Budget(100, "USD", "month"))
    deny(relay, _with_raw_caveat(tok, b"frobnicate 1"), 401, "unknown_caveat")
    deny(relay, _with_raw_caveat(tok, b"expires soon"), 401, "invalid_caveat")
