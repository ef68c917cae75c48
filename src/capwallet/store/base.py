"""The store interface shared by the relay, the wallet and every backend (spec/budgets.md).

Semantics every backend implements (and tests/store_suite.py checks for each):

* A counter is keyed ``<counter id>/<period key>`` (capwallet.verify.Debit.counter_key); the
  period is in the key, so there is no reset job. Its value is ``used`` = settled + reserved.
  A counter belongs to one token id (the counter id is derived from it), so every reservation
  naming a counter has the same ``token_id``: a backend may partition its data by token id
  (the Redis store does), and settle/release find the reservation under ``entry.token_id``.
* ``reserve`` is atomic, all or none: the token (``token_id``) is not revoked, and for every
  debit with amount > 0, used + amount <= limit, else nothing changes and the result says why
  (``revoked``, or the first failing counter). A zero amount never blocks. An approval id, if
  given, is consumed in the same step (single use). The reservation has a lease: if its relay
  dies, ``expire_leases`` closes it later. Revocation is checked first, then the approval,
  then the counters.
  Revocation inside the reservation is what makes a revoke final for every call that has not
  reserved yet: a relay that read the revocation first and reserved after could forward a call
  of a token revoked between the two.
* ``settle`` moves each counter from the reserved amount to the actual amount, closes the
  reservation and appends the ledger row, all in one step, at most once per reservation
  (a second settle or release of the same id changes nothing and returns False).
  ``settle_soon`` queues the same settle for a caller that does not wait for it (the relay,
  once an answer is sent): its outcome goes to an ``Outcome`` (True, False or the exception),
  never to the caller, and ``drain`` and ``close`` wait for every settle queued before them,
  so a queued settlement is written, or reported failed, before the store closes.
* ``expire_leases`` settles every reservation whose lease has passed at its reserved
  (worst-case) amount, since the relay that held it cannot say what the provider served: a
  crash may cost the user the reservation, never an overspend. The ledger row says
  ``lease_expired``.
* ``snapshot`` reads the token's revocation and its counters in one read (one statement, one
  round trip). The relay's success path does not need it (``reserve`` checks both): it reads
  a snapshot only to tell a refusal as it is (which counter, how much is left). The counters
  are read as of one moment; ``reserve`` checks the limits again atomically, so a stale
  snapshot can only make a request be refused there, never overspend.
* ``append_ledger`` writes one row that belongs to no reservation (a refused call). Refusals
  are compacted: a refusal with the same token, status and UTC minute as an earlier row adds
  to that row's ``count`` instead of writing another row, so refused calls, which cost an app
  nothing, cannot flood the ledger.
* Usage aggregates: every row that is not a refusal and names a provider (settle, release,
  an expired lease) also adds its cost, one call and its tokens to the total of its UTC day,
  token, app, provider, model and currency, in the same atomic step. ``usage`` reads them.
  They are never evicted by ledger rows, so spend figures survive any number of refusals and
  the ledger's retention.
* ``prune_ledger`` deletes ledger rows older than a time (the ledger's retention); it never
  touches counters, reservations or usage aggregates. ``prune_counters`` deletes the counters
  of periods that ended before a time (COUNTER_MARGIN ago: Redis expires them then),
  ``prune_chains`` the recorded chains that expired before a time (past the ledger's
  retention), and ``prune_token_counters`` the counters named of one token (the wallet's
  "total" counters of a grant expired over COUNTER_MARGIN ago: capwallet.wallet.expired).
* Chains: a ledger row names the token chain that made the call (``chain_id``, see
  capwallet.macaroon.chain_id): an app may attenuate its token offline for a sub-task, and the
  attenuated token keeps the token id, so the token id alone cannot tell the sub-task's calls
  from the app's. ``note_chain`` records, once per chain, which caveats it carries (first
  write wins, at most MAX_CHAINS per token id, so a holder minting chains offline cannot grow
  the store without bound); ``chains`` reads them back for the wallet, which knows how many
  caveats its grant issued and so which chains are sub-tasks. Refusal rows are compacted per
  token, status and minute as before (a flood of fresh chains must not defeat compaction), so
  a compacted row names the chain of its first refusal.
* Any backend failure raises StoreUnavailable; callers deny (fail closed).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from capwallet.loops import running_loop

_C = TypeVar("_C", bound=type)
_T = TypeVar("_T")


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or failed; the caller must deny the request."""


