"""The SQL the SQLite store runs: statement texts, the row shapes they bind, and the builders of
the statements that differ by their row count.

Apart from the store because these are what SQLite sees and prepares. Each distinct text is one
entry in a connection's cache of prepared statements (see _connect in sqlite.py), so the
builders are lru-cached and hand back the same text for the same count; a row's shape (which
columns it writes) is chosen so that no None is bound. The store (sqlite.py) and its batches
(sqlite_batch.py) both use them; nothing here touches a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from capwallet.store.base import LedgerEntry

_LEDGER_COLUMNS = (
    "time, token_id, app, provider, model, operation, input_tokens, output_tokens, cost, "
    "currency, status, latency_ms, reservation_id, request_body, response_body, chain_id"
)
# A NULL is written by leaving its column out, never by binding None: Python's sqlite3 binds
# None through its adapter protocol (a registry lookup and two failed attribute lookups, some
# 3,400 instructions each; an int or a str binds directly), and a relayed call's reservation
# (no approval) and ledger row (no bodies) had three (callgrind: 10 K instructions per call,
# 2.6% of the relay's capability logic). So a row is written in one of a few shapes, named by
# its width: the ledger's 16 columns, 14 without the bodies, 13 without the reservation id
# either (_ledger_row); the reservation's 7, or 6 without the approval (reserve).
_LEDGER_SHAPES = {
    16: _LEDGER_COLUMNS,
    # a row's own values first, then those a batch's rows mostly share (_insert_shared)
    14: "time, input_tokens, output_tokens, cost, latency_ms, reservation_id, token_id, app, "
        "provider, model, operation, currency, status, chain_id",
    13: _LEDGER_COLUMNS.replace(" reservation_id, request_body, response_body,", ""),
}
USAGE_ROWS = 256  # usage_daily rows per upsert statement (10 parameters each)
# Ledger or reservation rows per INSERT statement (16 or 7 parameters each): a batch's rows go
# as one statement of exactly their number up to this, so each number is one more prepared
# statement to keep (about 0.1 ms to prepare, once; see _connect).
INSERT_ROWS = 32
# A refusal adds to the row of the same token, status and minute, if there is one.
_REFUSAL_ADD = (
    "UPDATE ledger SET count = count + 1 WHERE seq = (SELECT seq FROM ledger "
    "WHERE token_id = ? AND time >= ? AND time < ? AND status = ? LIMIT 1)"
)
# First write wins; a token's chains stop at MAX_CHAINS (params: token, chain, caveats, time,
# token, MAX_CHAINS).
_NOTE_CHAIN = (
    "INSERT INTO chains (token_id, chain_id, caveats, first_seen) SELECT ?, ?, ?, ? "
    "WHERE (SELECT count(*) FROM chains WHERE token_id = ?) < ? "
    "ON CONFLICT (token_id, chain_id) DO NOTHING"
)
_RESERVATION_SHAPES = {
    7: "id, token_id, holds, lease_until, approval_id, created_at, meta",
    6: "id, token_id, holds, lease_until, created_at, meta",
}
_DELETE_RESERVATION = "DELETE FROM reservations WHERE id = ?"


# Several counters are read with one statement of point lookups joined by UNION ALL: measured
# faster than ``key IN (...)`` (which builds an ephemeral table for its list) and than one
# statement per key. ``DELETE ... RETURNING`` was measured slower than SELECT then DELETE.
@lru_cache(maxsize=64)
def _used_sql(n: int) -> str:
    """(key, used) of ``n`` counters (params: the keys); absent counters have no row."""
    return " UNION ALL ".join(["SELECT key, used FROM counters WHERE key = ?"] * n)


@lru_cache(maxsize=64)
def _add_used(n: int) -> str:
    """Add to ``n`` counters in one statement (params: key, delta, resets_at per counter)."""
    rows = ", ".join(["(?, ?, ?)"] * n)
    return (f"INSERT INTO counters (key, used, resets_at) VALUES {rows} "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET used = max(used + excluded.used, 0)")


@lru_cache(maxsize=64)
def _usage_add(n: int) -> str:
    """Add ``n`` merged totals to the usage aggregates in one statement (params per row: day,
    token, app, provider, model, currency, cost, calls, input tokens, output tokens)."""
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return ("INSERT INTO usage_daily (day, token_id, app, provider, model, currency, cost, "  # noqa: S608
            f"calls, input_tokens, output_tokens) VALUES {rows} "
            "ON CONFLICT (day, token_id, app, provider, model, currency) DO UPDATE SET "
            "cost = cost + excluded.cost, calls = calls + excluded.calls, "
            "input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens")


_USAGE_ADD_ONE = _usage_add(1)


@lru_cache(maxsize=3 * INSERT_ROWS)
def _insert_ledger(n: int, width: int) -> str:
    """Insert ``n`` ledger rows of ``width`` values each in one statement (_LEDGER_SHAPES)."""
    row = f"({', '.join('?' * width)})"
    return (f"INSERT INTO ledger ({_LEDGER_SHAPES[width]}) VALUES "  # noqa: S608
            + ", ".join([row] * n))


# A batch's ledger rows are mostly one token's calls of one model: the same token, app,
# provider, model, operation, currency, status and chain. These are bound once for all the
# rows (numbered parameters, each used in every row), not once per row: every text bound is
# a copy into SQLite (sqlite3_bind_text, some 700 instructions with its Python side), and
# they are 8 of a row's 14 values, the last 8 in that shape (_LEDGER_SHAPES).


@lru_cache(maxsize=INSERT_ROWS)
def _insert_shared_sql(n: int) -> str:
    """Insert ``n`` ledger rows of width 14 sharing their last 8 values (params: each row's
    first 6 values, then the 8 shared ones once)."""
    shared = ", ".join(f"?{6 * n + i}" for i in range(1, 9))
    rows = ", ".join("(" + ", ".join(f"?{6 * k + i}" for i in range(1, 7)) + f", {shared})"
                     for k in range(n))
    return f"INSERT INTO ledger ({_LEDGER_SHAPES[14]}) VALUES {rows}"  # noqa: S608


@lru_cache(maxsize=2 * INSERT_ROWS)
def _insert_reservations(n: int, width: int) -> str:
    """Insert ``n`` reservation rows of ``width`` values each in one statement
    (_RESERVATION_SHAPES)."""
    row = f"({', '.join('?' * width)})"
    return (f"INSERT INTO reservations ({_RESERVATION_SHAPES[width]}) VALUES "  # noqa: S608
            + ", ".join([row] * n))


_ADD_USED_ONE = _add_used(1)


@lru_cache(maxsize=128)
def _reserve_read_sql(n: int, approval: bool) -> str:
    """What a reservation checks, in one statement: the token's revocation (a row (NULL, 0)),
    the approval's earlier use (a row (NULL, 1); params: token, [approval], the keys) and ``n``
    counters (key, used)."""
    parts = ["SELECT NULL, 0 FROM revoked WHERE token_id = ?"]
    if approval:
        parts.append("SELECT NULL, 1 FROM used_approvals WHERE approval_id = ?")
    if n:
        parts.append(_used_sql(n))
    return " UNION ALL ".join(parts)


@lru_cache(maxsize=64)
def _snapshot_sql(n: int) -> str:
    """The token's revocation (a row with key NULL) and ``n`` counters, one statement."""
    sql = "SELECT NULL, 1 FROM revoked WHERE token_id = ?"
    if n:
        sql += " UNION ALL " + _used_sql(n)
    return sql


