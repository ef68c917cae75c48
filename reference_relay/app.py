"""The relay as an ASGI app: authenticate, verify, reserve, forward, settle.

``create_app(config)`` returns a Starlette app whose routes are all under /v1 plus /healthz,
so the wallet can mount it in its own process. Request path for a model call:

1. the capability token from ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key``
   (Anthropic SDK); the body (at most ``max_body_bytes``) as JSON;
2. the token's chain is checked (cached by the one Verifier);
3. the model is routed to a configured provider; the request's worst case is computed
   (reference_relay.estimate) and priced in every currency the token budgets or confirms in;
4. the Verifier decides, with no counters read;
5. the worst case is reserved atomically on every counter (all or none; the token's revocation
   is checked and an approval consumed in the same step), then the call is forwarded and
   settled (reference_relay.calls): two store operations for a call that goes through.
   A refusal (by the Verifier or the reservation) reads the revocation and the counters and is
   judged again with them, so it says exactly what was hit; confirmation_required creates a
   pending approval in the store and answers with its id and URL. Any refusal of a received
   request before the reservation reads the revocation first: a revoked token gets its own
   401 (a body too large or too slow to receive is refused as such, with no store read).

Nothing here returns a traceback, a provider key or a token: errors are JSON with a reason code
(reference_relay.errors) and logs name the token id only (LogRedactor scrubs anything else).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager, nullcontext
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capwallet.approval import Kind, request_digest
from capwallet.bounded import drop_oldest
from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.keys import Keyring, RootKey
from capwallet.limits import CounterLimit, EffectiveLimits
from capwallet.loops import running_loop
from capwallet.maintenance import run_every
from capwallet.money import EXPONENTS, format_micros
from capwallet.periods import period_key
from capwallet.reasons import Reason, TokenError
from capwallet.store import (
    COUNTER_MARGIN,
    Hold,
    LedgerEntry,
    PendingApproval,
    Reservation,
    Store,
    StoreUnavailable,
    open_store,
)
from capwallet.verify import Decision, Request, VerifiedToken, Verifier, evaluate
from reference_relay.body import parse_body
from reference_relay.calls import Call, _SettleAfterSend
from reference_relay.chains import ChainNotes
from reference_relay.config import ModelConfig, ProviderConfig, RelayConfig, env_keys
from reference_relay.errors import (
    BAD_HOST,
    HEADERS_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_ALLOWED,
    MISSING_TOKEN,
    MODEL_NOT_FOUND,
    NOT_FOUND,
    REQUEST_TIMEOUT,
    REQUEST_TOO_LARGE,
    STORE_UNAVAILABLE,
    UNSUPPORTED_ROUTE,
    WRONG_API,
    RelayError,
    error_response,
)
from reference_relay.estimate import InputEstimate
from reference_relay.ids import new_id
from reference_relay.prices import Converter, Price
from reference_relay.routes import OUTPUT_CAP_HEADER, Endpoint, Prepared
from reference_relay.routes.anthropic import CountTokens, Messages
from reference_relay.routes.openai import ChatCompletions, Embeddings, Moderations, Responses
from reference_relay.server_flags import PAUSING_BODY, body_here, client_gone, resume_reading
from reference_relay.upstream import (
    FORWARDED,
    Upstream,
    forwarded_headers,
    provider_key_missing,
)

log = logging.getLogger("reference_relay")
APPROVAL_HEADER = "x-capwallet-approval"
# An app that would rather be refused than have its output cap lowered to what its budget
# affords sends "x-capwallet-output-cap: refuse" (spec/budgets.md, "Output caps").
CLAMP_HEADER = "x-capwallet-output-cap"
# Below this many output tokens a lowered cap is no use to anyone: the call is refused instead.
MIN_CLAMPED_OUTPUT = 256
MAX_HEADER_BYTES = 16 * 1024  # all request headers together
MAX_HEADER_FIELDS = 100
AUTH_REMEMBERED = 4096  # Authorization headers whose token check Relay.handle remembers
PRUNE_INTERVAL = 3600.0  # seconds between deletions of past periods' counters and old ledger rows
_TOKEN_TEXT = re.compile(r"cwt1_[A-Za-z0-9_-]{4,}")
# Provider routes the relay refuses by name (rather than a bare not_found): their cost is
# per image, per second of audio or otherwise outside what it bounds and meters.
_UNSUPPORTED = (("/v1/completions", "legacy completions"), ("/v1/images", "image generation"),
                ("/v1/audio", "audio"), ("/v1/files", "files"), ("/v1/batches", "batches"),
                ("/v1/fine_tuning", "fine-tuning"), ("/v1/assistants", "assistants"),
                ("/v1/threads", "assistants threads"), ("/v1/vector_stores", "vector stores"),
                ("/v1/realtime", "realtime"), ("/v1/messages/batches", "message batches"))
_KIND_REASON = {"budget": Reason.BUDGET_EXCEEDED, "quota": Reason.QUOTA_EXCEEDED,
                "rate": Reason.RATE_LIMITED}


_PLAIN = logging.Formatter()  # formats tracebacks for LogRedactor


class LogRedactor(logging.Filter):
    """Removes provider keys and capability tokens from log records (defence in depth)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        if secret and len(self.secrets) < 1024:
            self.secrets.add(secret)

    def scrub(self, text: str) -> str:
        """``text`` without tokens or known provider keys (the same object when it had none)."""
        clean = _TOKEN_TEXT.sub("cwt1_[redacted]", text) if "cwt1_" in text else text
        for s in self.secrets:
            if s in clean:
                clean = clean.replace(s, "[provider key redacted]")
        return clean

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text or record.stack_info:
            self._scrub_traceback(record)
        try:
            msg = record.getMessage()
        except Exception:
            # The handler would fail the same way and print msg and args to stderr.
            try:
                text = self.scrub(str(record.msg))
            except Exception:
                text = "(unprintable log message)"
            record.msg, record.args = text + " [arguments dropped: unformattable]", None
            return True
        clean = self.scrub(msg)
        if clean is not msg:
            record.msg, record.args = clean, None
        return True

    def _scrub_traceback(self, record: logging.LogRecord) -> None:
        """A traceback (log.exception) repeats the exception's message, which may hold a key
        or a token: format it here, scrub the text and drop exc_info, so that a handler
        writes the scrubbed text (logging.Formatter uses exc_text when set) rather than
        formatting the exception again. stack_info is text already."""
        if record.exc_info:
            if not record.exc_text:
                try:
                    record.exc_text = _PLAIN.formatException(record.exc_info)
                except Exception:
                    record.exc_text = "(traceback could not be formatted)"
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)


# One redactor for the process (every relay app adds the keys it uses), on the relay's loggers.
REDACTOR = LogRedactor()
for _name in ("reference_relay", "reference_relay.calls"):
    logging.getLogger(_name).addFilter(REDACTOR)


@lru_cache(maxsize=4096)
def _period(period: str, tz: str, minute: int) -> str:
    return period_key(period, minute * 60, tz)


