"""Error responses: the right status, a stable reason code, a message that says what to do.

Two body shapes, chosen by the endpoint the app called, so each SDK raises its own typed error:

* OpenAI: ``{"error": {"message", "type", "param": null, "code": <reason code>, ...extra}}``
* Anthropic: ``{"type": "error", "error": {"type", "message", "code": <reason code>, ...}}``

Every error response also carries the header ``x-capwallet-reason: <reason code>``.

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
    Reason.INPUT_TOO_LARGE.value: 413,
    Reason.OUTPUT_TOO_LARGE.value: 400,
    Reason.RATE_LIMITED.value: 429,
    Reason.QUOTA_EXCEEDED.value: 429,
    Reason.BUDGET_EXCEEDED.value: 402,
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
    if flavor == "anthropic":
        return {"type": "error",
                "error": {"type": kind, "message": err.message, "code": err.code, **err.extra}}
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code,
                      **err.extra}}


def error_response(err: RelayError, flavor: str = "openai") -> Response:
    body = json.dumps(error_body(err, flavor), separators=(",", ":")).encode()
    headers = {"x-capwallet-reason": err.code, **err.headers}
    return Response(body, status_code=err.status, headers=headers,
                    media_type="application/json")


def sse_error_event(err: RelayError, flavor: str) -> bytes:
    """The event that tells a streaming client the stream broke (both SDKs raise on it)."""
    body = json.dumps(error_body(err, flavor), separators=(",", ":"))
    if flavor == "anthropic":
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\n".encode()