class Hold(NamedTuple):
    """One counter debit inside a reservation.

    (Hold and Reservation are NamedTuples: immutable like frozen dataclasses, but several
    times cheaper to build, and the relay builds one of each per counter and per call.)"""

    counter_key: str
    amount: int
    limit: int
    resets_at: int | None = None  # period end: a backend may expire the counter after it


_NO_META: Mapping[str, Any] = MappingProxyType({})


class Reservation(NamedTuple):
    reservation_id: str  # 32 hex, random
    token_id: str
    holds: tuple[Hold, ...]
    lease_until: int  # unix seconds
    approval_id: str | None = None
    created_at: int = 0
    # What the ledger row will say if the lease expires (app, provider, model, ...).
    meta: Mapping[str, Any] = _NO_META


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    failed_counter: str | None = None  # counter key that would exceed its limit
    used: int = 0  # that counter's used value at the time
    approval_used: bool = False  # the approval id was already consumed
    revoked: bool = False  # the reservation's token is revoked (nothing else was checked)


def _slot_init(cls: _C) -> _C:
    """Give a frozen, slotted dataclass an ``__init__`` that sets each field through its
    slot's descriptor: same signature, defaults and result as the generated one.

    Why: the generated ``__init__`` of a frozen dataclass sets each field with
    ``object.__setattr__`` (a lookup of the name on the type per field); LedgerEntry has 17
    and the relay builds one per call: 2.3 us against 1.4 us this way (timeit). The class
    stays a frozen dataclass (``dataclasses.replace`` builds through this ``__init__``)."""
    params: list[str] = []
    body: list[str] = []
    names: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain defaults are supported")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "".join(body), names)  # noqa: S102
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    type.__setattr__(cls, "__init__", init)
    return cls


@_slot_init
@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row per call. ``cost`` is integer microunits (millionths of a minor unit) of
    ``currency``, as budget counters count (spec 1.1), so a token's rows sum to its counter."""

    time: int
    token_id: str
    app: str
    provider: str
    model: str
    operation: str
    input_tokens: int
    output_tokens: int
    cost: int
    currency: str
    status: str  # ok | upstream_error | client_disconnected | lease_expired | denied:<reason>
    latency_ms: int
    reservation_id: str | None = None
    request_body: str | None = None  # only when logging "full" is allowed by token and config
    response_body: str | None = None
    count: int = 1  # calls this row stands for: >1 only for a compacted refusal row
    # The presented token chain (capwallet.macaroon.chain_id: 16 hex, not a secret); "" in
    # rows written before chains were recorded, and in rows of no verified token.
    chain_id: str = ""

    @property
    def refused(self) -> bool:
        return is_refusal(self.status)


def _positional_builder(cls: type[_T]) -> Callable[..., _T]:
    """A function that builds a frozen, slotted dataclass from all its fields given by
    position, with the result its ``__init__`` gives (an instance of ``cls``: equal, hashed,
    frozen and replaceable the same), at a fraction of the cost.

    Why: a frozen dataclass's fields can only be set through a C call each (its
    ``__setattr__`` refuses), some 900 instructions per field: a LedgerEntry (17 fields),
    built on every relayed call, cost 16 K instructions (callgrind), 5% of the relay's
    capability logic per call. Here the instance is made as a twin class with the same
    slots and no ``__setattr__`` of its own, its fields stored as a plain class stores them
    (3.11 specialises those stores), then its ``__class__`` set to ``cls``: Python allows
    that between two classes of one memory layout, and refuses it (TypeError) otherwise.
    6.4 K instructions a build (callgrind, 17 fields). The builder is checked against
    ``__init__`` once here, and tests/test_store_ledger_entry.py checks every field."""
    names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    if tuple(names) != cls.__dict__.get("__slots__"):
        raise TypeError(f"{cls.__name__}: the fields are not the slots, in order")
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": tuple(names)})
    scope: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec(f"def build({', '.join(names)}):\n    self = _new(_twin)\n"  # noqa: S102
         + "".join(f"    self.{n} = {n}\n" for n in names)
         + "    self.__class__ = _cls\n    return self\n", scope)
    build: Callable[..., _T] = scope["build"]
    build.__qualname__ = f"{cls.__qualname__}, built by position"
    sample = tuple(range(len(names)))
    if build(*sample) != cls(*sample):
        raise TypeError(f"{cls.__name__}: the positional builder disagrees with __init__")
    return build


