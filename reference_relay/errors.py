"""Error responses: the right status, a stable reason code, a message that says what to do.

Two body shapes, chosen by the endpoint the app called, so each SDK raises its own typed error:

* OpenAI: ``{"error": {"message", "type", "param": null, "code", "reason", ...extra}}``
* Anthropic: ``{"type": "error", "error": {"type", "message", "code", "reason", ...}}``

``reason`` is always the relay's reason code, and so is ``code`` except where the provider's
own convention names the case (CONVENTIONS): a spent budget is what OpenAI answers when credit
runs out, 429 with type and code ``insufficient_quota``, and on the Anthropic shape 429
``rate_limit_error`` with ``details.error_code`` ``enforced_spend_limit_reached`` (the anthropic
SDK raises EnforcedSpendLimitReachedError, a RateLimitError; older ones RateLimitError). Both
SDKs thus raise a typed RateLimitError rather than a generic APIStatusError for 402.

Every error response also carries the header ``x-capwallet-reason: <reason code>``, and
``x-should-retry: false`` (honoured by both official SDKs, which otherwise retry every 429,
408 and 5xx) unless a retry can succeed: a rate window that reopens within MAX_RETRY_AFTER
seconds (its ``retry-after`` says when), a timeout, or a failure of the provider or the store.

Reason codes are the verifier's (capwallet.reasons.Reason, a closed protocol list) plus the
relay's own codes below for what happens around verification. Messages never contain a
provider key or a token: they are built from our own text, and upstream error bodies that are
passed through are scrubbed of the provider key first.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from capwallet.reasons import Reason

# The relay's own reason codes (not protocol reasons: nothing outside this relay depends on them).
INVALID_REQUEST = "invalid_request"  # 400: body is not the JSON the endpoint expects
REQUEST_TOO_LARGE = "request_too_large"  # 413: body over the relay's size limit
REQUEST_TIMEOUT = "request_timeout"  # 408: the body did not arrive within body_timeout
UNBOUNDED_REQUEST = "unbounded_request"  # 400: cost cannot be bounded before the call
MODEL_NOT_FOUND = "model_not_found"  # 404: no configured provider serves this model
WRONG_API = "wrong_api"  # 400: model is served, but through the other API flavor
MISSING_TOKEN = "missing_token"  # noqa: S105 - 401: no capability token in the request
UPSTREAM_ERROR = "upstream_error"  # 502: provider failed or answered with an error
UPSTREAM_TIMEOUT = "upstream_timeout"  # 504: provider did not answer in time
UPSTREAM_RATE_LIMITED = "upstream_rate_limited"  # 429: the provider itself said 429
PROVIDER_UNAVAILABLE = "provider_unavailable"  # 502: no API key configured for the provider
STORE_UNAVAILABLE = "store_unavailable"  # 503: counters cannot be read or reserved: deny
INTERNAL_ERROR = "internal_error"  # 500: a bug; the body never has a traceback
NOT_FOUND = "not_found"  # 404: no such route
METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
BAD_HOST = "bad_host"  # 421: Host header is not one this relay serves (DNS rebinding)
HEADERS_TOO_LARGE = "headers_too_large"  # 431: too many or too large request headers
UNSUPPORTED_FEATURE = "unsupported_feature"  # 400: a request option the relay cannot meter
UNSUPPORTED_ROUTE = "unsupported_route"  # 404: a provider route this relay does not serve

STATUS: dict[str, int] = {
    # Stage 1-2: the token itself -> 401.
    **{r.value: 401 for r in (
        Reason.MALFORMED, Reason.UNSUPPORTED_VERSION, Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE,
        Reason.UNKNOWN_CAVEAT, Reason.INVALID_CAVEAT, Reason.REVOKED, Reason.NOT_YET_VALID,
        Reason.EXPIRED)},
    # Stage 3: not allowed by the token -> 403.
    **{r.value: 403 for r in (
        Reason.ORIGIN_MISMATCH, Reason.PROVIDER_NOT_ALLOWED, Reason.MODEL_NOT_ALLOWED,
        Reason.OPERATION_NOT_ALLOWED,
        Reason.SCOPE_MISSING, Reason.ZERO_RETENTION_REQUIRED, Reason.PRICE_UNKNOWN,
        Reason.CONFIRMATION_REQUIRED, Reason.APPROVAL_INVALID)},
    Reason.INPUT_TOO_LARGE.value: 400,  # as both providers answer a prompt over the context
    Reason.OUTPUT_TOO_LARGE.value: 400,
    Reason.RATE_LIMITED.value: 429,
    Reason.QUOTA_EXCEEDED.value: 429,
    Reason.BUDGET_EXCEEDED.value: 429,  # as OpenAI's insufficient_quota (CONVENTIONS)
    INVALID_REQUEST: 400,
    REQUEST_TOO_LARGE: 413,
    REQUEST_TIMEOUT: 408,
    UNBOUNDED_REQUEST: 400,
    MODEL_NOT_FOUND: 404,
    WRONG_API: 400,
    MISSING_TOKEN: 401,
    UPSTREAM_ERROR: 502,
    UPSTREAM_TIMEOUT: 504,
    UPSTREAM_RATE_LIMITED: 429,
    PROVIDER_UNAVAILABLE: 502,
    STORE_UNAVAILABLE: 503,
    INTERNAL_ERROR: 500,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    BAD_HOST: 421,
    HEADERS_TOO_LARGE: 431,
    UNSUPPORTED_FEATURE: 400,
    UNSUPPORTED_ROUTE: 404,
}

# Error "type" per status, as the SDKs know them.
_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large", 421: "invalid_request_error", 429: "rate_limit_error",
    431: "request_too_large",
    500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error",
}


# What each provider's own API says in place of a relay reason: fields set on the error object.
CONVENTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("openai", Reason.BUDGET_EXCEEDED.value): {"type": "insufficient_quota",
                                                "code": "insufficient_quota"},
    ("anthropic", Reason.BUDGET_EXCEEDED.value): {
        "details": {"error_code": "enforced_spend_limit_reached"}},
}

# Refusals that the same request may pass when retried (anything else: x-should-retry false).
RETRYABLE = frozenset({
    Reason.RATE_LIMITED.value, REQUEST_TIMEOUT, UPSTREAM_ERROR, UPSTREAM_TIMEOUT,
    UPSTREAM_RATE_LIMITED, STORE_UNAVAILABLE, INTERNAL_ERROR,
})
MAX_RETRY_AFTER = 60  # seconds: the SDKs wait out a retry-after up to this, else back off


def should_retry(err: RelayError) -> bool:
    if err.code not in RETRYABLE:
        return False
    after = err.headers.get("retry-after")
    return after is None or (after.isdigit() and int(after) <= MAX_RETRY_AFTER)


class RelayError(Exception):
    """An answer the relay gives instead of forwarding: reason code, message, extra fields."""

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS.get(code, 400)
        self.extra = extra or {}
        self.headers = headers or {}


def error_body(err: RelayError, flavor: str) -> dict[str, Any]:
    kind = _TYPES.get(err.status, "api_error")
    convention = CONVENTIONS.get((flavor, err.code), {})
    if flavor == "anthropic":
        return {"type": "error",
                "error": {"type": kind, "message": err.message, "code": err.code,
                          "reason": err.code, **err.extra, **convention}}
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code,
                      "reason": err.code, **err.extra, **convention}}


def error_response(err: RelayError, flavor: str = "openai") -> Response:
    body = json.dumps(error_body(err, flavor), separators=(",", ":")).encode()
    headers = {"x-capwallet-reason": err.code, **err.headers}
    if not should_retry(err):
        headers["x-should-retry"] = "false"
    return Response(body, status_code=err.status, headers=headers,
                    media_type="application/json")


def sse_error_event(err: RelayError, flavor: str) -> bytes:
    """The event that tells a streaming client the stream broke (both SDKs raise on it)."""
    body = json.dumps(error_body(err, flavor), separators=(",", ":"))
    if flavor == "anthropic":
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\n".encode()
