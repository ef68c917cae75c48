"""Stores: the only state of a relay (counters, reservations, revocations, ledger, approvals).

``open_store(url)`` picks a backend by URL: ``sqlite:///path`` (embedded default) or
``redis://host:port/db`` (shared by several relays).

Adding a backend: create ``capwallet/store/<name>.py`` with a ``Store`` subclass that has a
``from_url(url) -> Store`` class method, name it in ``BACKENDS`` below, and add one line to the
backend list in ``tests/store_suite.py`` so the shared test suite runs against it.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from capwallet.store.base import (
    COUNTER_MARGIN,
    Chain,
    Hold,
    LedgerEntry,
    Outcome,
    PendingApproval,
    Reservation,
    ReserveResult,
    Snapshot,
    Store,
    StoreUnavailable,
    UsageTotal,
)

# URL scheme -> (module, class); each class has a from_url(url). Imported on first use, so
# an embedded (SQLite) deployment never imports the Redis client.
BACKENDS: dict[str, tuple[str, str]] = {
    "sqlite": ("capwallet.store.sqlite", "SQLiteStore"),
    "redis": ("capwallet.store.redis", "RedisStore"),
    "rediss": ("capwallet.store.redis", "RedisStore"),
}


def open_store(url: str) -> Store:
    """Open the store named by ``url``; raises ValueError for an unknown or unusable URL and
    StoreUnavailable when the backend cannot be reached."""
    scheme = urlsplit(url).scheme
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(
            f"unknown store URL scheme {scheme!r}; use one of: "
            + ", ".join(f"{s}://" for s in BACKENDS)
        )
    module_name, class_name = backend
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise ValueError(f"the {scheme} store needs a package that is not installed: "
                             f"{exc.name}") from None
        raise ValueError(f"the {scheme} store backend is not available in this build") from None
    store: Store = getattr(module, class_name).from_url(url)
    return store


__all__ = [
    "BACKENDS", "COUNTER_MARGIN", "Chain", "Hold", "LedgerEntry", "Outcome", "PendingApproval",
    "Reservation", "ReserveResult", "Snapshot", "Store", "StoreUnavailable", "UsageTotal",
    "open_store",
]