# LedgerEntry(...) with all 17 fields by position, in their order, as the relay builds one
# per call (reference_relay.calls): see _positional_builder.
ledger_entry: Callable[..., LedgerEntry] = _positional_builder(LedgerEntry)


def is_refusal(status: str) -> bool:
    return status.startswith("denied")


def usage_day(time: int) -> int:
    """The UTC day of a unix time, as days since 1970-01-01 (the usage aggregates' key)."""
    return time // 86400


def counts_as_usage(entry: LedgerEntry) -> bool:
    """Whether a ledger row adds to the usage aggregates: a model call that was not refused."""
    return bool(entry.provider) and not is_refusal(entry.status)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Settled usage of one token on one model in one UTC day (``Store.usage``)."""

    day: int  # days since 1970-01-01, UTC
    token_id: str
    app: str
    provider: str
    model: str
    currency: str
    cost: int  # microunits of currency
    calls: int
    input_tokens: int
    output_tokens: int


MAX_CHAINS = 64  # chains recorded per token id (note_chain ignores any beyond)
# A counter outlives its period by this (late settles, the wallet): Redis expires it then,
# the relay's sweep prunes it then from the others (Store.prune_counters).
COUNTER_MARGIN = 2 * 86400


@dataclass(frozen=True, slots=True)
class Chain:
    """One token chain the relay has seen (``Store.note_chain``): its caveats' signed text,
    from which the wallet derives its effective limits and counter ids. Not a secret: it
    cannot be used as a token (no signature)."""

    token_id: str
    chain_id: str
    caveats: tuple[str, ...]
    first_seen: int  # unix seconds


def chain_expiry(caveats: Sequence[str]) -> int | None:
    """When a chain stops working: its earliest ``expires`` caveat (a chain holds its
    parents' caveats, and each one binds), None if it has none. The caveats are a verified
    chain's, in canonical text (``expires 1790812800``)."""
    out: int | None = None
    for c in caveats:
        name, _, arg = c.partition(" ")
        if name == "expires" and arg.isascii() and arg.isdigit():
            at = int(arg)
            out = at if out is None or at < out else out
    return out


class Snapshot(NamedTuple):
    """What a request needs from the store before it is judged (``Store.snapshot``)."""

    revoked: bool
    counters: dict[str, int]  # counter key -> used (settled + reserved); absent counters 0


@dataclass(frozen=True, slots=True)
class PendingApproval:
    approval_request_id: str  # 32 hex
    token_id: str
    digest: str  # hex of the digest the approval will carry (request or access digest)
    summary: str  # what the user is asked, in plain words
    created_at: int
    expires_at: int
    status: str = "pending"  # pending | approved | denied | expired
    approval: str | None = None  # the cwa1_ string once approved
    # What the approval approves (capwallet.approval.Kind label): "model_call" (recorded by the
    # relay, digest = request_digest of the bytes it judges) or "resource_access" (recorded by
    # the wallet, digest = access_digest of what it shows).
    kind: str = "model_call"


class Outcome(Protocol):
    """Where a queued write's outcome goes (``Store.settle_soon``): the three methods of an
    asyncio.Future the stores' write queues call, so a caller that does not wait can take
    the outcome with no future, no task and no wake-up of its own (the relay's Call does).
    ``done`` is False until one of the setters ran; a setter must not raise."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Store(abc.ABC):
    # settle_soon's tasks (the default's, and a backend's fallbacks and retries: _soon_task),
    # for drain
    _soon: set[asyncio.Task[None]] | None = None

    @abc.abstractmethod
    async def reserve(self, reservation: Reservation) -> ReserveResult: ...

    @abc.abstractmethod
    async def settle(
        self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry
    ) -> bool:
        """Charge ``actual`` (counter key -> amount; missing keys charge 0) and log ``entry``."""

    async def release(self, reservation_id: str, entry: LedgerEntry) -> bool:
        """Close a reservation charging nothing (the upstream failed before any output)."""
        return await self.settle(reservation_id, {}, entry)

    def settle_soon(self, reservation_id: str, actual: Mapping[str, int], entry: LedgerEntry,
                    outcome: Outcome) -> None:
        """``settle`` for a caller that does not wait for it (``actual`` empty: a release):
        queued now, written soon, its outcome (what ``settle`` returns or raises: a
        StoreUnavailable too) handed to ``outcome``. It never raises, and ``drain`` and
        ``close`` wait for it.

        Why: the relay settles a call after its answer is sent; awaiting the write resumed
        the request's handler once more through the whole ASGI stack per call for nothing
        the app waits for. This default runs ``settle`` in a task of the store's; a backend
        with a write queue of its own (SQLite's batches, Redis's pipe) queues it there with
        no task."""
        self._soon_task(self.settle(reservation_id, actual, entry), outcome)

    def _soon_task(self, settle: Coroutine[Any, Any, bool], outcome: Outcome) -> None:
        """Run ``settle`` in a task of the store's, its outcome handed to ``outcome``;
        ``drain`` waits for it."""
        tasks = self._soon
        if tasks is None:
            tasks = self._soon = set()
        task = running_loop().create_task(_settle_to(settle, outcome))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def attach_server(self, alone: Callable[[], bool],
                      in_flight: Callable[[], tuple[int, int]]) -> Callable[[], None]:
        """A server writing through this store (a relay) says how to know its calls in
        flight: ``alone()``, whether a write now is its only call's (at most one call and one
        task of its own), and ``in_flight()``, its (calls, tasks) to sum with other servers'
        on the same store object. Returns the function that detaches it (at its close).

        Why: a store that groups concurrent writes (SQLite's commit batches) runs a lone
        write's batch at once instead of waiting a turn of the loop for company; with two
        relays on one store object, the one store must count both. This default ignores
        it (a store without group commit)."""
        return _detached

    async def drain(self) -> None:
        """Wait until every settle queued (``settle_soon``) before this call is written or
        has failed."""
        loop = running_loop()
        while pending := [t for t in self._soon or () if t.get_loop() is loop]:
            await asyncio.wait(pending)

    @abc.abstractmethod
    async def expire_leases(self, now: int) -> int:
        """Settle every reservation whose lease ended before ``now`` at its reserved amounts."""

    @abc.abstractmethod
    async def counters(self, keys: Iterable[str]) -> dict[str, int]:
        """Current used (settled + reserved) of each counter; absent counters are 0."""

    async def snapshot(self, token_id: str, keys: Sequence[str]) -> Snapshot:
        """The token's revocation and the current used of each of ``keys`` (the token's own
        counters: a counter key derives from its token id, and a backend may look the keys up
        in the token's partition), in one read where the backend can. This default makes two;
        backends override it."""
        revoked = await self.is_revoked(token_id)
        return Snapshot(revoked, await self.counters(keys) if keys else {})

    @abc.abstractmethod
    async def revoke(self, token_id: str, now: int) -> None: ...

    @abc.abstractmethod
    async def is_revoked(self, token_id: str) -> bool: ...

    @abc.abstractmethod
    async def ledger(
        self, *, token_ids: Sequence[str] | None = None, since: int | None = None,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        """Newest first."""

    @abc.abstractmethod
    async def append_ledger(self, entry: LedgerEntry) -> None:
        """Append one ledger row that belongs to no reservation (a refused call, cost 0),
        compacted with an earlier refusal of the same token, status and minute (see the
        module docstring), in one write. A revoked token's refusals are written too: they are
        what the user reads to see that the revocation holds.

        No default: one built on reserve and release would drop exactly those rows (reserve
        refuses a revoked token), name a reservation the call never had, and take two writes."""

    @abc.abstractmethod
    async def usage(self, *, since_day: int | None = None,
                    token_ids: Sequence[str] | None = None) -> list[UsageTotal]:
        """The usage aggregates (any order), from ``since_day`` (usage_day) on."""

    @abc.abstractmethod
    async def note_chain(self, chain: Chain) -> bool:
        """Record ``chain`` if its (token id, chain id) is new and its token has fewer than
        MAX_CHAINS; True if this call recorded it. A chain is recorded once: later calls
        change nothing."""

    @abc.abstractmethod
    async def chains(self, token_ids: Sequence[str]) -> list[Chain]:
        """The recorded chains of these tokens, by token id, oldest first per token."""

    @abc.abstractmethod
    async def prune_ledger(self, before: int) -> int:
        """Delete ledger rows with time < ``before``; return how many."""

    @abc.abstractmethod
    async def prune_chains(self, expired_before: int) -> int:
        """Delete the recorded chains that expired before ``expired_before`` (chain_expiry;
        a chain with no expiry is kept); return how many. The relay calls it with the
        ledger's retention cutoff less COUNTER_MARGIN: no call of a chain is made after it
        expires, so by then every ledger row that names it (written at most a lease after
        its expiry) has been pruned, and nothing reads its record. A backend that indexes
        expiries as it records (Redis) indexes the chains recorded before it did first."""

    @abc.abstractmethod
    async def prune_counters(self, before: int) -> int:
        """Delete the counters whose period ended before ``before`` (``resets_at`` < it;
        "total" counters, which never reset, are kept); return how many. The relay calls it
        with ``now - COUNTER_MARGIN``, after closing the expired leases: a period's counter is
        read and written only while its period runs (a counter key names its period), and by
        a late settle or the wallet shortly after. Without it a store keeps every period's
        counter of every token for ever, a rate's one per minute of use. A backend whose
        counters expire by themselves at that time (Redis) deletes nothing here."""

    @abc.abstractmethod
    async def prune_token_counters(self, token_id: str, keys: Sequence[str]) -> int:
        """Delete these counters of ``token_id`` (counter keys: capwallet.limits.counter_id
        of the token and a caveat, "/", the period key), whatever their period; return how
        many there were. For the counters no period ends, "total" ones, which nothing else
        deletes: the wallet calls it for a grant whose token expired over COUNTER_MARGIN ago
        (capwallet.wallet.expired), when no chain of the token can be used again (each holds
        the grant's expiry) and no reservation holds them (a lease is at most COUNTER_MARGIN:
        reference_relay.config). The caller vouches for that: the store cannot tell whom a
        counter still limits."""

    @abc.abstractmethod
    async def add_pending(self, pending: PendingApproval) -> None: ...

    @abc.abstractmethod
    async def get_pending(self, approval_request_id: str) -> PendingApproval | None: ...

    @abc.abstractmethod
    async def list_pending(self, now: int) -> list[PendingApproval]: ...

    @abc.abstractmethod
    async def resolve_pending(
        self, approval_request_id: str, status: str, approval: str | None
    ) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


async def _settle_to(settle: Any, outcome: Outcome) -> None:
    """Run a queued settle and hand its outcome over (Store.settle_soon)."""
    try:
        result = await settle
    except BaseException as exc:  # cancelled too (the loop is ending): reported, then raised
        outcome.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        outcome.set_result(result)


def _detached() -> None:
    """Detach a server from a store that does not count servers (Store.attach_server)."""
