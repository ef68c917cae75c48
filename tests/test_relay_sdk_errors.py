"""Every refusal through both official Python SDKs: a typed exception, and no retry the
refusal says cannot help (issue 14, "Errors the official SDKs understand").

A spent budget was a 402, which the openai SDK raises as a bare APIStatusError; a spent
token quota (429) was retried twice by both SDKs. Now a spent budget is what OpenAI answers
when credit runs out (429, code insufficient_quota) and the Anthropic shape's equivalent
(429 rate_limit_error, details.error_code enforced_spend_limit_reached), with the relay's
reason and the limit/used/left fields kept; every refusal a retry cannot fix says
``x-should-retry: false``, and a rate window says ``retry-after``.

The clients run with the SDKs' default retries (2); an httpx event hook counts the requests
each call really sent, and the relay's ledger counts the refusals it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from relay_harness import Relay, token_id

from capwallet import caveats as cav

HELLO = [{"role": "user", "content": "hello there"}]


@dataclass
class Sent:
    n: int = 0

    def hook(self, request: Any) -> None:
        self.n += 1


def clients(relay: Relay, token: str, retries: int = 2) -> tuple[openai.OpenAI, anthropic.Anthropic,
                                                                  Sent]:
    sent = Sent()
    oa = openai.OpenAI(base_url=relay.url + "/v1", api_key=token, max_retries=retries,
                       http_client=openai.DefaultHttpxClient(
                           event_hooks={"request": [sent.hook]}))
    an = anthropic.Anthropic(base_url=relay.url, api_key=token, max_retries=retries,
                             http_client=anthropic.DefaultHttpxClient(
                                 event_hooks={"request": [sent.hook]}))
    return oa, an, sent


def call_openai(c: openai.OpenAI, **kw: Any) -> Any:
    body: dict[str, Any] = {"model": "relay-test", "messages": HELLO, "max_tokens": 16, **kw}
    return c.chat.completions.create(**body)


def call_anthropic(c: anthropic.Anthropic, **kw: Any) -> Any:
    body: dict[str, Any] = {"model": "claude-test", "messages": HELLO, "max_tokens": 16, **kw}
    return c.messages.create(**body)


def refusals(relay: Relay, token: str) -> int:
    relay.quiesce()
    return sum(e.count for e in relay.ledger(token) if e.refused)


@dataclass(frozen=True)
class Kind:
    reason: str
    mint: Callable[[Relay], str]
    openai_error: type[Exception]
    anthropic_error: type[Exception]
    kw: dict[str, Any]  # extra request fields (both APIs)
    recorded: bool = True  # a refusal row is written (the token verified)


KINDS = [
    Kind("budget_exceeded", lambda r: r.mint(cav.Budget(0, "USD", "month")),
         openai.RateLimitError, getattr(anthropic, "EnforcedSpendLimitReachedError",
                                        anthropic.RateLimitError), {}),
    Kind("quota_exceeded", lambda r: r.mint(cav.TokenQuota(10, "day")),
         openai.RateLimitError, anthropic.RateLimitError, {}),
    Kind("model_not_allowed", lambda r: r.mint(cav.Models(("gpt-4o",))),
         openai.PermissionDeniedError, anthropic.PermissionDeniedError, {}),
    Kind("confirmation_required", lambda r: r.mint(cav.ConfirmAbove(0, "USD")),
         openai.PermissionDeniedError, anthropic.PermissionDeniedError, {}),
    Kind("input_too_large", lambda r: r.mint(cav.MaxInputTokens(5)),
         openai.BadRequestError, anthropic.BadRequestError, {}),
    Kind("invalid_request", lambda r: r.mint(cav.Budget(100, "USD", "month")),
         openai.BadRequestError, anthropic.BadRequestError, {"max_tokens": -1},
         recorded=False),
    Kind("unbounded_request", lambda r: r.mint(cav.Budget(100, "USD", "month")),
         openai.BadRequestError, anthropic.BadRequestError,
         {"extra_body": {"service_tier": "priority"}}, recorded=False),
    Kind("malformed", lambda r: "cwt1_bogus",
         openai.AuthenticationError, anthropic.AuthenticationError, {}, recorded=False),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.reason for k in KINDS])
def test_each_refusal_is_typed_and_not_retried(relay: Relay, kind: Kind) -> None:
    token = kind.mint(relay)
    oa, an, sent = clients(relay, token)
    kw = kind.kw
    with pytest.raises(kind.openai_error) as o_err:
        call_openai(oa, **kw)
    assert sent.n == 1, "the openai SDK retried a refusal that a retry cannot fix"
    with pytest.raises(kind.anthropic_error) as a_err:
        call_anthropic(an, **kw)
    assert sent.n == 2, "the anthropic SDK retried a refusal that a retry cannot fix"
    for err in (o_err.value, a_err.value):
        assert isinstance(err, openai.APIStatusError | anthropic.APIStatusError)
        assert err.response.headers["x-should-retry"] == "false"
        assert err.response.headers["x-capwallet-reason"] == kind.reason
        body = err.body
        assert isinstance(body, dict)
        inner = body.get("error", body)
        assert inner["reason"] == kind.reason
    if kind.recorded:
        assert refusals(relay, token) == 2  # one refused call per SDK, no more


def test_a_spent_budget_speaks_each_providers_language(relay: Relay) -> None:
    token = relay.mint(cav.Budget(0, "USD", "month"))
    oa, an, _ = clients(relay, token)
    with pytest.raises(openai.RateLimitError) as o_err:
        call_openai(oa)
    e = o_err.value
    assert e.status_code == 429
    assert (e.code, e.type) == ("insufficient_quota", "insufficient_quota")
    assert isinstance(e.body, dict)
    assert e.body["reason"] == "budget_exceeded"
    assert (e.body["limit"], e.body["used"], e.body["left"]) == (0, 0, 0)
    assert e.body["needed"] > 0 and e.body["unit"] == "micro-USD"
    with pytest.raises(anthropic.RateLimitError) as a_err:
        call_anthropic(an)
    a = a_err.value
    assert a.status_code == 429
    assert isinstance(a.body, dict)
    inner = a.body["error"]
    assert inner["type"] == "rate_limit_error"
    assert inner["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert (inner["reason"], inner["limit"], inner["left"]) == ("budget_exceeded", 0, 0)
    if hasattr(anthropic, "EnforcedSpendLimitReachedError"):  # SDKs that know the code
        assert isinstance(a, anthropic.EnforcedSpendLimitReachedError)


def test_a_rate_window_says_when_to_retry(relay: Relay) -> None:
    """rate_limited is the refusal a retry can fix: retry-after (at most 60 s, the minute
    window) and no x-should-retry: false, so the SDKs wait it out and try again."""
    token = relay.mint(cav.Rate(1))
    oa, an, sent = clients(relay, token, retries=0)
    call_openai(oa)
    cases: list[tuple[Callable[[], object],
                      type[openai.RateLimitError | anthropic.RateLimitError]]] = [
        (lambda: call_openai(oa), openai.RateLimitError),
        (lambda: call_anthropic(an), anthropic.RateLimitError)]
    for call, error in cases:
        with pytest.raises(error) as err:
            call()
        assert isinstance(err.value, (openai.RateLimitError, anthropic.RateLimitError))
        headers = err.value.response.headers
        assert headers["x-capwallet-reason"] == "rate_limited"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert "x-should-retry" not in headers
    assert sent.n == 3


def test_revoked_token_is_typed_and_not_retried(relay: Relay) -> None:
    token = relay.mint(cav.Budget(100, "USD", "month"))
    relay.run(relay.store.revoke(token_id(token), int(time.time())))
    oa, an, sent = clients(relay, token)
    with pytest.raises(openai.AuthenticationError):
        call_openai(oa)
    with pytest.raises(anthropic.AuthenticationError):
        call_anthropic(an)
    assert sent.n == 2
