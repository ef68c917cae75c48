"""Verification: token + keys + request + time + counters -> Decision (spec/verification.md).

The HMAC chain is checked in constant time and the caveats are evaluated here, not by
pymacaroons' Verifier, so that a denial carries the exact reason and the limit that was hit.

A Verifier keeps a bounded cache of verified chains keyed by the exact token string: parsing,
the HMAC chain and caveat decoding run once per token; the per-request checks (revocation,
time, request shape, counters, confirmation) run on every call.
"""

from __future__ import annotations

import hmac
from collections.abc import Container, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from capwallet import approval as approvals
from capwallet import caveats as cav
from capwallet import macaroon, origins
from capwallet.bounded import drop_oldest
from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.limits import CounterLimit, EffectiveLimits, effective
from capwallet.money import MICROS_PER_MINOR, format_micros
from capwallet.periods import PERIOD_LIMIT, period_end, period_key
from capwallet.reasons import Reason, TokenError
from capwallet.token import Token

CLOCK_SKEW = 60  # seconds; see spec/verification.md "Clock skew"
_COUNTER_REASONS = {
    "rate": Reason.RATE_LIMITED, "quota": Reason.QUOTA_EXCEEDED, "budget": Reason.BUDGET_EXCEEDED,
}


_NO_COST: Mapping[str, int] = MappingProxyType({})
# Builds a NamedTuple from all its fields, in order, without the Python frame of the
# generated __new__ (half the cost; evaluate builds a Debit per counter and a Decision on
# every call). Every field must be given: the tests compare every field of every vector.
_new = tuple.__new__


class Request(NamedTuple):
    """What a request wants. ``provider`` set means a model call; None means resource access.

    A model call MUST state provider, model and operation; its token counts and cost are the
    worst case the verifier reserves (input estimate, max output). A resource access (an app's
    own server checking a data/tool scope) states only scopes. (A NamedTuple, because one is
    built per request and a frozen dataclass costs several times more to build.)
    """

    provider: str | None = None
    model: str | None = None
    operation: str | None = None
    scopes: tuple[str, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Mapping[str, int] = _NO_COST  # currency -> microunits (millionths of a minor unit)
    zero_retention: bool = False  # does the provider promise zero retention?
    approval: str | None = None  # a cwa1_ approval string, if the app has one
    # A model call: approvals.request_digest(...) of this exact HTTP request. A resource
    # access: approvals.access_digest(...) of its scopes, summary and request.
    digest: bytes | None = None
    # The Origin header of a browser's request, as sent; None for a server-side call (no
    # header). Checked only against a token with an origin caveat.
    origin: str | None = None

    @property
    def is_model_call(self) -> bool:
        return self.provider is not None


class Debit(NamedTuple):
    """One counter the request must debit (reserve) if it is allowed.

    ``amount``, ``limit`` and ``used`` are in the counter's unit: microunits of ``unit`` (the
    currency) for a budget, tokens for a quota, requests for a rate.

    (Debit and Decision are NamedTuples: immutable like frozen dataclasses, but several times
    cheaper to build, and one of each is built on every request.)
    """

    kind: str
    counter_key: str  # "<counter id>/<period key>"
    amount: int
    limit: int
    used: int
    unit: str
    resets_at: int | None

    def to_json(self) -> dict[str, Any]:
        return self._asdict()  # the fields, in their order (the spec's JSON names them so)


class CounterDenial(NamedTuple):
    """The counter a rate_limited, quota_exceeded or budget_exceeded denial stopped on.

    It is the first counter, in check order (``EffectiveLimits.counters_in_check_order``),
    that the call does not fit, so a relay or an app can say which limit was hit and what is
    left without redoing the verifier's comparison. ``limit``, ``used`` and ``needed`` (what
    this call would add) are in the counter's unit, as in a Debit: microunits of ``unit`` (the
    currency) for a budget, tokens for a quota, requests for a rate.
    """

    kind: str
    counter_id: str
    counter_key: str  # "<counter id>/<period key>"
    unit: str
    limit: int  # CounterLimit.counted_limit
    used: int
    needed: int
    resets_at: int | None

    def to_json(self) -> dict[str, Any]:
        return self._asdict()  # the fields, in their order (the spec's JSON names them so)


class Decision(NamedTuple):
    allowed: bool
    reason: Reason | None
    message: str
    token_id: str | None = None
    limits: EffectiveLimits | None = None
    debits: tuple[Debit, ...] = ()
    approval_id: str | None = None  # approval to consume (single use) if allowed
    needs_approval: bool = False  # True when confirmation_required: the wallet may ask the user
    counter: CounterDenial | None = None  # the counter a counter denial stopped on, else None

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "token_id": self.token_id,
            "limits": None if self.limits is None else self.limits.to_json(),
            "debits": [d.to_json() for d in self.debits],
            "approval_id": self.approval_id,
            "needs_approval": self.needs_approval,
            "counter": None if self.counter is None else self.counter.to_json(),
        }


