"""Calendar periods for budgets, quotas and rates (spec/caveats.md, "Periods").

A counter's key includes the period it counts, e.g. ``<counter id>/2026-11`` for a monthly
budget, so a new period simply starts a new counter and no reset job exists (a reset job that
fails is a known way for gateways to block or overspend). Calendar periods are in UTC unless
the caveat names an IANA time zone.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

PERIODS = ("day", "week", "month", "year", "total")
UTC = dt.UTC
# The last instant for which counters with a period other than "total" are defined:
# 9998-01-01T00:00:00Z. Before it, the local time in every zone (offsets up to +14 h) is in a
# year up to 9998, so every period key and period end (at most the start of 9999 locally) is a
# date from 0001 to 9999 that every calendar library represents. At or after it, a model call
# under such a counter is denied with period_out_of_range (spec/caveats.md#periods); the spec
# lets `now` go up to 2^53-1, so this is a defined answer rather than an overflow.
PERIOD_LIMIT = 253339228800


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """Zone and Link names of the IANA tz database on this system, except "Factory".

    ZoneInfo alone would also load files that are not tz database names and mean different
    things on different machines ("localtime", "posixrules", "right/...", "posix/..."), so a
    caveat naming one would count different periods on different verifiers. "Factory" is a
    database Zone, but only a placeholder for "zone not set", and ICU (so JavaScript's Intl)
    does not have it: a JavaScript verifier could not accept it (spec/caveats.md).
    """
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


@lru_cache(maxsize=64)
def zone(name: str) -> dt.tzinfo:
    if name == "UTC":
        return UTC
    if name not in zone_names():
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _local(now: int, tz: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, zone(tz))


def period_key(period: str, now: int, tz: str = "UTC") -> str:
    """The label of the period containing ``now``: 2026-11-26, 2026-W48, 2026-11, 2026, total."""
    if period == "total":
        return "total"
    t = _local(now, tz)
    if period == "day":
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    if period == "week":
        year, week, _ = t.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period == "month":
        return f"{t.year:04d}-{t.month:02d}"
    if period == "year":
        return f"{t.year:04d}"
    if period == "minute":
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}"
    raise ValueError(f"unknown period {period!r}")


def period_end(period: str, now: int, tz: str = "UTC") -> int | None:
    """Unix time at which the period containing ``now`` ends (None for total)."""
    if period == "total":
        return None
    if period == "minute":
        return now - now % 60 + 60
    t = _local(now, tz)
    day = t.date()
    if period == "day":
        start = day + dt.timedelta(days=1)
    elif period == "week":
        start = day + dt.timedelta(days=7 - t.weekday())
    elif period == "month":
        start = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    elif period == "year":
        start = dt.date(t.year + 1, 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    end = dt.datetime.combine(start, dt.time(), zone(tz))
    return int(end.timestamp())
