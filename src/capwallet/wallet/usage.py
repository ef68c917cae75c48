"""Where the money went: grants joined with the relay's ledger and counters.

Shared by the dashboard and the ``apps`` / ``usage`` commands, so the page and the terminal
always agree. Money stays in integer minor units per currency; nothing here adds two
currencies together.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from capwallet.money import MICROS_PER_MINOR, format_micros, format_minor
from capwallet.periods import period_key
from capwallet.store.base import LedgerEntry, Store
from capwallet.wallet.grants import Grant, GrantStore

LEDGER_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class BudgetUse:
    spent: int  # settled + reserved this period, microunits (the counter's unit)
    limit: int  # the budget caveat's amount, minor units
    currency: str
    period: str

    @property
    def percent(self) -> int:
        """0-100 for the meter; any spend at all shows at least 1."""
        if self.limit <= 0:
            return 100
        limit = self.limit * MICROS_PER_MINOR
        return min(100, max(self.spent * 100 // limit, 1 if self.spent > 0 else 0))

    def text(self) -> str:
        per = {"total": "in total", "day": "today"}.get(self.period, f"this {self.period}")
        return (f"{format_micros(self.spent, self.currency)} of "
                f"{format_minor(self.limit, self.currency)} {per}")


@dataclass
class AppRow:
    grant: Grant
    budgets: list[BudgetUse] = field(default_factory=list)
    models_used: list[str] = field(default_factory=list)
    last_use: int | None = None
    calls: int = 0

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
            "budgets": [{"spent": b.spent, "limit": b.limit, "currency": b.currency,
                         "period": b.period} for b in self.budgets],
            "models_used": self.models_used, "last_use": self.last_use, "calls": self.calls,
        }


@dataclass(frozen=True, slots=True)
class Call:
    entry: LedgerEntry
    app: str

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
            "status": e.status, "latency_ms": e.latency_ms,
        }


@dataclass
class Snapshot:
    now: int
    apps: list[AppRow]
    calls: list[Call]  # newest first, within the window
    days: int

    def spend_by(self, key: str) -> list[tuple[str, str, int, int]]:
        """[(name, currency, cost, calls)] by "app" | "model", biggest first."""
        cost: dict[tuple[str, str], int] = defaultdict(int)
        count: Counter[tuple[str, str]] = Counter()
        for c in self.calls:
            if not c.is_model_call or c.refused:
                continue  # resource accesses and refused calls cost nothing
            name = c.app if key == "app" else f"{c.entry.model} ({c.entry.provider})"
            cost[(name, c.entry.currency)] += c.entry.cost
            count[(name, c.entry.currency)] += 1
        rows = [(n, cur, v, count[(n, cur)]) for (n, cur), v in cost.items()]
        return sorted(rows, key=lambda r: (-r[2], r[0]))

    def main_currency(self) -> str | None:
        totals: dict[str, int] = defaultdict(int)
        for c in self.calls:
            if c.entry.provider:
                totals[c.entry.currency] += c.entry.cost
        for row in self.apps:
            for b in row.budgets:
                totals.setdefault(b.currency, 0)
        return max(totals, key=lambda k: (totals[k], k)) if totals else None

    def spend_per_day(self, currency: str) -> list[tuple[str, int]]:
        """[(YYYY-MM-DD, cost)] for each of the last ``days`` UTC days, oldest first."""
        today = dt.datetime.fromtimestamp(self.now, dt.UTC).date()
        days = [today - dt.timedelta(days=i) for i in range(self.days - 1, -1, -1)]
        per: dict[str, int] = {d.isoformat(): 0 for d in days}
        for c in self.calls:
            if c.entry.currency != currency or not c.entry.provider:
                continue
            day = dt.datetime.fromtimestamp(c.entry.time, dt.UTC).date().isoformat()
            if day in per:
                per[day] += c.entry.cost
        return list(per.items())

    def total(self, currency: str) -> int:
        return sum(c.entry.cost for c in self.calls
                   if c.entry.currency == currency and c.entry.provider)


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
    entries = await store.ledger(since=since, limit=LEDGER_LIMIT)
    keys: list[str] = []
    for g in all_grants:
        for b in g.limits.budgets:
            keys.append(f"{b.counter_id}/{period_key(b.period, now, b.tz)}")
    used = await store.counters(keys) if keys else {}
    rows: dict[str, AppRow] = {}
    for g in all_grants:
        app_row = AppRow(g)
        for b in g.limits.budgets:
            spent = used.get(f"{b.counter_id}/{period_key(b.period, now, b.tz)}", 0)
            app_row.budgets.append(BudgetUse(spent, b.limit, b.unit, b.period))
        rows[g.grant_id] = app_row
    calls: list[Call] = []
    for e in entries:
        owner = by_id.get(e.token_id)
        calls.append(Call(e, owner.app if owner is not None else (e.app or "unknown app")))
        used_by = rows.get(e.token_id)
        if used_by is None or not e.provider or e.status.startswith("denied"):
            continue
        used_by.calls += 1
        if e.model and e.model not in used_by.models_used:
            used_by.models_used.append(e.model)
        if used_by.last_use is None or e.time > used_by.last_use:
            used_by.last_use = e.time
    return Snapshot(now=now, apps=list(rows.values()), calls=calls, days=days)