class VerifiedToken:
    """A token whose chain verified and whose caveats decoded: what the cache holds.

    It also memoises, per UTC minute, the counter keys of the token's counters, since every
    period boundary falls on a minute boundary (time zone offsets are whole minutes).
    ``chain_id`` names the chain (capwallet.macaroon.chain_id) and ``caveats`` are its raw
    caveats, so that a relay can tell a sub-task's attenuated token from its parent's.
    """

    __slots__ = (
        "_minute", "_windows", "caveats", "chain_id", "issued_at", "key_id", "limits",
        "live_from", "live_until", "shaped", "token_id", "token_id_hex",
    )

    def __init__(
        self, token_id: bytes, issued_at: int, limits: EffectiveLimits, key_id: bytes,
        chain_id: str = "", caveats: tuple[bytes, ...] = (),
    ) -> None:
        self.token_id = token_id
        self.token_id_hex = token_id.hex()
        self.issued_at = issued_at
        self.limits = limits
        self.key_id = key_id
        self.chain_id = chain_id
        self.caveats = caveats
        # None, not a minute number: any number (such as -1) is also a real minute, one
        # whose counters would then be skipped (a clock 1-60 s before 1970 with a token
        # issued at 0, inside the clock allowance, read as "no counters").
        self._minute: int | None = None
        self._windows: tuple[tuple[CounterLimit, str, int | None], ...] = ()
        # Whether any caveat limits the request's shape (origin, provider, model, operation,
        # scopes, zero retention, input or output size): decided once per token, so that
        # evaluate skips those checks for a token that has none of them (most of a relay's
        # calls). Forcing it True never changes a decision (tests/test_verify_plan.py).
        self.shaped = (
            limits.origins is not None or limits.providers is not None
            or limits.models is not None or limits.operations is not None
            or limits.scopes is not None or limits.zero_retention
            or limits.max_input_tokens is not None or limits.max_output_tokens is not None
        )
        # The clock readings at which every time check passes (issued_at, not_before and
        # expires, each with the clock allowance), as one interval: live_from <= now <
        # live_until. evaluate runs the checks themselves, in order, only outside it (they say
        # which one failed), and a relay can tell a live token without evaluating it.
        # Emptying the interval never changes a decision (tests/test_verify_plan.py).
        start = issued_at if limits.not_before is None else max(issued_at, limits.not_before)
        self.live_from = start - CLOCK_SKEW
        self.live_until = (MAX_SAFE_INTEGER + 1 if limits.expires is None
                           else limits.expires + CLOCK_SKEW)

    def windows(self, minute: int) -> tuple[tuple[CounterLimit, str, int | None], ...]:
        """(counter, counter key, resets_at) for each counter, for the minute given."""
        if minute != self._minute:
            out = []
            for c in self.limits.counters_in_check_order:
                key, resets = _window(c.period, c.tz, minute)
                out.append((c, c.counter_id + "/" + key, resets))
            self._windows = tuple(out)
            self._minute = minute
        return self._windows


@lru_cache(maxsize=1024)
def _window(period: str, tz: str, minute: int) -> tuple[str, int | None]:
    # Every period boundary falls on a minute boundary (time zone offsets are whole minutes).
    t = minute * 60
    if t >= PERIOD_LIMIT and period != "total":
        # No calendar period is defined here; verification denies period_out_of_range before
        # this key is used (a caller that reads counters first reads a counter never written).
        return "out-of-range", None
    return period_key(period, t, tz), period_end(period, t, tz)


def _deny(reason: Reason, message: str, v: VerifiedToken | None = None, **kw: Any) -> Decision:
    return Decision(
        False, reason, message,
        token_id=None if v is None else v.token_id_hex,
        limits=None if v is None else v.limits, **kw,
    )


def _fmt(limit: CounterLimit, n: int) -> str:
    return format_micros(n, limit.unit) if limit.kind == "budget" else f"{n} {limit.unit}"


