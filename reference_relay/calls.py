"""One admitted call, from its reservation to its settlement: forward, meter, settle, log.

Nothing the app does can cancel the upstream work: if the app disconnects (mid-stream or
while waiting for a non-streamed answer) the relay still reads the provider's answer to the
end, meters it and settles, because the provider bills it anyway. A stream is pumped by a task
of the relay's. A plain call sent on an idle pooled connection (the usual call) is read by the
app's handler itself, which servers such as uvicorn never cancel; if one does, a task of the
relay's takes the call over where it stands (Call.run), and once the answer is sent there
is nothing left to cancel (its settlement is queued in the store); any other plain call runs
in a task of the relay's from the start.

Settlement rules (see also reference_relay.metering):

* provider answered with usage: charge the actual cost of the reported tokens;
* provider failed before any output (connection refused or reset, an HTTP error status, no
  event received): release the whole reservation, charge nothing;
* output started but the final usage never came (stream cut, usage missing, malformed body),
  or a timeout after the request was sent, streamed or not (the provider may be generating and
  billing it): charge conservatively, the reserved worst case for the output and the
  provider's input count if it sent one, else the input estimate;
* a usage the provider gave that cannot be charged as given: without its output count
  (metering.Usage.output_missing), the reported input and the reserved worst case for the
  output; without its input count, holding a count no reading makes sense of (unreadable:
  negative, NaN, text; metering._count) or no store can hold (absurd: past 2^53 - 1), the
  reserved worst case, as for a missing usage. Either way the ledger status is usage_missing
  unless the call failed or the app left, and one log line names the token id and what was
  wrong, however many things were (Call._settlement). No usage at all is told by the status
  alone (usage_missing, or upstream_error for a cut stream).

A successful non-streamed answer is sent first and settled right after (``_SettleAfterSend``:
queued in the store, which writes it as the loop turns, the handler not waiting for it);
a stream is settled before its last bytes reach the app. Either way the reservation holds the
worst case until the settlement lands, so the order cannot cause an overspend.

Ledger statuses: ok, usage_missing (answered, charged the worst case), upstream_error,
client_disconnected (the app hung up before its answer, streamed or not, was all sent; charged
as the answer's usage says), and lease_expired / denied:<reason> (written elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from capwallet.identifier import MAX_SAFE_INTEGER
from capwallet.store import LedgerEntry, Store, StoreUnavailable
from capwallet.store.base import ledger_entry
from capwallet.verify import Debit
from reference_relay.coalesce import SEND_NOW_SCOPE_KEY
from reference_relay.config import ModelConfig, ProviderConfig
from reference_relay.errors import UPSTREAM_ERROR, RelayError, error_response, sse_error_event
from reference_relay.metering import StreamMeter, Usage, answer_usage
from reference_relay.pool import Response as UpstreamResponse
from reference_relay.prices import Converter
from reference_relay.routes import Endpoint, Prepared
from reference_relay.server_flags import client_gone, shows_hang_up
from reference_relay.upstream import Started, Upstream, transport_error, upstream_status_error

log = logging.getLogger("reference_relay.calls")
# How long a stream's pump, once the provider has answered, waits for the response to hand it
# the app's connection (_StreamPump.answer); a safety bound: the response runs as soon as the
# handler returns it, before any provider can answer. Past it the app is taken as gone.
HEAD_WAIT = 0.5
_SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")
_JSON_TYPE = (b"content-type", b"application/json")
# The most a settlement charges in tokens or microunits: a usage past it is absurd and charged
# the reserved worst case (Call._settlement); the protocol's largest integer, 2^53 - 1.
MAX_CHARGE = MAX_SAFE_INTEGER
# The provider's request id headers, passed on to the app (the first of each name).
_PASSED = frozenset((b"x-request-id", b"request-id", b"openai-processing-ms"))
_NAME = itemgetter(0)


_NO_OUTPUT = "usage without an output count"


def _flaw(usage: Usage) -> tuple[str, Usage | None, bool]:
    """Why a usage cannot be charged as given (the log line's words; "" for a usage object
    holding no count, which is no usage), and what to charge instead: (why, usage, final).
    Without its input count or unreadable: no usage, the reserved worst case. Without its
    output count: the input it gives, the reserved worst case for the output. Read as 0, a
    count a gateway drops or garbles would cost nothing."""
    if usage.unreadable:
        return "unreadable usage", None, False
    if usage.input_tokens is None:
        if usage.output_tokens is None:
            return "", None, False
        return "usage without an input count", None, False
    return _NO_OUTPUT, usage, False


def _passed_headers(resp: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    """The provider's request id headers as the app gets them: the first of each name, in
    the answer's order (the pool gives their names in lower case). Picked in C (compress
    over a map of the names): a Python loop over the answer's headers cost some 13
    bytecodes per header, per call."""
    headers = resp.headers
    out = list(compress(headers, map(_PASSED.__contains__, map(_NAME, headers))))
    if len(out) > 1:
        out = list({k: (k, v) for k, v in reversed(out)}.values())
    return out


@dataclass(slots=True)
class Call:
    """Everything known about one admitted call."""

    store: Store
    upstream: Upstream
    converter: Converter
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    loop: asyncio.AbstractEventLoop  # the running one (capwallet.loops.running_loop)
    endpoint: Endpoint
    provider: ProviderConfig
    model: ModelConfig
    prepared: Prepared
    token_id: str
    app: str
    debits: tuple[Debit, ...]
    reservation_id: str
    worst_raw: int  # worst-case cost in the price's raw units (see prices.Price.raw_cost)
    ledger_currency: str
    key: str
    started: float  # time.perf_counter() when the request arrived
    log_bodies: bool
    max_log_bytes: int
    request_body: bytes
    forward_headers: dict[str, str] = field(default_factory=dict)  # anthropic-version/-beta
    response_headers: dict[str, str] = field(default_factory=dict)  # e.g. the exchange rate
    chain_id: str = ""  # the presented token chain (reference_relay.chains)
    _settled: str = ""  # how the reservation is closed: "settle" or "release" (once)
    _pending: LedgerEntry | None = None  # a settlement queued in the store (settle_soon)
    _told: bool = False  # the store has told this call its queued settlement's outcome

    # -- money ------------------------------------------------------------------------------

    def raw_cost(self, usage: Usage | None, final: bool) -> tuple[int, int, int]:
        """(raw cost, input tokens, output tokens) to charge for this outcome."""
        price = self.model.price
        if usage is not None and final:
            tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
            if tokens_in is not None and tokens_out is not None:  # usage.complete
                cached, written = usage.cached_input_tokens, usage.cache_write_tokens
                if cached or written:
                    raw = price.raw_cost(
                        input_tokens=tokens_in, output_tokens=tokens_out,
                        cached_input_tokens=cached, cache_write_tokens=written)
                else:  # the usual answer: price.raw_cost's own first branch, by position
                    raw = price.plain_cost(tokens_in, tokens_out)
                if self.prepared.call_fees:  # most calls: no tool billed per call
                    raw += self.fees(usage)
                return raw, tokens_in + cached + written, tokens_out
        worst_out = self.prepared.output_tokens
        if usage is not None and usage.input_tokens is not None:
            tokens_in = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
            raw = price.raw_cost(
                input_tokens=usage.input_tokens, output_tokens=worst_out,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens)
            return raw + self.prepared.fees_worst, tokens_in, worst_out
        return self.worst_raw, self.prepared.input.tokens, worst_out

    def fees(self, usage: Usage) -> int:
        """Per-call tool fees of the calls the answer reports (raw units)."""
        if not self.prepared.call_fees:  # most calls: no tool billed per call
            return 0
        calls = usage.tool_calls or {}
        return sum(calls.get(kind, 0) * fee for kind, fee in self.prepared.call_fees)

    def _money(self, raw: int, currency: str) -> int:
        """Microunits of ``currency`` (budgets and the ledger count in microunits)."""
        got = self.converter.micros(self.model.price, raw, currency)
        if got is None:  # cannot happen for budgets (the verifier denied price_unknown)
            raise RelayError(UPSTREAM_ERROR, f"no exchange rate to {currency}")
        return got[0]

    def _settlement(self, usage: Usage | None, final: bool, status: str,
                    response_body: bytes | None) -> tuple[dict[str, int], LedgerEntry]:
        """What to charge each counter for this outcome, and its ledger row.

        One rule for a usage the provider gave and the relay cannot charge as given (spec/
        budgets.md, "Settlement"): without its input count, with an unreadable count, or
        absurd, the reserved worst case; without its output count, the input it gives and
        the reserved worst case for the output. Either way the ledger status is usage_missing
        (unless the call failed or the app left) and one log line names the token id and
        what was wrong (_flaw), however many things were."""
        why = ""
        if usage is not None and (usage.unreadable or usage.output_missing
                                  or usage.input_tokens is None):
            why, usage, final = _flaw(usage)
            if status == "ok":
                status = "usage_missing"
        got = self._charges(usage, final, status, response_body)
        if got is None:  # absurd: no store holds its charges, and no call really used it
            why = "absurd " + (why or "usage")
            if status == "ok":
                status = "usage_missing"
            got = self._charges(None, False, status, response_body)
            assert got is not None  # the reserved worst case, which the store accepted
        if why:
            log.error("%s token=%s reservation=%s: charged the reserved worst case%s", why,
                      self.token_id, self.reservation_id,
                      " for the output" if why == _NO_OUTPUT else "")
        return got

    def _charges(self, usage: Usage | None, final: bool, status: str,
                 response_body: bytes | None) -> tuple[dict[str, int], LedgerEntry] | None:
        """The charges and ledger row of ``usage`` as it stands; None when they are absurd
        (past MAX_CHARGE: 2^63 tokens), which only a usage can be (the reserved worst case
        fits: the store accepted it). Absurd, the call is charged the worst case instead
        (_settlement): SQLite binds 64 bits, the Redis store refuses past 2^53."""
        raw, tokens_in, tokens_out = self.raw_cost(usage, final)
        currency = self.ledger_currency
        cost = self._money(raw, currency)
        # Every charge at most MAX_CHARGE: the cost, the token quota's (input + output, each
        # counted from 0) and below, a budget's in another currency.
        if (cost > MAX_CHARGE or tokens_in + tokens_out > MAX_CHARGE) and usage is not None:
            return None
        actual: dict[str, int] = {}
        for d in self.debits:
            if d.kind == "budget":
                if d.unit == currency:
                    actual[d.counter_key] = cost
                else:
                    actual[d.counter_key] = amount = self._money(raw, d.unit)
                    if amount > MAX_CHARGE and usage is not None:
                        return None
            elif d.kind == "quota":
                actual[d.counter_key] = tokens_in + tokens_out
            else:
                actual[d.counter_key] = 1
        return actual, self._entry(status, tokens_in, tokens_out, cost, response_body)

    async def settle(self, usage: Usage | None, final: bool, status: str,
                     response_body: bytes | None = None) -> None:
        if self._settled:
            return
        self._settled = "settle"
        await self._close(*self._settlement(usage, final, status, response_body))

    def settle_soon(self, usage: Usage | None, final: bool, status: str,
                    response_body: bytes | None) -> None:
        """``settle`` without waiting for the write: queued in the store (Store.settle_soon),
        which writes it as the loop turns, hands its outcome to this call (``set_result``,
        ``set_exception``: the ledger log line, or the failure) and makes Relay.aclose and
        its own close wait for it. For a plain answer once it is sent: the handler returns
        at once instead of passing through the whole ASGI stack once more per call to wait
        for a write the app does not wait for, and no cancellation can come between the
        answer and its settlement being handed to the store."""
        if self._settled:
            return
        self._settled = "settle"
        actual, entry = self._settlement(usage, final, status, response_body)
        self._pending = entry  # as _queue does, written out (one Python call less per call)
        self.store.settle_soon(self.reservation_id, actual, entry, self)

    def release_soon(self, status: str) -> None:
        """``release`` without waiting for the write, as settle_soon (a refusal by the
        provider, a 429 under its rate limit, costs no task of the relay's)."""
        if self._settled:
            return
        self._settled = "release"
        self._queue({}, self._entry(status, 0, 0, 0, None))  # nothing charged: a release

    def _queue(self, actual: dict[str, int], entry: LedgerEntry) -> None:
        self._pending = entry
        self.store.settle_soon(self.reservation_id, actual, entry, self)

    async def release(self, status: str) -> None:
        if self._settled:
            return
        self._settled = "release"
        await self._close(None, self._entry(status, 0, 0, 0, None))

    # The store's Outcome of a queued settlement (settle_soon): the ledger line once it is
    # written, or the failure (the reservation then holds the worst case until its lease
    # closes it: never an overspend), as _close says them for a settlement awaited.
    # ``done`` is False until the store has told the outcome, whatever else the call holds:
    # the SQLite store leaves a write whose Outcome reads done out of its batch (a cancelled
    # caller's), so a call that read done before being told (it once read its pending ledger
    # entry: a Call handed to the store without one had its settlement dropped) loses it.

    def done(self) -> bool:
        return self._told

    def set_result(self, result: Any, /) -> None:
        self._told = True
        entry, self._pending = self._pending, None
        if entry is not None and log.isEnabledFor(logging.INFO):  # _log's test, written out
            self._log(entry)

    def set_exception(self, exception: BaseException, /) -> None:
        self._told = True
        entry, self._pending = self._pending, None
        if entry is None:
            return
        self._failed(self._settled, exception)  # a queued settlement's, or release's
        self._log(entry)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Log a failed write of this call's settlement or release: the store's own failure
        (StoreUnavailable: the store is down or busy) as it says it; any other (a value the
        store refused, a bug in a store write) by its type and with its traceback, without
        which a programming error there could not be found (the traceback goes through
        LogRedactor as any other; it names the token id, never the token)."""
        if isinstance(exc, StoreUnavailable):
            log.error("%s failed token=%s reservation=%s: %s", what, self.token_id,
                      self.reservation_id, exc)
        else:
            log.error("%s failed token=%s reservation=%s: %s", what, self.token_id,
                      self.reservation_id, type(exc).__name__, exc_info=exc)

    async def _close(self, actual: dict[str, int] | None, entry: LedgerEntry,
                     again: bool = False) -> None:
        """Write the settlement (``actual``) or the release (None) of the reservation, and
        wait for it (a stream's pump, a call's task; the app's handler queues its writes
        instead: settle_soon, release_soon).

        The task that runs it may be cancelled (at a shutdown past its grace). Then the
        store may not have the write (the SQLite store drops a write cancelled
        before its batch starts), so it is written again from a task of the relay's, which
        nothing the app does can cancel; the store closes a reservation once (a settlement
        that landed makes the second do nothing), so it cannot count twice."""
        try:
            if actual is None:
                await self.store.release(self.reservation_id, entry)
            else:
                await self.store.settle(self.reservation_id, actual, entry)
        except Exception as exc:
            # The lease will close it at the reserved (worst-case) amount: never an overspend.
            # Any failure, as a queued settlement's (set_exception).
            self._failed("release" if actual is None else "settle", exc)
        except asyncio.CancelledError:
            if not again:
                self.spawn(self._close(actual, entry, True))
            raise
        self._log(entry)

    async def upstream_failed(self, exc: BaseException, answered: bool) -> None:
        """Close the reservation of a call whose exchange with the provider failed: charged
        conservatively once the provider may be generating (and billing) it, that is once its
        answer began or the call timed out after sending; released otherwise."""
        if answered or isinstance(exc, TimeoutError):
            await self.settle(None, False, "upstream_error")
        else:
            await self.release("upstream_error")

    def _entry(self, status: str, tokens_in: int, tokens_out: int, cost: int,
               response_body: bytes | None) -> LedgerEntry:
        request_text = response_text = None
        if self.log_bodies:
            request_text = self.request_body[: self.max_log_bytes].decode("utf-8", "replace")
            if response_body is not None:
                response_text = response_body[: self.max_log_bytes].decode("utf-8", "replace")
        # All 17 fields by position, in their order, without LedgerEntry's frozen __init__
        # (capwallet.store.base.ledger_entry: 6 K instructions, against 16 K; a keyword call
        # costs more again). tests/test_relay_units.py checks the order against a keyword build.
        return ledger_entry(
            int(time.time()), self.token_id, self.app, self.provider.id, self.model.id,
            self.endpoint.operation, tokens_in, tokens_out, cost, self.ledger_currency, status,
            int((time.perf_counter() - self.started) * 1000), self.reservation_id,
            request_text, response_text, 1, self.chain_id,
        )

    def _log(self, e: LedgerEntry) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("call token=%s app=%s provider=%s model=%s status=%s in=%d out=%d "
                     "cost=%d %s latency_ms=%d", e.token_id, e.app, e.provider, e.model,
                     e.status, e.input_tokens, e.output_tokens, e.cost, e.currency,
                     e.latency_ms)

    # -- forwarding -------------------------------------------------------------------------

    def _start(self) -> Started:
        return self.upstream.start(self.provider, self.endpoint.upstream_path,
                                   self.prepared.body, self.key, self.forward_headers)

    def _send(self, started: Started | None) -> Coroutine[Any, Any, UpstreamResponse]:
        """Awaited, the provider's answer (its head): the pool's coroutine, with no frame of
        this module's between."""
        return self.upstream.send(started if started is not None else self._start())

    async def run(self, started: Started | None) -> Response:
        """The call, its request ``started`` already (Upstream.begin: sent now when a pooled
        connection is idle, from the handler that reserved the call, so that no turn of the
        event loop, nor the building of this Call, lies between the reservation and the
        provider getting the request; None if building it failed)."""
        if self.prepared.stream:
            return self._run_stream(started)
        deadline = self.loop.time() + self.upstream.timeout(self.provider)
        resp = started.response if started is not None else None
        if resp is not None:
            # The usual call: sent on an idle connection (Upstream.begin). The handler reads
            # the answer itself (no task, no future, no loop turn of the call's own: callgrind
            # put them at 3% of the relay's instructions per call), and a disconnecting app
            # still cannot cancel the call: a cancelled wait here leaves the exchange as it
            # was (pool.Response.read), and a task of the relay's takes it over where it
            # stands (_plain), reads the answer to its end, meters it and settles it; the
            # settlement after the send is handed to the store at once (settle_soon).
            try:
                async with asyncio.timeout_at(deadline):
                    body = await resp.read()  # the head first: a failure before it has status 0
            except asyncio.CancelledError:
                self.spawn(self._plain(None, started, deadline))
                raise
            except Exception as exc:
                if resp.status:  # it failed once the provider answered: charged
                    resp.close()
                    self.settle_soon(None, False, "upstream_error", None)  # as upstream_failed
                    return error_response(transport_error(self.provider, exc),
                                          self.endpoint.errors)
                # No answer (a stale reused connection, the deadline, a reset): the pool's
                # request, in the call's task, retries or says how it failed.
            else:
                resp.close()
                return self._answered(resp.status, resp, body)
        # The exchange runs in a task of the relay's, which a disconnecting app cannot cancel:
        # the handler awaits only the future the task fills in (cancelling the handler cancels
        # that future, which tells the task to settle without sending).
        answer: asyncio.Future[Response] = self.loop.create_future()
        self.spawn(self._plain(answer, started, deadline))
        try:
            return await answer
        except asyncio.CancelledError:
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                # Handed over just as the handler was cancelled: nobody will send it.
                response = answer.result()
                if isinstance(response, _SettleAfterSend):
                    response.settle(True)
            raise

    async def _plain(self, answer: asyncio.Future[Response] | None, started: Started | None,
                     deadline: float) -> None:
        """The exchange in a task of the relay's: hand the answer to the handler if it still
        waits for it (``answer``), else settle it as one the app left before it was sent."""
        try:
            response = await self._exchange(started, deadline)
        except BaseException as exc:
            if answer is not None and not answer.done():
                if isinstance(exc, asyncio.CancelledError):
                    answer.cancel()
                else:
                    answer.set_exception(exc)
            raise
        if answer is not None and not answer.done():
            answer.set_result(response)  # sent, then settled, by the handler
        elif isinstance(response, _SettleAfterSend):  # the handler went away: not sent
            response.settle(True)

    async def _exchange(self, started: Started | None, deadline: float) -> Response:
        resp: UpstreamResponse | None = None
        try:
            async with asyncio.timeout_at(deadline):
                resp = await self._send(started)
                body = await resp.read()
        except Exception as exc:
            err = transport_error(self.provider, exc)
            await self.upstream_failed(exc, answered=resp is not None)
            return error_response(err, self.endpoint.errors)
        finally:
            if resp is not None:
                resp.close()
        return self._answered(resp.status, resp, body)

    def _answered(self, status: int, resp: UpstreamResponse, body: bytes) -> Response:
        """The app's response to the provider's whole answer. A refusal or an unreadable
        answer has its reservation closed at once, by the store's write queue (the app need
        not wait for that: release_soon, settle_soon); a good answer is settled once it is
        sent (_SettleAfterSend)."""
        flavor = self.endpoint.errors
        if status >= 300:
            self.release_soon("upstream_error")
            err, passthrough = upstream_status_error(self.provider, status, body, self.key)
            if passthrough is not None:
                return Response(passthrough, status_code=status,
                                media_type="application/json",
                                headers={"x-capwallet-reason": err.code})
            return error_response(err, flavor)
        try:
            usage = answer_usage(self.endpoint.meter, body)
        except ValueError:
            # Output may have been generated and billed: charge the reserved worst case.
            self.settle_soon(None, False, "upstream_error", body)
            return error_response(RelayError(
                UPSTREAM_ERROR, f"provider {self.provider.id!r} sent an answer that is not "
                "valid JSON; it was charged at the reserved worst case"), flavor)
        head = _passed_headers(resp)
        if self.response_headers:
            head += self._own_headers()
        head.append((b"content-length", b"%d" % len(body)))
        head.append(_JSON_TYPE)
        return _SettleAfterSend(self, body, status, head, usage)

    def _own_headers(self) -> list[tuple[bytes, bytes]]:
        """The relay's own response headers (a lowered output cap, the exchange rate used)."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in self.response_headers.items()]

    def _run_stream(self, started: Started | None) -> Response:
        """Start the pump and return at once: the response waits for the provider's answer
        itself, and the pump sends the head and each metered piece straight to the app."""
        pump = _StreamPump(self, started)
        self.spawn(pump.run())
        return _RelayStream(pump)


class _SettleAfterSend(Response):
    """A non-streamed answer whose settlement is written right after it is sent (or fails to
    be), keeping the ledger write off the app's latency. Until then the reservation still holds
    the worst case, so nothing can be overspent in between.

    The task that sends it settles it, after the send: the app's handler, or the call's task
    when the handler went away before the answer was ready. ``gone`` says whether the app
    had hung up by then (the ledger says client_disconnected, as for a stream the app left:
    the answer was produced and is charged, but the app did not get it). Settling hands the
    settlement to the store's write queue without waiting for it (Call.settle_soon), so the
    handler returns as soon as the answer is out, and a send that fails or is cancelled
    hands it over the same way, in the same step: nothing the app does can cancel it, and
    the store's drain and close (Relay.aclose) wait for it."""

    def __init__(self, call: Call, body: bytes, status: int,
                 raw_headers: list[tuple[bytes, bytes]], usage: Usage | None) -> None:
        # Not Response.__init__: the head comes whole, as the ASGI header list it is sent as
        # (content length and type included), built by Call._answered from bytes it has.
        self.call = call
        self.body = self.answer = body  # answer: typed as bytes (Response.body may be a view)
        self.status_code = status
        self.background = None
        self.raw_headers = raw_headers
        self.usage = usage  # the answer's usage (None: it reported none)

    def settle(self, gone: bool) -> None:
        """Hand the settlement to the store (Call.settle_soon): nothing waits for it."""
        usage = self.usage
        status = ("client_disconnected" if gone else
                  "usage_missing" if usage is None else "ok")
        self.call.settle_soon(usage, usage is not None, status, self.answer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        except BaseException:  # the app is gone (or the server cancelled the handler)
            self.settle(True)
            raise
        self.settle(client_gone(receive))


class _StreamPump:
    """Reads the provider's stream to its end whatever the app does: meters each piece and
    sends it on at once (while the app is there), then settles.

    It sends from its own task, through the app's ASGI ``send`` that the response hands it
    (``answer``): the head goes out as soon as the provider's has arrived, and each piece as
    soon as it is metered, with no queue and no task switch between the provider and the app
    (each was a turn of the event loop before the app's first byte); the server's send_now
    (reference_relay.coalesce) puts each on the wire in the same step, not at the end of the
    loop's iteration. The request itself was sent by the handler that reserved the call
    (Upstream.begin), so nothing waits for this task to start either. On the way to the app's
    first byte the relay then wakes twice, for the app's request and for the provider's head,
    and turns the loop once more only in the store (the SQLite store's group commit lets the
    reservation wait one turn for company). The response's task only
    waits. The pump asks the server whether the app is still there (``client_gone``) as it
    sends the head, each piece and before it settles; a server that cannot tell it that
    (``shows_hang_up``) has the response listen for the app's disconnect once the head is
    out. A slow app slows the pump (a send waits for
    the connection to drain), never what is metered: every byte read is metered before it is
    sent, and after a disconnect the pump reads and meters to the end without sending.
    """

    def __init__(self, call: Call, started: Started | None) -> None:
        self.call = call
        self.started = started  # the request, perhaps sent already (Upstream.begin)
        self._loop = call.loop
        # The provider's verdict once its status is in: None (the stream follows, sent by the
        # pump) or the error, with a body to pass through, that the response sends instead.
        self.ready: asyncio.Future[tuple[RelayError, bytes | None] | None] = (
            self._loop.create_future())
        self.send: Send | None = None  # the app's, once the response runs
        self.receive: Receive | None = None  # and its receive (asked at the head: _start)
        # The server's hook that sends what the connection holds back now, and every later
        # write of this response at once (SEND_NOW_SCOPE_KEY); None if it has none.
        self.send_now: Callable[[], None] | None = None
        self._attached: asyncio.Future[None] | None = None  # the pump waits for `send`
        self._waiter: asyncio.Future[None] | None = None  # the response waits for `ready`
        self._over: asyncio.Future[None] = self._loop.create_future()  # and then for the end
        self.head_sent = False
        self.client_gone = False
        self.finished = False
        self.log_buf = bytearray() if call.log_bodies else None

    # -- the response's side ------------------------------------------------------------------

    async def answer(self, send: Send, send_now: Callable[[], None] | None = None,
                     receive: Receive | None = None) -> tuple[RelayError, bytes | None] | None:
        """Hand the pump the app's ``send`` (and the server's send_now hook, if it has one,
        and ``receive``, to tell whether the app is gone when the head is due) and wait for
        the provider's verdict (on a future of the response's own: cancelling the response
        leaves the pump's state intact)."""
        self.send = send
        self.send_now = send_now
        self.receive = receive
        if self._attached is not None and not self._attached.done():
            self._attached.set_result(None)
        if not self.ready.done():
            self._waiter = self._loop.create_future()
            await self._waiter
        return self.ready.result()

    async def over(self) -> None:
        """Wait until the pump has sent the last byte, or the app is gone."""
        if not self._over.done():
            await self._over

    def client_closed(self) -> None:
        """The app's side ended (normally or not): stop sending to it, end the response."""
        if not self.finished:
            self.client_gone = True
        if self._attached is not None and not self._attached.done():
            self._attached.set_result(None)
        if not self._over.done():
            self._over.set_result(None)

    # -- the pump -------------------------------------------------------------------------------

    def _verdict(self, outcome: tuple[RelayError, bytes | None] | None, *,
                 wake: bool = True) -> None:
        self.ready.set_result(outcome)
        if wake:
            self._wake()

    def _wake(self) -> None:
        """Wake the response if it waits for the verdict."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _to_app(self, message: Message) -> None:
        if self.client_gone or self.send is None:
            return
        if self.receive is not None and client_gone(self.receive):
            self.client_closed()  # the server saw the hang-up (no listener: _RelayStream)
            return
        try:
            await self.send(message)
        except Exception as exc:  # OSError: the app went away mid-send
            if not isinstance(exc, OSError):
                log.error("sending a stream to the app failed token=%s: %s",
                          self.call.token_id, type(exc).__name__)
            self.client_closed()

    async def _start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response head: the provider's request id and the relay's own headers."""
        if self.send is None:  # not yet handed over (see HEAD_WAIT)
            self._attached = self._loop.create_future()
            await asyncio.wait((self._attached,), timeout=HEAD_WAIT)
            if self.send is None:
                self.client_closed()
                return
        if self.receive is not None and client_gone(self.receive):
            # The app hung up while the provider thought: nothing is sent, the stream is
            # read and metered to its end (the pump asks again as it sends: _to_app).
            self.client_closed()
            return
        raw = [_NO_CACHE, *headers]
        if self.call.response_headers:
            raw += self.call._own_headers()
        raw.append(_SSE_TYPE)
        self.head_sent = True
        await self._to_app({"type": "http.response.start", "status": 200, "headers": raw})

    async def emit(self, data: bytes) -> None:
        if self.log_buf is not None and len(self.log_buf) < self.call.max_log_bytes:
            self.log_buf += data
        await self._to_app({"type": "http.response.body", "body": data, "more_body": True})

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # however it ends (cancelled too), the response waits no more
            self._wake()
            if not self._over.done():
                self._over.set_result(None)

    async def _run(self) -> None:
        call = self.call
        p = call.provider
        meter = StreamMeter(call.endpoint.meter,
                            drop_usage_chunk=not call.prepared.client_wants_usage)
        resp: UpstreamResponse | None = None
        failure: RelayError | None = None
        try:
            async with asyncio.timeout(call.upstream.timeout(p)):
                resp = await call._send(self.started)
                if resp.status >= 300:
                    body = await resp.read()
                    self._verdict(upstream_status_error(p, resp.status, body, call.key))
                    await call.release("upstream_error")
                    return
                # The provider answered (from here on the call is charged, not released);
                # the head goes out before the response is woken (it only waits for the
                # end, or listens for a disconnect): at once if no body has come with the
                # provider's head, else with the first piece of it.
                self._verdict(None, wake=False)
                await self._start(_passed_headers(resp))
                if not resp.buffered and self.send_now is not None:
                    self.send_now()
                self._wake()
                first = True  # until the first piece is sent
                async for chunk in resp.iter_chunks():
                    if first:
                        # The events before a usage or end event go out with the head, before
                        # that event is parsed (a fast provider's answer arrives whole, its
                        # usage behind its content).
                        out = meter.feed_plain(chunk)
                        if out:
                            first = False
                            await self.emit(out)
                            if self.send_now is not None:
                                self.send_now()  # sent now, and every later piece at once
                            elif meter.has_whole:
                                await asyncio.sleep(0)  # sent: the transport flushes per turn
                            out = meter.feed(b"") if meter.has_whole else b""
                    else:
                        out = meter.feed(chunk)
                    if out:
                        await self.emit(out)
                tail = meter.flush()
                if tail:
                    await self.emit(tail)
        except Exception as exc:
            failure = transport_error(p, exc)
            if not self.ready.done():
                self._verdict((failure, None))
                await call.upstream_failed(exc, answered=resp is not None)
                return
        finally:
            if resp is not None:
                resp.close()
            if not self.ready.done():  # cancelled before any answer
                self._verdict((RelayError(UPSTREAM_ERROR, "the call was cancelled"), None))
                await call.release("upstream_error")
        try:
            if self.receive is not None and client_gone(self.receive):
                self.client_closed()  # a hang-up since the last piece went out: told below
            cut = failure is not None or not meter.done
            if cut:
                failure = failure or RelayError(
                    UPSTREAM_ERROR, f"provider {p.id!r} ended the stream early")
                await self.emit(sse_error_event(failure, call.endpoint.errors))
            logged = bytes(self.log_buf) if self.log_buf is not None else None
            if meter.final:
                status = ("upstream_error" if cut else
                          "client_disconnected" if self.client_gone else "ok")
                await call.settle(meter.usage, True, status, logged)
            elif not meter.saw_event:
                await call.release("upstream_error")
            else:
                status = ("client_disconnected" if self.client_gone else
                          "upstream_error" if cut else "usage_missing")
                await call.settle(meter.usage, False, status, logged)
        finally:
            self.finished = True
            await self._to_app({"type": "http.response.body", "body": b"", "more_body": False})
            self.client_closed()


class _RelayStream(Response):
    """A streamed answer: the provider's error if it refused, else what the pump sends.

    It is returned before the provider answers, so that the pump can send the head the moment
    the provider's arrives; this task waits for the verdict, then (for a stream) for the
    pump's end, and tells the pump however the client side ends. Under uvicorn the pump asks
    the server whether the app hung up as it sends (client_gone, shows_hang_up); under a
    server that cannot tell, or while uvicorn does not read the connection (a large body
    left reading paused; the handler resumes it, server_flags.resume_reading, so this is a
    fallback), this task listens for the app's disconnect once the head is out. Why not
    listen always: the listener's task, made, run once and cancelled, was some 7 us of
    every stream, in the tail a back-to-back call's next request waits behind; and
    not before the head: its first wait was work between the request's going upstream and
    the app's first byte (a hang-up before the head is seen as the pump sends it).
    """

    def __init__(self, pump: _StreamPump) -> None:
        self.pump = pump
        self.status_code = 200
        self.background = None
        self.raw_headers = []  # the pump sends the head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = self.pump

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            pump.client_closed()

        listener: asyncio.Task[None] | None = None
        try:
            outcome = await pump.answer(send, scope.get(SEND_NOW_SCOPE_KEY), receive)
            if outcome is not None:
                err, passthrough = outcome
                if passthrough is not None:
                    refusal = Response(passthrough, status_code=err.status,
                                       media_type="application/json",
                                       headers={"x-capwallet-reason": err.code})
                else:
                    refusal = error_response(err, pump.call.endpoint.errors)
                await refusal(scope, receive, send)
                return
            if not pump._over.done():  # the stream goes on: listen for the app's hang-up
                if not shows_hang_up(receive):  # else the pump asks the server as it sends
                    listener = pump._loop.create_task(listen())
                await pump.over()
        finally:
            if listener is not None:
                listener.cancel()
            pump.client_closed()  # however this ends (cancelled too): the pump sends no more