def _ledger_row(entry: LedgerEntry, reservation_id: str | None) -> tuple[Any, ...]:
    """The values of ``entry``'s ledger row, in the shape (_LEDGER_SHAPES) that binds no None
    for the usual rows."""
    if entry.request_body is None and entry.response_body is None:
        if reservation_id is None:
            return (entry.time, entry.token_id, entry.app, entry.provider, entry.model,
                    entry.operation, entry.input_tokens, entry.output_tokens, entry.cost,
                    entry.currency, entry.status, entry.latency_ms, entry.chain_id)
        return (entry.time, entry.input_tokens, entry.output_tokens, entry.cost,
                entry.latency_ms, reservation_id, entry.token_id, entry.app, entry.provider,
                entry.model, entry.operation, entry.currency, entry.status, entry.chain_id)
    return (
        entry.time, entry.token_id, entry.app, entry.provider, entry.model, entry.operation,
        entry.input_tokens, entry.output_tokens, entry.cost, entry.currency, entry.status,
        entry.latency_ms, reservation_id, entry.request_body, entry.response_body,
        entry.chain_id,
    )


def _filter(token_ids: Sequence[str] | None, column: str,
            since: int | None) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for the ledger and usage reads: these tokens, from ``since``
    on (``column`` is "time" or "day", never user text)."""
    where: list[str] = []
    params: list[Any] = []
    if token_ids is not None:
        where.append(f"token_id IN ({', '.join('?' * len(token_ids))})")
        params.extend(token_ids)
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    return where, params