def counter_keys(limits: EffectiveLimits, now: int) -> list[str]:
    """The keys of a token's counters at ``now``, in caveat order (for tools and tests: the
    relay itself takes them from the verified token's ``windows``, in check order)."""
    minute = now // 60
    return [f"{c.counter_id}/{_period(c.period, c.tz, minute)}" for c in limits.counters]


def body_of(raw: bytes) -> dict[str, Any]:
    """A fresh parse of the app's body (an endpoint's prepare rewrites the one it is given);
    it parsed once already, so it parses the same way again."""
    return parse_body(raw)


def worst_raw_cost(price: Price, est: InputEstimate, output_tokens: int) -> int:
    plain = price.plain_cost(est.tokens, output_tokens)
    if not est.cache_write:
        return plain
    return max(plain, price.raw_cost(input_tokens=0, cache_write_tokens=est.tokens,
                                     output_tokens=output_tokens))


def _detail(kind: str, unit: str, limit: int, used: int, needed: int,
            resets_at: int | None) -> dict[str, Any]:
    """The numbers of a counter denial, in the counter's unit (named in ``unit``: microunits
    of the currency for a budget)."""
    return {"limit": limit, "used": used, "left": max(limit - used, 0), "needed": needed,
            "unit": f"micro-{unit}" if kind == "budget" else unit, "resets_at": resets_at}


def _counter_extra(decision: Decision) -> dict[str, Any]:
    """A counter denial's error fields, from the counter the verifier named (the decision's
    ``counter``, spec/verification.md#decision); none for any other denial."""
    c = decision.counter
    if c is None:
        return {}
    return _detail(c.kind, c.unit, c.limit, c.used, c.needed, c.resets_at)


def _response_headers(prepared: Prepared, rates: list[str]) -> dict[str, str]:
    """What the relay tells the app beside the provider's answer: a lowered output cap, the
    exchange rates a budget was converted at (one dict, usually empty)."""
    out = dict(prepared.headers)
    if rates:
        out["x-capwallet-fx"] = "; ".join(rates)
    return out


def _fmt(c: CounterLimit, n: int) -> str:
    """An amount in the counter's unit (microunits for a budget) for people."""
    return format_micros(n, c.unit) if c.kind == "budget" else f"{n} {c.unit}"


_CORS_EXPOSE = (b"x-capwallet-reason, x-capwallet-approval-request, x-capwallet-fx, "
                b"x-capwallet-output-cap, retry-after, x-request-id, request-id")


_new = tuple.__new__  # a NamedTuple from all its fields, in order (see _judge)
# Relay.handle builds a Call from positions, in this order: a change to Call's fields must
# change both, so a mismatch stops the import rather than shifting an argument.
_CALL_FIELDS = ("store", "upstream", "converter", "spawn", "loop", "endpoint", "provider",
                "model", "prepared", "token_id", "app", "debits", "reservation_id", "worst_raw",
                "ledger_currency", "key", "started", "log_bodies", "max_log_bytes",
                "request_body", "forward_headers", "response_headers", "chain_id")


def check_positions(cls: type, names: tuple[str, ...]) -> None:
    """ImportError unless a dataclass's first ``__init__`` parameters are ``names``, in
    order, and every one after them has a default (a call that gives ``names`` by position
    fills each field it means to)."""
    init = [f for f in dataclasses.fields(cls) if f.init]
    if (tuple(f.name for f in init[:len(names)]) != names
            or any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in init[len(names):])):
        raise ImportError(f"{cls.__qualname__}'s fields are not {names}: update the code "
                          "that builds it from positions (reference_relay.app)")


check_positions(Call, _CALL_FIELDS)
_NO_COST: Mapping[str, int] = MappingProxyType({})
_ABSENT: Any = object()  # a key the body does not have (None is a value it can have)
_NO_WAIT = nullcontext()  # the body read's context when it cannot wait (body_here)
# The counters of a call's first judgement (all read as 0; evaluate only reads them).
_NO_COUNTERS: Mapping[str, int] = {}  # a dict: its get is a C call, a mapping proxy's is not


def _judge(v: VerifiedToken, keys: Mapping[bytes, bytes], provider: ProviderConfig,
           model_id: str, ep: Endpoint, p: Prepared, costs: dict[str, int],
           approval: str | None, digest: bytes | None, origin: str | None, now: int,
           counters: Mapping[str, int]) -> Decision:
    """The rest of Verifier.verify for a model call whose token chain was checked (Relay.handle
    checks it first): the per-request checks. The Request is built from all its fields in
    order, without the generated __new__'s Python frame (half the cost, on every call)."""
    return evaluate(v, _new(Request, (
        provider.id, model_id, ep.operation, (), p.input.tokens, p.output_tokens, costs,
        provider.zero_retention, approval, digest, origin)), now, counters, keys)

# The request headers a model call reads, each with its name decoded (looked up, not decoded
# per request).
_WANTED = {n: n.decode("latin-1") for n in (
    b"authorization", b"x-api-key", b"content-length", b"anthropic-version", b"anthropic-beta",
    APPROVAL_HEADER.encode(), CLAMP_HEADER.encode(), b"origin")}


HEADERS_SCOPE_KEY = "capwallet.headers"  # where the relay's RequestGuard puts them


def _wanted_headers(scope: Scope) -> dict[str, str]:
    """The request headers a model call reads (the first of each name, as Starlette's
    Headers.get would give), decoded: as the relay's RequestGuard collected them, or
    collected here when no guard did."""
    got: dict[str, str] | None = scope.get(HEADERS_SCOPE_KEY)
    if got is not None:
        return got
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        if k in _WANTED:
            name = _WANTED[k]
            if name not in out:
                out[name] = v.decode("latin-1")
    return out


class Presented(NamedTuple):
    """A presented token as Relay.handle uses it on every call, worked out once per
    Authorization header (Relay._by_header) rather than on each call: the token, the
    Verifier's check of its chain, the app name its ledger rows carry, and the currency of
    its first budget in check order (the currency its ledger rows count in; None without a
    budget: then the price's)."""

    token: str
    v: VerifiedToken
    app: str
    budget_currency: str | None


def _presented(token: str, v: VerifiedToken) -> Presented:
    # Cheap as it stands (a loop, not a generator; the tuple built from its fields): a token
    # sent as x-api-key (the Anthropic SDK's way) gets it on every call.
    limits = v.limits
    budget = None
    for c in limits.counters_in_check_order:
        if c.kind == "budget":
            budget = c.unit
            break
    return _new(Presented, (token, v, limits.apps[0] if limits.apps else "", budget))


