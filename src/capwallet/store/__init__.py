"""Stores: the only state of a relay (counters, reservations, revocations, ledger, approvals).

``open_store(url)`` picks a backend by URL: ``sqlite:///path`` (embedded default) or
``redis://host:port/db`` (shared by several relays).
"""

from capwallet.store.base import (
    LedgerEntry,
    PendingApproval,
    Reservation,
    ReserveResult,
    Store,
    StoreUnavailable,
)

__all__ = [
    "LedgerEntry", "PendingApproval", "Reservation", "ReserveResult", "Store", "StoreUnavailable",
]
