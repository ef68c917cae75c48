"""Where the money went: grants joined with the store's usage aggregates, ledger and counters.

Shared by the dashboard and the ``apps`` / ``usage`` commands, so the page and the terminal
always agree. Money stays in integer minor units per currency; nothing here adds two
currencies together.

Every spend figure (totals, per app, per model, per day, an app's calls) comes from the usage
aggregates the store keeps on settlement (Store.usage), never from counting ledger rows: the
ledger is pruned after its retention and anyone can add refusal rows to it, so a count of its
newest rows could be emptied by one app's flood of refused calls (issue 13 F5). The ledger
only gives the list of recent calls.

Sub-tasks: an app may attenuate its token for a sub-task; the relay records which chain made
each call (LedgerEntry.chain_id) and each chain's caveats once (Store.chains). A chain with
more caveats than the wallet issued for the grant is a sub-task (the same token id with the
issued number of caveats can only be the issued token: nothing can be changed in a chain
without the root key, only appended). It is shown under its grant with its own limits: the
effective limits of its whole chain, its own counters (those its added caveats created) read
from the store like the grant's.

A sub-task's calls, spend and last use come from its grant's own ledger rows (the token's index
in the store), not from the recent-calls list: that list is the newest RECENT_LIMIT rows of
every app, so any other app's traffic or a refusal flood pushed a sub-task's calls out of it
and its count fell to 0. The usage aggregates have no chain id (adding it would rebuild the
SQLite aggregates table, whose primary key it would join, and change the settle path both
backends are tuned on), and the ledger names the chain on every row; only settled model calls
count, so refusal rows cannot crowd them out. The ledger keeps rows for the relay's
``ledger_retention_days`` (90 by default, 0 keeps them for ever): calls older than that are no
longer counted, and a grant is read up to SUBTASK_ROWS rows.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from capwallet import caveats as cav
from capwallet.limits import CounterLimit, EffectiveLimits, counter_id, effective
from capwallet.money import MICROS_PER_MINOR, format_micros, format_minor
from capwallet.periods import period_key
from capwallet.store.base import (
    COUNTER_MARGIN,
    Chain,
    LedgerEntry,
    Store,
    UsageTotal,
    usage_day,
)
from capwallet.wallet.expired import counted_no_more
from capwallet.wallet.grants import Grant, GrantStore

RECENT_LIMIT = 1_000  # recent calls shown; figures come from the aggregates
SUBTASK_ROWS = 100_000  # ledger rows read per grant that has sub-tasks (module docstring)


@dataclass(frozen=True, slots=True)
class BudgetUse:
    # Settled + reserved this period, microunits (the counter's unit); None when no longer
    # counted (UNCOUNTED): never shown as 0, which would say the app spent nothing.
    spent: int | None
    limit: int  # the budget caveat's amount, minor units
    currency: str
    period: str

    @property
    def percent(self) -> int:
        """0-100 for the meter; any spend at all shows at least 1."""
        if self.spent is None:
            return 0
        if self.limit <= 0:
            return 100
        limit = self.limit * MICROS_PER_MINOR
        return min(100, max(self.spent * 100 // limit, 1 if self.spent > 0 else 0))

    def text(self) -> str:
        spent = "-" if self.spent is None else format_micros(self.spent, self.currency)
        return f"{spent} {self.limit_text()}"

    def limit_text(self) -> str:
        """'of 5.00 USD this month': the page puts the spent amount before it, short, with
        the exact value in its tooltip like every other amount there."""
        out = f"of {format_minor(self.limit, self.currency)} {_this_period(self.period)}"
        return out if self.spent is not None else out + UNCOUNTED

    def to_json(self) -> dict[str, Any]:
        return {"spent": self.spent, "limit": self.limit, "currency": self.currency,
                "period": self.period}


# Said of a "total" counter of a grant expired over COUNTER_MARGIN ago: the wallet deletes
# those (capwallet.wallet.expired), and what they held is not known any more.
UNCOUNTED = f" (no longer counted: expired over {COUNTER_MARGIN // 86400} days ago)"


def _this_period(period: str) -> str:
    """'in total', 'today', or 'this month' (week, minute, ...): a counter's current window."""
    return {"total": "in total", "day": "today"}.get(period, f"this {period}")