class RequestGuard:
    """Header limits; only the Host names the config allows (defeats DNS rebinding); CORS.

    CORS: browser apps call the relay with their token in a header, never with cookies, so
    the relay can answer the origins in ``allowed_origins`` (none by default: the wallet, which
    mounts the relay, answers only origins it granted) without giving a page anything it did
    not already hold. Preflights are answered here, with ``Access-Control-Allow-Private-Network``
    for browsers that ask before reaching loopback.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...],
                 origins: tuple[str, ...] = (), collect: bool = False) -> None:
        self.app = app
        # The relay's own guard also collects the headers a model call reads (_WANTED) in
        # the walk that measures them, into scope[HEADERS_SCOPE_KEY], so that the call does
        # not walk them again (_wanted_headers does when that key is missing).
        self.collect = collect
        self.any = "*" in allowed
        self.allowed = frozenset(h.lower().strip("[]") for h in allowed)
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode() for o in origins)

    def _origin(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        if not self.origins and not self.any_origin:
            return None
        for k, v in headers:
            if k == b"origin":
                return v if self.any_origin or v in self.origins else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        err = None
        # The request target counts too: a parser bounds only a head that arrives in pieces.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if len(headers) > MAX_HEADER_FIELDS:
            size = MAX_HEADER_BYTES + 1
        elif self.collect:
            wanted: dict[str, str] = {}
            for k, v in headers:
                size += len(k) + len(v) + 4
                if k in _WANTED:
                    name = _WANTED[k]
                    if name not in wanted:
                        wanted[name] = v.decode("latin-1")
            scope[HEADERS_SCOPE_KEY] = wanted
        else:
            size += sum(len(k) + len(v) + 4 for k, v in headers)
        if size > MAX_HEADER_BYTES:
            err = RelayError(HEADERS_TOO_LARGE, f"request headers exceed the relay's limit "
                             f"({MAX_HEADER_FIELDS} fields, {MAX_HEADER_BYTES} bytes)")
        elif not self.any:
            host = ""
            for k, v in headers:
                if k == b"host":
                    host = v.decode("latin-1").lower()
                    break
            name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                err = RelayError(BAD_HOST, "this relay does not serve that Host name")
        origin = self._origin(headers)
        if err is None and origin is not None and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"*, authorization"),
                (b"access-control-allow-private-network", b"true"),
                (b"access-control-max-age", b"600"),
                (b"vary", b"origin"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return
        if origin is not None:
            inner = send

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start" and not any(
                        k.lower() == b"access-control-allow-origin"
                        for k, _ in message.get("headers", [])):  # public: "*" already
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"access-control-allow-origin", origin),
                        (b"access-control-expose-headers", _CORS_EXPOSE), (b"vary", b"origin")]
                await inner(message)

        if err is not None:
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CostPlans:
    """A call's worst case in every currency a token budgets or confirms in, with the rates
    used: Converter.micros for each currency, its factors worked out once per model price
    and set of currencies, so that a call pays one multiplication and one division per
    currency (the same results: tests/test_relay_costs.py)."""

    def __init__(self, converter: Converter) -> None:
        self.converter = converter
        # (id(price), currencies) -> (price, steps); the price is kept to check the id.
        self._plans: dict[tuple[int, tuple[str, ...]],
                          tuple[Price, tuple[tuple[str, int, int, str | None], ...]]] = {}

    def costs(self, price: Price, raw: int,
              currencies: tuple[str, ...]) -> tuple[dict[str, int], list[str]]:
        """Microunits of each currency that has a rate (rounded up), and the rates used."""
        if not raw:  # nothing costs nothing in every currency, with no rate (Converter.micros)
            return dict.fromkeys(currencies, 0), []
        plan = self._plans.get((id(price), currencies))
        if plan is None or plan[0] is not price:
            plan = self._plan(price, currencies)
        out: dict[str, int] = {}
        rates: list[str] = []
        for currency, top, bottom, rate in plan[1]:
            out[currency] = -(-raw * top // bottom)
            if rate is not None and rate not in rates:
                rates.append(rate)
        return out, rates

    def _plan(self, price: Price, currencies: tuple[str, ...]
              ) -> tuple[Price, tuple[tuple[str, int, int, str | None], ...]]:
        steps = []
        for currency in currencies:
            f = self.converter.factor(price.currency, currency)
            if f is None:
                continue  # no rate: left out (the verifier says price_unknown)
            num, den, rate = f
            exp = EXPONENTS[currency] - EXPONENTS[price.currency]
            steps.append((currency, num * 10 ** max(exp, 0),
                          price.scale * den * 10 ** max(-exp, 0),
                          None if rate is None else rate.describe()))
        plan = (price, tuple(steps))
        if len(self._plans) < 4096:  # a config's prices times the tokens' currency sets
            self._plans[(id(price), currencies)] = plan
        return plan


class Relay:
    """The relay's state: config, keys and one Verifier, store, upstream pool, tasks."""

    def __init__(self, config: RelayConfig, store: Store | None, keys: Keyring | None,
                 provider_keys: Callable[[str], str] | None) -> None:
        self.config = config
        self.keys = keys if keys is not None else Keyring(RootKey.load(p)
                                                          for p in config.root_keys)
        self.verifier = Verifier(self.keys)
        self.owns_store = store is None
        self.store = store if store is not None else open_store(config.store_url)
        self.provider_keys = provider_keys or env_keys(config)
        self.converter = config.converter
        self.upstream = Upstream(config)
        self.redactor = REDACTOR
        self.tasks: set[asyncio.Task[Any]] = set()
        # Model calls in serve (from the app's request to its response's end): with one alone
        # in flight, no other call's write can join its reservation's batch, so a store that
        # groups writes need not wait a turn of the loop for company. The store is told how
        # to count them (Store.attach_server), and counts every relay it serves together.
        self.calls = 0
        self._detach = self.store.attach_server(self._alone, self._in_flight)
        self.sweeper: asyncio.Task[None] | None = None
        self._pruned_at: float | None = None  # time.monotonic() of the sweep's last pruning
        self.chains = ChainNotes(self.store, self.spawn)
        self.cost_plans = CostPlans(self.converter)
        self._keys_checked: dict[str, str] = {}  # provider id -> the key forwarding() passed
        # Authorization header -> its token as handle uses it (Presented): see handle.
        self._by_header: dict[str, Presented] = {}
        self._routes: dict[tuple[str, str, frozenset[str] | None],
                           tuple[ProviderConfig, ModelConfig, int]] = {}
        self.index: dict[str, list[tuple[ProviderConfig, ModelConfig]]] = {}
        for p in config.providers:
            for m in p.models.values():
                self.index.setdefault(m.id, []).append((p, m))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lease sweeper (idempotent; also done lazily on the first request, so a
        relay mounted inside another app, whose lifespan does not reach it, still sweeps)."""
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = running_loop().create_task(self._sweep())

    async def aclose(self, grace: float = 30.0) -> None:
        """Stop sweeping, let in-flight calls settle (up to ``grace`` seconds), close pools.

        It waits until no task of the relay's is left, not only for those it finds (a
        settlement cancelled in its task is written again from a new one, Call._close), then
        for the writes queued in the store (Call.settle_soon): closing the store under such
        a write left the reservation open (on Redis)."""
        if self.sweeper is not None:
            self.sweeper.cancel()
        loop = running_loop()
        deadline = loop.time() + grace
        while pending := [t for t in self.tasks if not t.done()]:
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        await self.store.drain()  # the settlements queued without a task (Call.settle_soon)
        self._detach()  # its calls count no more in the store's batching
        await self.upstream.aclose()
        if self.owns_store:
            await self.store.close()

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            await self.aclose()

    async def _sweep(self) -> None:
        """Close expired leases every sweep_interval and prune hourly, until cancelled. A turn
        that fails, whatever the error, is logged and the next one runs (capwallet.maintenance:
        before, any error but StoreUnavailable ended the task, and leases of crashed calls
        were never closed again until a restart)."""
        await run_every(self.config.sweep_interval, self._sweep_turn, log, "lease sweep")

    async def _sweep_turn(self) -> None:
        """One turn of the sweep: the expired leases, then (hourly) the pruning."""
        now = int(time.time())
        n = await self.store.expire_leases(now)
        if n:
            log.warning("closed %d reservation(s) whose lease expired", n)
        pruned_at = self._pruned_at
        if pruned_at is None or time.monotonic() - pruned_at >= PRUNE_INTERVAL:
            # Marked before it runs: a prune that fails is tried again an hour later, not at
            # every turn of the lease sweep.
            self._pruned_at = time.monotonic()
            # After the leases above: no open reservation holds a counter this deletes (a
            # reservation is made in its counters' period, its lease ends long before
            # COUNTER_MARGIN is over).
            gone = await self.store.prune_counters(now - COUNTER_MARGIN)
            if gone:
                log.info("deleted %d counter(s) of periods that ended over %d days ago",
                         gone, COUNTER_MARGIN // 86400)
            days = self.config.ledger_retention_days
            if days:
                gone = await self.store.prune_ledger(now - days * 86400)
                if gone:
                    log.info("deleted %d ledger row(s) older than %d days", gone, days)
                # The chains whose ledger rows are all gone: a chain's last row is written at
                # most a lease after it expires (COUNTER_MARGIN is ample).
                gone = await self.store.prune_chains(now - days * 86400 - COUNTER_MARGIN)
                if gone:
                    log.info("deleted %d chain record(s) that expired over %d days ago",
                             gone, days + COUNTER_MARGIN // 86400)

    def _alone(self) -> bool:
        """No other call in flight, nor more than one task of the relay's (the caller's)."""
        return self.calls <= 1 and len(self.tasks) <= 1

    def _in_flight(self) -> tuple[int, int]:
        """(calls, tasks) in flight: what _alone reads, for a store that sums several relays."""
        return self.calls, len(self.tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background task failed: %s: %s", type(exc).__name__, exc)

    # -- request pieces ---------------------------------------------------------------------

    @staticmethod
    def token(headers: Mapping[str, str]) -> str:
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise RelayError(Reason.MALFORMED.value,
                                 "the Authorization header must be 'Bearer cwt1_...'")
            return value.strip()
        value = headers.get("x-api-key", "").strip()
        if not value:
            raise RelayError(MISSING_TOKEN, "send your capability token as 'Authorization: "
                             "Bearer cwt1_...' or 'x-api-key: cwt1_...'")
        return value

    def too_large(self) -> RelayError:
        return RelayError(REQUEST_TOO_LARGE, "the request body is larger than the relay's "
                          f"limit of {self.config.max_body_bytes} bytes")

    def route(self, model_id: str, ep: Endpoint,
              limits: EffectiveLimits) -> tuple[ProviderConfig, ModelConfig, int]:
        """The provider and model a call goes to, and the provider's lease (seconds a
        reservation holds before the sweeper closes it at its worst case); the same for every
        call of one model through one API by tokens allowing one set of providers, so
        remembered (bounded: a model the config does not serve is refused before anything is
        remembered)."""
        key = (model_id, ep.api, limits.providers)
        hit = self._routes.get(key)
        if hit is None:
            provider, model = self._route(model_id, ep, limits)
            hit = (provider, model, self.config.lease_seconds(provider))
            if len(self._routes) < 4096:
                self._routes[key] = hit
        return hit

    def _route(self, model_id: str, ep: Endpoint,
               limits: EffectiveLimits) -> tuple[ProviderConfig, ModelConfig]:
        candidates = self.index.get(model_id)
        if not candidates:
            raise RelayError(MODEL_NOT_FOUND, f"no provider of this relay serves model "
                             f"{model_id!r}; GET /v1/models lists the models your token may use")
        same_api = [c for c in candidates if c[0].api == ep.api]
        if not same_api:
            other = "/v1/messages (Anthropic API)" if ep.api == "openai" else (
                "/v1/chat/completions (OpenAI API)")
            raise RelayError(WRONG_API, f"model {model_id!r} is served through {other}")
        allowed = [c for c in same_api if limits.providers is None or c[0].id in limits.providers]
        # No allowed provider: route to the first anyway, and the Verifier names the refusal.
        return (allowed or same_api)[0]

    def costs(self, price: Price, raw: int,
              limits: EffectiveLimits) -> tuple[dict[str, int], list[str]]:
        """Worst-case cost in microunits of every currency the token budgets or confirms in,
        and the rates used to get there (a currency with no rate is left out: the verifier
        says price_unknown)."""
        return self.cost_plans.costs(price, raw, limits.priced_currencies)

    def fx_note(self, rates: list[str]) -> str:
        if not rates:
            return ""
        date = f" of {self.config.rates_date}" if self.config.rates_date else ""
        return f" (prices converted at {', '.join(rates)}, the relay's configured rate{date})"

    # -- the model-call pipeline ------------------------------------------------------------

    def endpoint(self, ep: Endpoint) -> ASGIApp:
        """The ASGI app of one model-call route (see ModelCallApp)."""
        return ModelCallApp(self, ep)

    async def serve(self, ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if self.sweeper is None:
            self.start()
        # Counted until the response's end (a stream's too): a count left too high (an
        # error in an except clause below) only makes the store wait for company as before.
        self.calls += 1
        try:
            response = await self.handle(scope, receive, ep, started)
        except RelayError as err:
            response = error_response(err, ep.errors)
        except StoreUnavailable as exc:
            log.error("store unavailable: %s", exc)
            response = error_response(RelayError(
                STORE_UNAVAILABLE, "the relay's counter store is unavailable, so the "
                "request was not forwarded; retry later"), ep.errors)
        except Exception as exc:
            log.exception("internal error on %s: %s", ep.route, type(exc).__name__)
            response = error_response(RelayError(
                INTERNAL_ERROR, "internal error in the relay; the request was not "
                "completed"), ep.errors)
        except BaseException:  # cancelled
            self.calls -= 1
            raise
        try:
            if type(response) is _SettleAfterSend:
                # The usual answer, sent here as its own __call__ would send it: one
                # coroutine fewer per call to make and to pass through (some 1.2 K
                # instructions, callgrind). A send that fails or is cancelled hands the
                # settlement to the store all the same, in the same step.
                try:
                    await send({"type": "http.response.start", "status": response.status_code,
                                "headers": response.raw_headers})
                    await send({"type": "http.response.body", "body": response.body})
                except BaseException:
                    response.settle(True)
                    raise
                response.settle(client_gone(receive))
            else:
                await response(scope, receive, send)
        finally:
            self.calls -= 1

    async def handle(self, scope: Scope, receive: Receive, ep: Endpoint,
                     started: float) -> Response:
        headers: dict[str, str] | None = scope.get(HEADERS_SCOPE_KEY)
        if headers is None:
            headers = _wanted_headers(scope)
        # The token is judged before the body: a bad, revoked or expired token gets its own
        # 401 whatever the body holds (a broken body behind a dead token is not the news).
        # Revocation is in the store, and a call that goes through reads nothing before it
        # reserves: the reservation checks the revocation atomically, so a call of a token
        # revoked at any moment before its reservation is refused. Every refusal of a received
        # request before the reservation reads the revocation first (revocation_first), so a
        # revoked token still gets its own 401 whatever else is wrong with the request.
        # The chain's check is remembered per exact Authorization header (as the Verifier
        # remembers it per exact token string); time, revocation and the rest are judged on
        # every call below.
        auth = headers.get("authorization")
        hit = self._by_header.get(auth) if auth is not None else None
        if hit is None:
            token = self.token(headers)
            try:
                v = self.verifier.check_token(token)
            except TokenError as exc:
                raise RelayError(exc.reason.value, exc.message) from None
            hit = _presented(token, v)
            if auth is not None:
                if len(self._by_header) >= AUTH_REMEMBERED:  # the oldest first (FIFO)
                    drop_oldest(self._by_header, AUTH_REMEMBERED)
                self._by_header[auth] = hit
        token, v, app_name, budget_currency = hit
        now = int(time.time())
        tid = v.token_id_hex
        limits = v.limits
        # A browser's Origin header, judged against the token's origin caveat (a server-side
        # call sends none and is governed by the other caveats).
        origin = headers.get("origin")
        if (not v.live_from <= now < v.live_until
                or (origin is not None and limits.origins is not None)):
            # A dead token, or one presented from another web origin, is refused as such
            # before anything about the request is judged. (A live token with no origin to
            # judge is not evaluated here: a token with an expiry, as the wallet grants them,
            # paid a whole evaluate per call for it, some 14 K instructions.)
            alive = evaluate(v, _new(Request, (None, None, None, (), 0, 0, _NO_COST, False,
                                               None, None, origin)), now, {}, self.verifier.keys)
            if not alive.allowed and alive.reason is not None:
                await self.revocation_first(token, tid, now)
                raise RelayError(alive.reason.value, alive.message)
        # A body the relay cannot receive (too large, too slow, the client gone) is refused as
        # such at once, with no store read: an answer that waited for the store could find
        # a client that half-closed after sending already cut off.
        # (Received here, not by a method of its own: a coroutine more per call, 1.2 K
        # instructions to make and end. One deadline for the whole body: a client that
        # stalls or drips cannot hold a request open, and its connection, for longer. A body
        # the server holds whole already is read with no wait to bound: the deadline's
        # timer, set and cancelled, was 3-7 us per call before the reservation.)
        limit = self.config.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self.too_large()
        chunks: list[bytes] = []  # the pieces before the last (none for most bodies)
        size = 0
        try:
            async with (_NO_WAIT if body_here(receive)
                        else asyncio.timeout(self.config.body_timeout)):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise RelayError(INVALID_REQUEST, "the client went away before its "
                                         "request body arrived")
                    raw: bytes = message.get("body", b"")
                    size += len(raw)
                    if size > limit:
                        raise self.too_large()
                    if not message.get("more_body", False):
                        break
                    chunks.append(raw)
        except TimeoutError:
            raise RelayError(REQUEST_TIMEOUT, f"the request body did not arrive within "
                             f"{self.config.body_timeout:g} seconds") from None
        if len(raw) > PAUSING_BODY:  # the server may have stopped reading: a hang-up
            resume_reading(receive)  # would not show (server_flags.resume_reading)
        if chunks:
            chunks.append(raw)
            raw = b"".join(chunks)
        try:
            body = parse_body(raw)  # duplicate keys, non-UTF-8, NaN: refused (reference_relay.body)
            model_id = body.get("model", _ABSENT)
            if model_id is _ABSENT:
                model_id = getattr(ep, "default_model", None)
            if not isinstance(model_id, str) or not model_id:
                raise RelayError(INVALID_REQUEST, "the request must name a 'model'")
            # route's memory read here (one Python call less per call), route on a miss
            hit_route = self._routes.get((model_id, ep.api, limits.providers))
            provider, model, lease = (hit_route if hit_route is not None
                                      else self.route(model_id, ep, limits))
            prepared = ep.prepare(body, raw, provider, model, limits)
        except RelayError:
            await self.refusing(token, v, now)
            raise
        price = model.price
        # The ledger counts in the first budget's currency (the price's without one).
        ledger_currency = price.currency if budget_currency is None else budget_currency
        est = prepared.input
        worst = (price.plain_cost(est.tokens, prepared.output_tokens) if not est.cache_write
                 else worst_raw_cost(price, est, prepared.output_tokens)) + prepared.fees_worst
        costs, rates = self.cost_plans.costs(price, worst, limits.priced_currencies)
        approval = headers.get(APPROVAL_HEADER)
        path: str = scope["path"]
        digest = None
        if approval is not None or limits.confirm_above or limits.ask_first:
            digest = request_digest("POST", path, raw)
        keys = self.verifier.keys
        # Judged first with every counter read as 0: all a call that goes through needs, since
        # the reservation checks the counters (and the revocation) atomically. Only a refusal,
        # by this judgement or by the store, reads the snapshot below and is judged again with
        # the counters, so that it is told exactly as it is (which counter, what is left).
        # (The first judgement is _judge's, written out: one Python call less per call.)
        decision = evaluate(v, _new(Request, (
            provider.id, model_id, ep.operation, (), prepared.input.tokens,
            prepared.output_tokens, costs, provider.zero_retention, approval, digest, origin)),
            now, _NO_COUNTERS, keys)
        if decision.allowed:
            try:
                key, fwd = self.forwarding(provider, ep, headers)
            except RelayError:
                await self.refusing(token, v, now)
                raise
            # Reserve the worst case, then make the call (the same steps as below, written
            # out here: no coroutine frame of its own between handle and the call's). A
            # worst case past what the stores count is refused here, before the reservation
            # that reads the revocation: a revoked token is refused as such (refusing).
            try:
                reservation = self.reservation(decision, prepared, worst, costs, v, app_name,
                                               ledger_currency, ep, provider, model, lease,
                                               now)
            except RelayError:
                await self.refusing(token, v, now)
                raise
            done = await self.store.reserve(reservation)
            if done.ok:  # the request goes upstream first, then the call is built
                sent = self.upstream.begin(provider, ep.upstream_path, prepared.body, key, fwd)
                return await self.admit(decision, prepared, worst, rates, key, fwd, v, app_name,
                                        ledger_currency, ep, provider, model,
                                        reservation.reservation_id, raw, started,
                                        now).run(sent)
            if done.revoked:
                raise self.revoked(token, tid, now)
        # A refusal: revocation and every counter the token names, in one read.
        snapshot = await self.store.snapshot(tid, [k for _, k, _ in v.windows(now // 60)])
        if snapshot.revoked:
            raise self.revoked(token, tid, now)
        self.chains.note(v, now)
        counters = snapshot.counters
        decision = _judge(v, keys, provider, model_id, ep, prepared, costs, approval, digest,
                          origin, now, counters)
        if (not decision.allowed and decision.reason == Reason.BUDGET_EXCEEDED
                and headers.get(CLAMP_HEADER, "").strip().lower() != "refuse"):
            clamped = self.clamp_to_budget(decision, ep, body_of(raw), raw, provider, model,
                                           limits, prepared)
            if clamped is not None:
                c_worst = worst_raw_cost(price, clamped.input, clamped.output_tokens) + (
                    clamped.fees_worst)
                c_costs, c_rates = self.costs(price, c_worst, limits)
                c_decision = _judge(v, keys, provider, model_id, ep, clamped, c_costs,
                                    approval, digest, origin, now, counters)
                if c_decision.allowed:
                    decision, prepared, worst, costs, rates = (
                        c_decision, clamped, c_worst, c_costs, c_rates)
        if not decision.allowed:
            extra = _counter_extra(decision)
            return await self.deny(decision, ep, provider, model, app_name, digest, raw,
                                   path, rates, now, extra, v.chain_id)
        key, fwd = self.forwarding(provider, ep, headers)
        reservation = self.reservation(decision, prepared, worst, costs, v, app_name,
                                       ledger_currency, ep, provider, model, lease, now)
        done = await self.store.reserve(reservation)
        if done.ok:
            sent = self.upstream.begin(provider, ep.upstream_path, prepared.body, key, fwd)
            return await self.admit(decision, prepared, worst, rates, key, fwd, v, app_name,
                                    ledger_currency, ep, provider, model,
                                    reservation.reservation_id, raw, started, now).run(sent)
        if done.revoked:
            raise self.revoked(token, tid, now)
        err = self.reserve_error(decision, limits, done.failed_counter, done.used,
                                 done.approval_used, rates, now)
        self.record_denial(tid, app_name, provider, model, ep, err.code, now, v.chain_id)
        return error_response(err, ep.errors)

    def reservation(self, d: Decision, p: Prepared, worst: int, costs: dict[str, int],
                    v: VerifiedToken, app_name: str, ledger_currency: str, ep: Endpoint,
                    provider: ProviderConfig, model: ModelConfig, lease: int,
                    now: int) -> Reservation:
        """The reservation of an allowed call's worst case, on every counter it debits.

        This and ``admit`` are methods given everything by position, called from handle: a
        closure there made every name it shares with handle a cell, built on every call (19
        of them and two function objects, some 0.5 us), and a coroutine of their own was a
        frame more to create and to pass through at each resume of the call's task."""
        worst_ledger = costs.get(ledger_currency)
        if worst_ledger is None:
            got = self.converter.micros(model.price, worst, ledger_currency)
            worst_ledger = got[0] if got else 0
        if (worst_ledger > MAX_SAFE_INTEGER
                or p.input.tokens + p.output_tokens > MAX_SAFE_INTEGER):
            # A worst case past what the stores count (2^53 output tokens, with no budget or
            # quota to refuse it): its settlement would fail, and so would the lease sweep
            # that closes it (the SQLite store binds 64-bit integers, Redis's Lua 2^53).
            raise RelayError(INVALID_REQUEST, (
                f"the request's worst case, {p.input.tokens} input and {p.output_tokens} "
                f"output tokens costing {format_micros(worst_ledger, ledger_currency)}, is "
                "beyond what the relay counts; lower its output cap or max_tool_calls"))
        # Hold and Reservation are NamedTuples built from all their fields, in order (see
        # _judge). A loop, not a list comprehension: that is a Python call of its own.
        holds = []
        for x in d.debits:
            holds.append(_new(Hold, (x.counter_key, x.amount, x.limit, x.resets_at)))
        return _new(Reservation, (
            new_id(), v.token_id_hex, tuple(holds), now + lease, d.approval_id, now,
            {"app": app_name, "provider": provider.id, "model": model.id,
             "operation": ep.operation, "input_tokens": p.input.tokens,
             "output_tokens": p.output_tokens, "cost": worst_ledger,
             "currency": ledger_currency, "chain_id": v.chain_id},
        ))

    def admit(self, d: Decision, p: Prepared, worst: int, rates: list[str], key: str,
              fwd: dict[str, str], v: VerifiedToken, app_name: str, ledger_currency: str,
              ep: Endpoint, provider: ProviderConfig, model: ModelConfig, reservation_id: str,
              raw: bytes, started: float, now: int) -> Call:
        """The Call of a reservation the store accepted (its ``run`` makes the call)."""
        self.chains.note(v, now)  # once per chain: which sub-task token made the call
        # Positional, in Call's field order (_CALL_FIELDS, checked at import): a call with
        # 23 keywords costs some 1.3 us more than the same call with positions.
        return Call(
            self.store, self.upstream, self.converter, self.spawn, running_loop(), ep,
            provider, model, p, v.token_id_hex, app_name, d.debits, reservation_id, worst,
            ledger_currency, key, started,
            self.config.log_bodies and v.limits.logging == "full",
            self.config.max_log_body_bytes, raw, fwd,
            _response_headers(p, rates) if rates or p.headers else {}, v.chain_id)

    def forwarding(self, provider: ProviderConfig, ep: Endpoint,
                   headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The provider's API key and the app's headers to forward, checked before anything
        is reserved: the key must exist, and it and the headers must fit in a header line."""
        key = self.provider_keys(provider.id)  # read on every call: a key may be rotated
        if self._keys_checked.get(provider.id) != key:
            if not key and provider.api_key_env:
                raise provider_key_missing(provider)
            self.redactor.add(key)
            self.upstream.head(provider, ep.upstream_path, key)  # refuses a key unfit for a head
            # Checked once per provider and key (the checks depend on nothing else).
            self._keys_checked[provider.id] = key
        if headers.keys().isdisjoint(FORWARDED):
            return key, {}  # an OpenAI SDK's call: nothing to check, one Python call less
        return key, forwarded_headers(headers)

    def revoked(self, token: str, tid: str, now: int) -> RelayError:
        """A revoked token's refusal, as the verifier words it."""
        d = self.verifier.verify(token, Request(), now, None, (tid,))
        return RelayError(d.reason.value if d.reason is not None else INTERNAL_ERROR,
                          d.message)

    async def revocation_first(self, token: str, tid: str, now: int) -> None:
        """Before any refusal ahead of the reservation: a revoked token is refused as such
        (one read, only on the way to a refusal)."""
        if await self.store.is_revoked(tid):
            raise self.revoked(token, tid, now)

    async def refusing(self, token: str, v: VerifiedToken, now: int) -> None:
        """A received request is about to be refused before its reservation: a revoked token
        is refused as such instead, and the refusal names the chain that made it."""
        await self.revocation_first(token, v.token_id_hex, now)
        self.chains.note(v, now)

    def clamp_to_budget(self, decision: Decision, ep: Endpoint, body: dict[str, Any],
                        raw: bytes, provider: ProviderConfig, model: ModelConfig,
                        limits: EffectiveLimits, prepared: Prepared) -> Prepared | None:
        """The call again with its output cap lowered to what the budget that refused it still
        affords, or None when that is below MIN_CLAMPED_OUTPUT (the refusal stands).

        The worst case is recomputed and judged again by the caller (every budget, in its
        own currency), and the reservation is atomic as always: a clamp never overspends.
        """
        c = decision.counter
        if c is None or c.kind != "budget" or prepared.output_tokens <= MIN_CLAMPED_OUTPUT:
            return None
        left = c.limit - c.used
        price = model.price

        def fits(out: int) -> bool:
            raw_cost = worst_raw_cost(price, prepared.input, out) + prepared.fees_worst
            got = self.converter.micros(price, raw_cost, c.unit)
            return got is not None and got[0] <= left

        lo, hi = 0, prepared.output_tokens  # fits(lo) is what we look for; hi does not fit
        if not fits(MIN_CLAMPED_OUTPUT):
            return None
        lo = MIN_CLAMPED_OUTPUT
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        try:
            clamped = ep.prepare(body, raw, provider, model, limits, ceiling=lo)
        except RelayError:
            return None
        if clamped.output_tokens > lo:
            return None
        note = (f"requested={prepared.output_tokens}; applied={clamped.output_tokens}; "
                f"reason=budget ({format_micros(left, c.unit)} left)")
        return clamped._replace(headers=((OUTPUT_CAP_HEADER, note),), output_clamped=True)

    def reserve_error(self, decision: Decision, limits: EffectiveLimits, failed: str | None,
                      used: int, approval_used: bool, rates: list[str], now: int) -> RelayError:
        if approval_used:
            return RelayError(Reason.APPROVAL_INVALID.value,
                              "this approval was already used; each approval allows one call")
        debit = next((d for d in decision.debits if d.counter_key == failed), None)
        if debit is None:
            return RelayError(STORE_UNAVAILABLE, "the reservation failed")
        counter_id = debit.counter_key.split("/", 1)[0]
        limit = next(c for c in limits.counters if c.counter_id == counter_id)
        left = max(debit.limit - used, 0)
        reason = _KIND_REASON[debit.kind]
        extra = _detail(limit.kind, limit.unit, debit.limit, used, debit.amount,
                        debit.resets_at)
        headers = {}
        if debit.resets_at is not None and debit.kind != "budget":
            headers["retry-after"] = str(max(debit.resets_at - now, 1))
        note = self.fx_note(rates) if debit.kind == "budget" else ""
        return RelayError(reason.value, f"{limit.describe()}: {_fmt(limit, used)} used, "
                          f"{_fmt(limit, left)} left; this call needs up to "
                          f"{_fmt(limit, debit.amount)}{note}", extra=extra, headers=headers)

    async def deny(self, decision: Decision, ep: Endpoint, provider: ProviderConfig,
                   model: ModelConfig, app_name: str, digest: bytes | None, raw: bytes,
                   path: str, rates: list[str], now: int,
                   extra: dict[str, Any] | None = None, chain_id: str = "") -> Response:
        reason = decision.reason
        code = reason.value if reason is not None else INTERNAL_ERROR
        message = decision.message
        extra = dict(extra or {})
        headers: dict[str, str] = {}
        if reason in (Reason.BUDGET_EXCEEDED, Reason.PRICE_UNKNOWN, Reason.CONFIRMATION_REQUIRED):
            message += self.fx_note(rates)
        if reason == Reason.RATE_LIMITED:
            headers["retry-after"] = str(60 - now % 60)
        if reason == Reason.CONFIRMATION_REQUIRED and decision.token_id is not None:
            pid = secrets.token_hex(16)
            if digest is None:
                digest = request_digest("POST", path, raw)
            await self.store.add_pending(PendingApproval(
                approval_request_id=pid, token_id=decision.token_id, digest=digest.hex(),
                kind=Kind.MODEL_CALL.label,
                summary=f"{app_name or 'an app'} wants to call {model.id} at {provider.id}: "
                        f"{decision.message}",
                created_at=now, expires_at=now + self.config.approval_ttl,
            ))
            url = f"{self.config.wallet_url}/approvals/{pid}" if self.config.wallet_url else None
            extra.update({"approval_request_id": pid, "approval_url": url})
            message += (f". Approve it in the wallet ({url or 'pending approvals'}), then retry "
                        f"the same request with the header X-Capwallet-Approval: cwa1_...")
            headers["x-capwallet-approval-request"] = pid
        if decision.token_id is not None:
            self.record_denial(decision.token_id, app_name, provider, model, ep, code, now,
                               chain_id)
        return error_response(RelayError(code, message, extra=extra, headers=headers), ep.errors)

    def record_denial(self, token_id: str, app_name: str, provider: ProviderConfig,
                      model: ModelConfig, ep: Endpoint, code: str, now: int,
                      chain_id: str = "") -> None:
        """One ledger row for a refused call, written off the request path."""
        async def write() -> None:
            await self.store.append_ledger(LedgerEntry(
                time=now, token_id=token_id, app=app_name, provider=provider.id, model=model.id,
                operation=ep.operation, input_tokens=0, output_tokens=0, cost=0,
                currency=model.price.currency, status=f"denied:{code}", latency_ms=0,
                chain_id=chain_id))
            log.info("denied token=%s model=%s reason=%s", token_id, model.id, code)

        self.spawn(write())

    # -- other routes -----------------------------------------------------------------------

    @staticmethod
    def flavor(request: HttpRequest) -> str:
        """Which API a GET speaks: the Anthropic SDK sends anthropic-version and x-api-key."""
        h = request.headers
        return "anthropic" if "anthropic-version" in h or "x-api-key" in h else "openai"

    async def listed(self, request: HttpRequest, flavor: str
                     ) -> list[tuple[ProviderConfig, ModelConfig]] | Response:
        """The models the request's token may use through this API flavor, or the refusal.

        Per flavor: a model listed to the Anthropic SDK must be callable with it (a model
        served only through the OpenAI API would get wrong_api), and the reverse."""
        try:
            token = self.token(request.headers)
            v = self.verifier.check_token(token)
            revoked = (v.token_id_hex,) if await self.store.is_revoked(v.token_id_hex) else ()
            decision = self.verifier.verify(token, Request(origin=request.headers.get("origin")),
                                            int(time.time()), {}, revoked)
            if not decision.allowed:
                raise RelayError(decision.reason.value if decision.reason else INTERNAL_ERROR,
                                 decision.message)
        except TokenError as exc:
            return error_response(RelayError(exc.reason.value, exc.message), flavor)
        except RelayError as err:
            return error_response(err, flavor)
        except StoreUnavailable:
            return error_response(RelayError(STORE_UNAVAILABLE, "the store is unavailable"),
                                  flavor)
        lim = v.limits
        seen: set[str] = set()
        out = []
        for p in self.config.providers:
            if p.api != flavor or (lim.providers is not None and p.id not in lim.providers):
                continue
            for m in p.models.values():
                if (lim.models is None or m.id in lim.models) and m.id not in seen:
                    seen.add(m.id)
                    out.append((p, m))
        return out

    @staticmethod
    def model_json(flavor: str, p: ProviderConfig, m: ModelConfig) -> dict[str, Any]:
        if flavor == "anthropic":
            return {"type": "model", "id": m.id, "display_name": m.id,
                    "created_at": "1970-01-01T00:00:00Z"}
        return {"id": m.id, "object": "model", "created": 0, "owned_by": p.id}

    async def models(self, request: HttpRequest) -> Response:
        flavor = self.flavor(request)
        listed = await self.listed(request, flavor)
        if isinstance(listed, Response):
            return listed
        data = [self.model_json(flavor, p, m) for p, m in listed]
        if flavor == "anthropic":
            return JSONResponse({"data": data, "has_more": False,
                                 "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None})
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: HttpRequest) -> Response:
        """GET /v1/models/{id}: one model the token may use (client.models.retrieve)."""
        flavor = self.flavor(request)
        listed = await self.listed(request, flavor)
        if isinstance(listed, Response):
            return listed
        wanted = request.path_params["model_id"]
        for p, m in listed:
            if m.id == wanted:
                return JSONResponse(self.model_json(flavor, p, m))
        return error_response(RelayError(
            MODEL_NOT_FOUND, f"model {wanted!r} is not one your token may use through this "
            "API; GET /v1/models lists those it may"), flavor)

    async def resource_metadata(self, request: HttpRequest) -> Response:
        """RFC 9728 protected-resource metadata naming the wallet that grants this relay's
        tokens (config ``wallet_url``), so a client that knows only the relay finds the
        wallet. Public, readable by any origin."""
        if not self.config.wallet_url:
            return error_response(RelayError(NOT_FOUND, "this relay names no wallet "
                                             "(set wallet_url in its config)"))
        return JSONResponse({
            "resource": f"{request.url.scheme}://{request.url.netloc}",
            "authorization_servers": [self.config.wallet_url],
            "bearer_methods_supported": ["header"],
            "authorization_details_types_supported": ["capwallet_ai"],
            "resource_name": "capwallet relay",
        }, headers={"access-control-allow-origin": "*", "cache-control": "max-age=300"})

    async def healthz(self, request: HttpRequest) -> Response:
        try:
            await self.store.is_revoked("healthz")
        except StoreUnavailable:
            return JSONResponse({"status": "store_unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})


class ModelCallApp:
    """One model-call route as a plain ASGI app rather than a Starlette endpoint function:
    the handler reads the few headers it needs straight from the scope (Starlette's Request
    object and its wrappers were a measurable share of the relay's per-call CPU). A class,
    because Starlette wraps any function given to a Route as a request/response endpoint."""

    __slots__ = ("endpoint", "relay")

    def __init__(self, relay: Relay, endpoint: Endpoint) -> None:
        self.relay, self.endpoint = relay, endpoint

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async itself: the caller awaits serve's coroutine directly, one coroutine frame
        # less to create per call and to pass through at every resume of the call's task.
        return self.relay.serve(self.endpoint, scope, receive, send)


def create_app(config: RelayConfig, *, store: Store | None = None, keys: Keyring | None = None,
               provider_keys: Callable[[str], str] | None = None) -> Starlette:
    """The relay as a Starlette app (routes under /v1, /healthz and, naming the wallet,
    /.well-known/oauth-protected-resource).

    ``store`` defaults to ``open_store(config.store_url)`` (then closed with the app), ``keys``
    to the root key files named in the config, ``provider_keys`` (provider id -> API key) to
    reading the environment variable the config names. Mounted in another app, whose lifespan
    does not reach it, the relay starts its lease sweeper on the first request; call
    ``app.state.relay.aclose()`` on shutdown, and add ``app.state.relay.redactor`` to your log
    handlers to keep provider keys and tokens out of every log line.
    """
    relay = Relay(config, store, keys, provider_keys)
    chat, messages, embeddings = ChatCompletions(), Messages(), Embeddings()
    responses, count_tokens, moderations = Responses(), CountTokens(), Moderations()

    async def not_found(request: HttpRequest, exc: Exception) -> Response:
        flavor = "anthropic" if request.url.path.startswith("/v1/messages") else "openai"
        code = METHOD_NOT_ALLOWED if isinstance(exc, HTTPException) and exc.status_code == 405 \
            else NOT_FOUND
        return error_response(RelayError(code, f"no route for {request.method} "
                                         f"{request.url.path}"), flavor)

    async def unsupported(request: HttpRequest) -> Response:
        path = request.url.path
        what = next((w for prefix, w in _UNSUPPORTED if path.startswith(prefix)), path)
        return error_response(RelayError(
            UNSUPPORTED_ROUTE, f"{request.method} {path} ({what}) is not supported by this "
            "relay: it cannot bound or meter its cost. Supported: /v1/chat/completions, "
            "/v1/responses, /v1/embeddings, /v1/moderations, /v1/messages"),
            "anthropic" if path.startswith("/v1/messages") else "openai")

    async def crashed(request: HttpRequest, exc: Exception) -> Response:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return error_response(RelayError(INTERNAL_ERROR, "internal error in the relay"))

    app = Starlette(
        routes=[
            Route(chat.route, relay.endpoint(chat), methods=["POST"]),
            Route(messages.route, relay.endpoint(messages), methods=["POST"]),
            Route(embeddings.route, relay.endpoint(embeddings), methods=["POST"]),
            Route(responses.route, relay.endpoint(responses), methods=["POST"]),
            Route(count_tokens.route, relay.endpoint(count_tokens), methods=["POST"]),
            Route("/v1/models", relay.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", relay.model, methods=["GET"]),
            Route(moderations.route, relay.endpoint(moderations), methods=["POST"]),
            *(Route(prefix + suffix, unsupported, methods=["GET", "POST", "DELETE"])
              for prefix, _ in _UNSUPPORTED for suffix in ("", "/{rest:path}")),
            Route("/healthz", relay.healthz, methods=["GET"]),
            Route("/.well-known/oauth-protected-resource", relay.resource_metadata,
                  methods=["GET"]),
        ],
        middleware=[Middleware(RequestGuard, allowed=config.allowed_hosts,
                               origins=config.allowed_origins, collect=True)],
        exception_handlers={HTTPException: not_found, Exception: crashed},
        lifespan=relay.lifespan,
    )
    app.state.relay = relay
    return app