class Verifier:
    """Verifies tokens against a fixed key ring, caching verified chains (bounded)."""

    def __init__(self, keys: Mapping[bytes, bytes], cache_size: int = 4096) -> None:
        self.keys = keys
        self.cache_size = cache_size
        self._cache: dict[str, VerifiedToken] = {}

    def check_token(self, text: str) -> VerifiedToken:
        """Parse, check the signature, decode caveats. Raises TokenError. Cached on success."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        token = Token.parse(text)
        secret = self.keys.get(token.identifier.key_id)
        if secret is None:
            raise TokenError(Reason.UNKNOWN_KEY, f"no root key with id {token.key_id}")
        expected = macaroon.chain(secret, token.raw.identifier, token.raw.caveats)
        if not hmac.compare_digest(expected, token.raw.signature):
            raise TokenError(Reason.BAD_SIGNATURE, "token signature does not match")
        decoded = list(zip(token.raw.caveats, cav.decode_all(token.raw.caveats), strict=True))
        tid = token.identifier.token_id
        limits = effective(tid, decoded)
        verified = VerifiedToken(tid, token.identifier.issued_at, limits, token.identifier.key_id,
                                 macaroon.chain_id(token.raw.signature), token.raw.caveats)
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:  # evict the oldest entries (FIFO)
                drop_oldest(self._cache, self.cache_size)
            self._cache[text] = verified
        return verified

    def verify(
        self,
        token: str,
        request: Request,
        now: int,
        counters: Mapping[str, int] | None = None,
        revoked: Container[str] = (),
    ) -> Decision:
        # The clock is the caller's, not the token's: one outside the spec's range is a bug of
        # the caller, raised rather than decided (spec/verification.md#inputs). The relay's hot
        # path calls evaluate() with int(time.time()), which is always in range.
        if type(now) is not int or not 0 <= now <= MAX_SAFE_INTEGER:
            raise ValueError(f"now must be an integer Unix time from 0 to 2^53-1, got {now!r}")
        try:
            v = self.check_token(token)
        except TokenError as exc:
            return _deny(exc.reason, exc.message)
        if v.token_id_hex in revoked:
            return _deny(Reason.REVOKED, "this token has been revoked", v)
        return evaluate(v, request, now, counters or {}, self.keys)


def evaluate(
    v: VerifiedToken,
    request: Request,
    now: int,
    counters: Mapping[str, int],
    keys: Mapping[bytes, bytes],
) -> Decision:
    """The per-request checks, in the order of the reason codes (spec/verification.md)."""
    lim = v.limits
    # Time: the checks, in order, when the clock is outside the interval in which all pass.
    if not v.live_from <= now < v.live_until:
        if v.issued_at > now + CLOCK_SKEW:
            return _deny(Reason.NOT_YET_VALID,
                         f"token was issued in the future ({v.issued_at})", v)
        if lim.not_before is not None and now < lim.not_before - CLOCK_SKEW:
            return _deny(Reason.NOT_YET_VALID, f"token is not valid before {lim.not_before}", v)
        if lim.expires is not None and now >= lim.expires + CLOCK_SKEW:
            return _deny(Reason.EXPIRED, f"token expired at {lim.expires}", v)
    # Request shape (nothing to check unless a caveat limits it).
    model_call = request.provider is not None
    if model_call and (request.model is None or request.operation is None):
        raise ValueError("a model call must state provider, model and operation")
    if v.shaped and (denied := _shape(v, lim, request, model_call)) is not None:
        return denied
    # Counters.
    debits: list[Debit] = []
    if model_call:
        if now >= PERIOD_LIMIT and any(c.period != "total" for c in lim.counters):
            return _deny(Reason.PERIOD_OUT_OF_RANGE,
                         "the verifier's clock is past 9998-01-01T00:00:00Z, the last time for "
                         "which this token's counter periods are defined", v)
        cost = request.cost
        for currency in lim.priced_currencies:
            if currency not in cost:
                return _deny(
                    Reason.PRICE_UNKNOWN, f"the request could not be priced in {currency}", v
                )
        tokens = request.input_tokens + request.output_tokens
        # Ordered rate, quota, budget: the order of the reason codes.
        minute = now // 60
        for c, counter_key, resets in (v._windows if v._minute == minute  # v.windows, inline
                                       else v.windows(minute)):
            kind = c.kind
            amount = cost[c.unit] if kind == "budget" else tokens if kind == "quota" else 1
            used = counters.get(counter_key, 0)
            limit = c.counted_limit
            if amount > 0 and used + amount > limit:
                # A quota's amount (input + output) can exceed 2^53-1 although each part fits:
                # it never fits then, and the denial reports at most 2^53-1 (spec).
                amount = min(amount, MAX_SAFE_INTEGER)
                left = max(limit - used, 0)
                return _deny(_COUNTER_REASONS[kind],
                             f"{c.describe()}: {_fmt(c, used)} used, {_fmt(c, left)} left; "
                             f"this call needs up to {_fmt(c, amount)}", v,
                             counter=CounterDenial(kind, c.counter_id, counter_key, c.unit,
                                                   limit, used, amount, resets))
            debits.append(_new(Debit, (kind, counter_key, amount, limit, used, c.unit, resets)))
    # Confirmation.
    why: str | None = None
    if model_call and lim.confirm_above:
        for currency, threshold in lim.confirm_above.items():
            price, above = request.cost[currency], threshold * MICROS_PER_MINOR
            if price > above:
                why = (f"this call may cost up to {format_micros(price, currency)}, above the "
                       f"{format_micros(above, currency)} that needs your approval")
                break
    if why is None and lim.ask_first:
        for scope in request.scopes:
            if scope in lim.ask_first:
                why = f"scope {scope!r} needs your approval each time it is used"
                break
    approval_id = None
    if why is not None:
        if request.approval is None:
            return _deny(Reason.CONFIRMATION_REQUIRED, why, v, needs_approval=True)
        try:
            a = approvals.check(
                request.approval, keys, v.token_id, request.digest, now, token_key_id=v.key_id,
                kind=approvals.Kind.MODEL_CALL if model_call else approvals.Kind.RESOURCE_ACCESS,
            )
        except TokenError as exc:
            return _deny(Reason.APPROVAL_INVALID, exc.message, v)
        approval_id = a.approval_id_hex
    return _new(Decision, (True, None, "allowed", v.token_id_hex, lim, tuple(debits),
                           approval_id, False, None))


def _shape(
    v: VerifiedToken, lim: EffectiveLimits, request: Request, model_call: bool
) -> Decision | None:
    """The checks of the request's shape, in the order of the reason codes: the denial of
    the first one that fails, else None."""
    if lim.origins is not None and request.origin is not None:
        seen = origins.normalise(request.origin)
        if seen is None or seen not in lim.origins:
            allowed = ", ".join(sorted(lim.origins)) or "none (the caveats conflict)"
            return _deny(Reason.ORIGIN_MISMATCH,
                         f"this token may be used from {allowed}, not from "
                         f"{request.origin[:80]!r}", v)
    if model_call:
        if lim.providers is not None and request.provider not in lim.providers:
            return _deny(Reason.PROVIDER_NOT_ALLOWED,
                         f"provider {request.provider!r} is not allowed; allowed: "
                         f"{', '.join(sorted(lim.providers)) or 'none'}", v)
        if lim.models is not None and request.model not in lim.models:
            return _deny(Reason.MODEL_NOT_ALLOWED,
                         f"model {request.model!r} is not allowed; allowed: "
                         f"{', '.join(sorted(lim.models)) or 'none'}", v)
        if lim.operations is not None and request.operation not in lim.operations:
            return _deny(Reason.OPERATION_NOT_ALLOWED,
                         f"operation {request.operation!r} is not allowed; allowed: "
                         f"{', '.join(sorted(lim.operations)) or 'none'}", v)
    if lim.scopes is not None:
        for scope in request.scopes:
            if scope not in lim.scopes:
                return _deny(Reason.SCOPE_MISSING, f"scope {scope!r} was not granted", v)
    if model_call:
        if lim.zero_retention and not request.zero_retention:
            return _deny(Reason.ZERO_RETENTION_REQUIRED,
                         f"provider {request.provider!r} is not a zero-retention provider", v)
        if lim.max_input_tokens is not None and request.input_tokens > lim.max_input_tokens:
            return _deny(Reason.INPUT_TOO_LARGE,
                         f"request has about {request.input_tokens} input tokens; "
                         f"the limit is {lim.max_input_tokens}", v)
        if lim.max_output_tokens is not None and request.output_tokens > lim.max_output_tokens:
            return _deny(Reason.OUTPUT_TOO_LARGE,
                         f"request asks for up to {request.output_tokens} output tokens; "
                         f"the limit is {lim.max_output_tokens}", v)
    return None

def verify(
    token: str,
    keys: Mapping[bytes, bytes],
    request: Request,
    now: int,
    counters: Mapping[str, int] | None = None,
    revoked: Container[str] = (),
) -> Decision:
    """One-shot verification without a cache (use a Verifier on hot paths)."""
    return Verifier(keys, cache_size=0).verify(token, request, now, counters, revoked)
