"""The "total" counters of grants that expired long ago: deleted, once nothing can use them.

A period's counter is deleted COUNTER_MARGIN after its period ends (the relay's sweep; Redis
expires it then). A "total" counter has no period to end, and the store cannot tell when it
stops limiting anything: its key is a hash of the token id and a caveat, and the token's
expiry is in its grant, which only the wallet holds (a chain the relay records may be a
sub-task's, with an earlier expiry of its own, and tells nothing of the grant's).

The wallet can tell. Every chain of a token holds its grant's caveats, and a chain expires at
its earliest ``expires`` caveat (spec/caveats.md): once the grant's expiry and the verifier's
clock allowance (CLOCK_SKEW, 60 s) have passed, no chain of the token verifies, so none
reserves again; and a lease is at most COUNTER_MARGIN (reference_relay.config refuses a
longer one), so COUNTER_MARGIN later no reservation holds its counters either. Then this
deletes them (Store.prune_token_counters): the grant's own "total" counters and those the
relay's recorded chains of the token added (a sub-task's own budget). Fail closed: a grant
without an expiry, a grant or a chain this wallet cannot read, a chain the relay did not
record (past the 64 a token may have) keep their counters, which cost room, never money; an
unreadable grant stops no other's.

The wallet runs it when it starts and every PRUNE_INTERVAL seconds after (``prune_forever``,
which wallet.server starts with the app). A sweep that fails (the store down, the grants table
unreadable: an sqlite3 error of wallet.db) deletes nothing it had not finished, is logged, and
is tried again at the next turn (capwallet.maintenance.run_every): before, any error but
StoreUnavailable ended the task, and no counter was deleted again until the wallet restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from capwallet import caveats as cav
from capwallet.limits import EffectiveLimits, effective
from capwallet.maintenance import run_every
from capwallet.store import COUNTER_MARGIN, Store
from capwallet.store.base import chain_expiry
from capwallet.verify import CLOCK_SKEW
from capwallet.wallet.grants import Grant, GrantStore

log = logging.getLogger("capwallet.wallet")

PRUNE_INTERVAL = 3600  # seconds between two sweeps, as the relay's hourly pruning


def counted_no_more(grant: Grant, now: int) -> bool:
    """Whether the grant's "total" counters are deleted (or are due at the next sweep): it
    expired over COUNTER_MARGIN ago, counted from the last instant a relay still takes its
    token (the expiry plus CLOCK_SKEW: a reservation made then holds its counters a lease
    later). What they held is then not known any more, and the wallet's pages say so rather
    than show it as 0 (capwallet.wallet.usage)."""
    expiry = chain_expiry(grant.caveat_text)
    return expiry is not None and expiry + CLOCK_SKEW < now - COUNTER_MARGIN


def _totals(limits: EffectiveLimits) -> set[str]:
    """The counter keys of the "total" counters of these limits."""
    return {f"{c.counter_id}/total" for c in limits.counters if c.period == "total"}


class ExpiredCounters:
    """Deletes the total counters of grants expired over COUNTER_MARGIN ago (see the module
    docstring); remembers the grants it has done, so that each sweep after the first reads
    the chains of the newly expired grants only."""

    def __init__(self, grants: GrantStore, store: Store) -> None:
        self.grants = grants
        self.store = store
        self.done: set[str] = set()  # grant ids whose counters are deleted

    async def sweep(self, now: int) -> int:
        """Delete the counters of the grants that expired before ``now - COUNTER_MARGIN``;
        return how many there were."""
        keys: dict[str, set[str]] = {}
        for g in self.grants.list(statuses=("active", "revoked")):
            if g.grant_id in self.done or not counted_no_more(g, now):
                continue
            try:
                keys[g.grant_id] = _totals(g.limits)
            except ValueError:  # caveats this wallet cannot read (a newer one wrote them):
                continue  # its counters are kept, and the other grants' still deleted
        if not keys:
            return 0
        for chain in await self.store.chains(list(keys)):
            try:
                raw = [t.encode("utf-8") for t in chain.caveats]
                limits = effective(bytes.fromhex(chain.token_id),
                                   [(r, cav.decode(r)) for r in raw])
            except ValueError:  # a record this wallet cannot read: its counters are kept
                continue
            keys[chain.token_id] |= _totals(limits)
        deleted = 0
        for grant_id, wanted in keys.items():
            deleted += await self.store.prune_token_counters(grant_id, sorted(wanted))
            self.done.add(grant_id)
        if deleted:
            log.info("deleted %d total counter(s) of grants that expired over %d days ago",
                     deleted, COUNTER_MARGIN // 86400)
        return deleted


async def prune_forever(grants: GrantStore, store: Store, now: Callable[[], int]) -> None:
    """Sweep now and every PRUNE_INTERVAL seconds, until cancelled; a sweep that fails,
    whatever the error, is logged and tried again at the next turn (capwallet.maintenance)."""
    counters = ExpiredCounters(grants, store)
    await run_every(PRUNE_INTERVAL, lambda: counters.sweep(now()), log,
                    "pruning expired grants' counters")
