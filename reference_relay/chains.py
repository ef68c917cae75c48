"""Which token chain made a call: the relay records each chain it sees once, in the store.

An app may attenuate its token offline for a sub-task (an agent, a worker) with a smaller
budget or fewer models. The attenuated token keeps the token id, so counters, revocation and
the ledger's token id are the grant's: right for enforcement, but the user cannot tell the
sub-task's calls from the app's. So every ledger row names the presented chain
(capwallet.macaroon.chain_id, a hash of the chain's signature: never the token or its
signature), and the first call of each chain records the chain's caveats (Store.note_chain),
from which the wallet shows the sub-task under its grant with its own limits.

Once per chain, not per call: a process remembers the chains it has recorded (bounded, the
oldest forgotten first; forgetting one costs one more idempotent write), and the write runs
off the request path. A write that fails is forgotten too, so a later call tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from capwallet.store import Chain, Store, StoreUnavailable
from capwallet.verify import VerifiedToken

log = logging.getLogger("reference_relay.chains")
REMEMBERED = 65536  # chains a process remembers having recorded


class ChainNotes:
    """Records each verified chain once (see the module docstring)."""

    def __init__(self, store: Store,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]) -> None:
        self.store = store
        self.spawn = spawn
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def note(self, v: VerifiedToken, now: int) -> None:
        """Record ``v``'s chain unless this process already did (one dict lookup then)."""
        key = (v.token_id_hex, v.chain_id)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        chain = Chain(v.token_id_hex, v.chain_id,
                      tuple(c.decode("utf-8") for c in v.caveats), now)
        self.spawn(self._write(key, chain))

    async def _write(self, key: tuple[str, str], chain: Chain) -> None:
        try:
            await self.store.note_chain(chain)
        except StoreUnavailable as exc:
            self._seen.pop(key, None)  # the next call of this chain tries again
            log.warning("could not record chain %s of token %s: %s", chain.chain_id,
                        chain.token_id, exc)