@dataclass(frozen=True, slots=True)
class CounterUse:
    """A quota or rate counter's use this period (budgets are BudgetUse)."""

    used: int | None  # None: no longer counted (UNCOUNTED), as BudgetUse.spent
    limit: int
    kind: str  # quota | rate
    period: str

    def text(self) -> str:
        unit = "requests" if self.kind == "rate" else "model tokens"
        if self.used is None:
            return f"- of {self.limit:,} {unit} {_this_period(self.period)}{UNCOUNTED}"
        return f"{self.used:,} of {self.limit:,} {unit} {_this_period(self.period)}"


@dataclass
class SubTask:
    """Calls made with a token the app attenuated from its grant's (see the module docstring).

    ``limits`` are the chain's effective limits (never wider than the grant's); ``added`` the
    caveats it appended to its parent (the grant, or the sub-task it was narrowed from);
    ``budgets`` and ``counters`` the use of the counters those caveats created (its parents'
    counters are debited too, and shown on them; its own also count its sub-tasks' calls).
    ``calls``, ``spend`` and ``last_use`` count its settled calls in its grant's ledger."""

    chain: Chain
    limits: EffectiveLimits
    added: tuple[str, ...]
    parent: str | None = None  # chain id of the sub-task it was attenuated from, if any
    # The effective limits of what it was narrowed from (the grant's, or its parent's).
    parent_limits: EffectiveLimits | None = None
    budgets: list[BudgetUse] = field(default_factory=list)
    counters: list[CounterUse] = field(default_factory=list)
    calls: int = 0
    spend: dict[str, int] = field(default_factory=dict)  # currency -> microunits
    last_use: int | None = None

    @property
    def chain_id(self) -> str:
        return self.chain.chain_id

    @property
    def label(self) -> str | None:
        """The name the app gave the sub-task, if it appended an ``app`` caveat (a display
        name, spec/caveats.md#app: it never denies anything, and the grant keeps its own)."""
        names = [c.app_id for t in self.added
                 if isinstance(c := cav.decode(t.encode("utf-8")), cav.App)]
        return names[-1] if names else None

    def words(self) -> list[str]:
        """Its own limits in words: its counters, then each effective limit that is narrower
        than what it was narrowed from (the rest it shares with its grant, shown there).
        Exact amounts: for the terminal and ``--json``."""
        return [b.text() for b in self.budgets] + self.rule_words()

    def rule_words(self) -> list[str]:
        """words() without its budgets: the page writes those itself, the spent amount short
        with the exact value in its tooltip like every other amount there (BudgetUse.limit_text
        is the rest of the line)."""
        lim, was = self.limits, self.parent_limits or EffectiveLimits()
        out = [c.text() for c in self.counters]
        for name, now, before in (("models", lim.models, was.models),
                                  ("providers", lim.providers, was.providers),
                                  ("operations", lim.operations, was.operations),
                                  ("data", lim.scopes, was.scopes)):
            if now is not None and now != before:
                out.append(f"{name}: " + (", ".join(sorted(now)) or "none"))
        if lim.max_output_tokens is not None and lim.max_output_tokens != was.max_output_tokens:
            out.append(f"up to {lim.max_output_tokens:,} output tokens per call")
        if lim.max_input_tokens is not None and lim.max_input_tokens != was.max_input_tokens:
            out.append(f"up to {lim.max_input_tokens:,} input tokens per call")
        if lim.expires is not None and lim.expires != was.expires:
            out.append("expires " + dt.datetime.fromtimestamp(
                lim.expires, dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
        for cur, amount in sorted(lim.confirm_above.items()):
            if was.confirm_above.get(cur) != amount:
                out.append(f"asks first above {format_minor(amount, cur)}")
        if lim.ask_first != was.ask_first:
            out.append("asks first for: " + ", ".join(sorted(lim.ask_first)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id, "label": self.label, "parent": self.parent,
            "first_seen": self.chain.first_seen, "caveats_added": list(self.added),
            "limits": self.limits.to_json(),
            "budgets": [b.to_json() for b in self.budgets],
            "counters": [{"kind": c.kind, "used": c.used, "limit": c.limit,
                          "period": c.period} for c in self.counters],
            "calls": self.calls, "spend": dict(sorted(self.spend.items())),
            "last_use": self.last_use, "words": self.words(),
        }


@dataclass
class AppRow:
    grant: Grant
    budgets: list[BudgetUse] = field(default_factory=list)
    models_used: list[str] = field(default_factory=list)
    last_use: int | None = None
    calls: int = 0
    subtasks: list[SubTask] = field(default_factory=list)

    @property
    def app(self) -> str:
        return self.grant.app

    def to_json(self) -> dict[str, Any]:
        lim = self.grant.limits
        return {
            "grant_id": self.grant.grant_id, "app": self.grant.app,
            "origin": self.grant.origin, "status": self.grant.status,
            "source": self.grant.source, "created_at": self.grant.created_at,
            "expires_at": self.grant.expires_at,
            "providers": _sorted(lim.providers), "models": _sorted(lim.models),
            "scopes": _sorted(lim.scopes), "ask_first": _sorted(lim.ask_first),
            "budgets": [b.to_json() for b in self.budgets],
            "models_used": self.models_used, "last_use": self.last_use, "calls": self.calls,
            "subtasks": [t.to_json() for t in self.subtasks],
        }


@dataclass(frozen=True, slots=True)
class Call:
    entry: LedgerEntry
    app: str
    subtask: bool = False  # made with a sub-task's token (entry.chain_id names it)

    @property
    def is_model_call(self) -> bool:
        return bool(self.entry.provider)

    @property
    def refused(self) -> bool:
        return self.entry.status.startswith("denied")

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "time": e.time, "app": self.app, "grant_id": e.token_id, "provider": e.provider,
            "model": e.model, "operation": e.operation, "input_tokens": e.input_tokens,
            "output_tokens": e.output_tokens, "cost": e.cost, "currency": e.currency,
            "status": e.status, "latency_ms": e.latency_ms, "count": e.count,
            "chain_id": e.chain_id or None, "subtask": self.subtask,
        }


def _day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


@dataclass
class Snapshot:
    now: int
    apps: list[AppRow]
    calls: list[Call]  # newest first, within the window: the recent-calls list only
    days: int
    # The store's usage aggregates in the window, each with its app's name (the grant's).
    usage: list[tuple[str, UsageTotal]] = field(default_factory=list)

    def spend_by(self, key: str) -> list[tuple[str, str, int, int]]:
        """[(name, currency, cost, calls)] by "app" | "model", biggest first."""
        cost: dict[tuple[str, str], int] = defaultdict(int)
        count: Counter[tuple[str, str]] = Counter()
        for app, u in self.usage:
            name = app if key == "app" else f"{u.model} ({u.provider})"
            cost[(name, u.currency)] += u.cost
            count[(name, u.currency)] += u.calls
        rows = [(n, cur, v, count[(n, cur)]) for (n, cur), v in cost.items()]
        return sorted(rows, key=lambda r: (-r[2], r[0]))

    def currencies(self) -> list[str]:
        """Every currency spent in, in the window."""
        return sorted({u.currency for _, u in self.usage})

    def call_count(self) -> int:
        """Model calls settled in the window (refused calls are not calls)."""
        return sum(u.calls for _, u in self.usage)

    def main_currency(self) -> str | None:
        totals: dict[str, int] = defaultdict(int)
        for _, u in self.usage:
            totals[u.currency] += u.cost
        for row in self.apps:
            for b in row.budgets:
                totals.setdefault(b.currency, 0)
        return max(totals, key=lambda k: (totals[k], k)) if totals else None

    def spend_per_day(self, currency: str) -> list[tuple[str, int]]:
        """[(YYYY-MM-DD, cost)] for each of the last ``days`` UTC days, oldest first."""
        today = usage_day(self.now)
        per: dict[str, int] = {_day_text(d): 0 for d in range(today - self.days + 1, today + 1)}
        for _, u in self.usage:
            day = _day_text(u.day)
            if u.currency == currency and day in per:
                per[day] += u.cost
        return list(per.items())

    def total(self, currency: str) -> int:
        return sum(u.cost for _, u in self.usage if u.currency == currency)

    def per_day(self) -> list[tuple[str, str, str, str, int, int]]:
        """[(YYYY-MM-DD, app, model, currency, cost, calls)], newest day first, then by cost:
        the per-day breakdown by app and by model, every currency kept apart."""
        cost: dict[tuple[int, str, str, str], int] = defaultdict(int)
        count: Counter[tuple[int, str, str, str]] = Counter()
        for app, u in self.usage:
            key = (u.day, app, f"{u.model} ({u.provider})", u.currency)
            cost[key] += u.cost
            count[key] += u.calls
        rows = sorted(cost, key=lambda k: (-k[0], -cost[k], k[1], k[2]))
        return [(_day_text(d), a, m, c, cost[(d, a, m, c)], count[(d, a, m, c)])
                for d, a, m, c in rows]


def result_words(status: str) -> str:
    """A ledger status for people: 'denied:model_not_allowed' -> 'refused: model not
    allowed'; 'ok' stays 'ok'."""
    kind, _, reason = status.partition(":")
    kind = {"denied": "refused"}.get(kind, kind)
    words = reason.replace("_", " ").strip()
    return f"{kind}: {words}" if words else kind.replace("_", " ")


def limit_words(grant: Grant) -> list[str]:
    """The grant's counted limits other than budgets (token quotas, request rates) in words,
    so a quota-only grant never reads as unlimited."""
    out = []
    for c in grant.limits.counters:
        if c.kind == "budget":
            continue
        per = {"total": "in total", "minute": "per minute"}.get(c.period, f"per {c.period}")
        if c.kind == "rate":
            out.append(f"at most {c.limit:,} requests {per}")
        else:
            out.append(f"at most {c.limit:,} model tokens {per}")
    return out


def _sorted(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


async def snapshot(
    grants: GrantStore, store: Store, now: int, *, days: int = 30,
    statuses: tuple[str, ...] = ("active", "revoked"),
) -> Snapshot:
    """Every grant with its spend this period, and the calls of the last ``days`` days."""
    all_grants = grants.list(statuses=statuses)
    by_id = {g.grant_id: g for g in all_grants}
    since = now - days * 86400
    first_day = usage_day(now) - days + 1
    entries = await store.ledger(since=since, limit=RECENT_LIMIT)
    totals = await store.usage(since_day=first_day)
    subtasks = subtasks_of(all_grants, await store.chains(list(by_id)) if by_id else [])
    # The grants whose "total" counters the wallet deletes (expired over COUNTER_MARGIN ago):
    # those read None, not 0 (UNCOUNTED).
    gone = {g.grant_id for g in all_grants if counted_no_more(g, now)}
    keys: list[str] = []
    for g in all_grants:
        keys += [_key(b, now) for b in g.limits.budgets]
    for t in subtasks.values():
        keys += [_key(c, now) for c in _own_counters(t)]
    used = await store.counters(keys) if keys else {}

    def use(c: CounterLimit, token_id: str) -> int | None:
        if c.period == "total" and token_id in gone:
            return None
        return used.get(_key(c, now), 0)

    rows: dict[str, AppRow] = {}
    for g in all_grants:
        app_row = AppRow(g)
        for b in g.limits.budgets:
            app_row.budgets.append(BudgetUse(use(b, g.grant_id), b.limit, b.unit, b.period))
        rows[g.grant_id] = app_row
    for t in sorted(subtasks.values(), key=lambda t: (t.chain.first_seen, t.chain_id)):
        for c in _own_counters(t):
            n = use(c, t.chain.token_id)
            if c.kind == "budget":
                t.budgets.append(BudgetUse(n, c.limit, c.unit, c.period))
            else:
                t.counters.append(CounterUse(n, c.limit, c.kind, c.period))
        rows[t.chain.token_id].subtasks.append(t)
    await _count_subtask_calls(store, subtasks)
    calls: list[Call] = []
    for e in entries:
        sub = subtasks.get((e.token_id, e.chain_id))
        calls.append(Call(e, _app_name(by_id, e.token_id, e.app), sub is not None))
        used_by = rows.get(e.token_id)
        if used_by is not None and e.provider and not e.refused and (
                used_by.last_use is None or e.time > used_by.last_use):
            used_by.last_use = e.time
    usage: list[tuple[str, UsageTotal]] = []
    for u in sorted(totals, key=lambda u: (u.day, u.token_id, u.model)):
        usage.append((_app_name(by_id, u.token_id, u.app), u))
        used_by = rows.get(u.token_id)
        if used_by is None:
            continue
        used_by.calls += u.calls
        if u.model and u.model not in used_by.models_used:
            used_by.models_used.append(u.model)
        # a day's start when the call itself has left the recent list (or the ledger)
        used_by.last_use = max(used_by.last_use or 0, u.day * 86400)
    return Snapshot(now=now, apps=list(rows.values()), calls=calls, days=days, usage=usage)


async def _count_subtask_calls(store: Store, subtasks: dict[tuple[str, str], SubTask]) -> None:
    """Each sub-task's settled calls, spend and last use, from its grant's ledger rows."""
    tokens = sorted({token for token, _ in subtasks})
    if not tokens:
        return
    for e in await store.ledger(token_ids=tokens, limit=SUBTASK_ROWS):
        sub = subtasks.get((e.token_id, e.chain_id))
        if sub is not None and e.provider and not e.refused:
            sub.calls += e.count
            if e.currency:
                sub.spend[e.currency] = sub.spend.get(e.currency, 0) + e.cost
            sub.last_use = max(sub.last_use or 0, e.time)


def subtasks_of(grants: list[Grant], chains: list[Chain]) -> dict[tuple[str, str], SubTask]:
    """(token id, chain id) -> SubTask for every recorded chain that extends its grant's
    issued caveats (the issued chain itself, and chains of unknown grants, are left out)."""
    by_id = {g.grant_id: g for g in grants}
    out: dict[tuple[str, str], SubTask] = {}
    for c in chains:
        grant = by_id.get(c.token_id)
        base = () if grant is None else grant.caveat_text
        if grant is None or len(c.caveats) <= len(base) or c.caveats[:len(base)] != base:
            continue
        raw = [t.encode("utf-8") for t in c.caveats]
        try:
            limits = effective(bytes.fromhex(c.token_id), [(r, cav.decode(r)) for r in raw])
        except ValueError:  # a record this wallet cannot read: not shown, never guessed
            continue
        out[(c.token_id, c.chain_id)] = SubTask(c, limits, c.caveats[len(base):],
                                                parent_limits=grant.limits)
    for t in out.values():  # the longest other sub-task its caveats extend, if any
        longest = 0
        for o in out.values():
            n = len(o.chain.caveats)
            if (o.chain.token_id == t.chain.token_id and longest < n < len(t.chain.caveats)
                    and t.chain.caveats[:n] == o.chain.caveats):
                t.parent, longest = o.chain_id, n
                t.parent_limits = o.limits
        if longest:  # what it adds to the sub-task it was narrowed from
            t.added = t.chain.caveats[longest:]
    return out


def _own_counters(t: SubTask) -> list[CounterLimit]:
    """The sub-task's counters that its added caveats created (the grant shows its own)."""
    token = bytes.fromhex(t.chain.token_id)
    own = {counter_id(token, r.encode("utf-8")) for r in t.added}
    return [c for c in t.limits.counters if c.counter_id in own]


def _key(c: CounterLimit, now: int) -> str:
    return f"{c.counter_id}/{period_key(c.period, now, c.tz)}"


def _app_name(by_id: dict[str, Grant], token_id: str, recorded: str) -> str:
    owner = by_id.get(token_id)
    return owner.app if owner is not None else (recorded or "unknown app")
