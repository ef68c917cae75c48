"""The closed list of reason codes a verifier may return.

The list is part of the protocol (spec/verification.md, "Reason codes"): implementations in
other languages return exactly these strings, and test vectors name them. Adding a code is a
protocol change. The order of this enum is the order in which verification checks run, so the
first failing check determines the reason.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Stage 1: the token itself.
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_CAVEAT = "unknown_caveat"
    INVALID_CAVEAT = "invalid_caveat"
    REVOKED = "revoked"
    # Stage 2: time.
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    # Stage 3: the shape of the request.
    ORIGIN_MISMATCH = "origin_mismatch"
    PROVIDER_NOT_ALLOWED = "provider_not_allowed"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    OPERATION_NOT_ALLOWED = "operation_not_allowed"
    SCOPE_MISSING = "scope_missing"
    ZERO_RETENTION_REQUIRED = "zero_retention_required"
    INPUT_TOO_LARGE = "input_too_large"
    OUTPUT_TOO_LARGE = "output_too_large"
    # Stage 4: counters.
    PERIOD_OUT_OF_RANGE = "period_out_of_range"
    PRICE_UNKNOWN = "price_unknown"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded"
    # Stage 5: human confirmation.
    CONFIRMATION_REQUIRED = "confirmation_required"
    APPROVAL_INVALID = "approval_invalid"


class TokenError(ValueError):
    """A token (or approval) could not be accepted; ``reason`` is a stable code from Reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"
