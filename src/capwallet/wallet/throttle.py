"""Slowing down passphrase guessing at a wallet that the internet can reach.

A hosted wallet offers a passphrase sign-in as the fallback to passkeys, and anyone can try
it. The passphrase protects every provider key, so guesses are made expensive:

* per client (its IP address: the peer, or what a *trusted* proxy says it is), the first
  ``free`` failures cost nothing; after that each attempt must wait ``base * 2**k`` seconds
  after the previous failure (k = failures beyond the free ones: 1 s, 2 s, 4 s, ...), up to
  ``cap``;
* overall, across all clients, the same rule with a larger allowance, so an attacker with
  many addresses still meets a growing delay (the owner may have to wait too; a passkey
  sign-in is never throttled);
* a client or the whole wallet is forgiven after ``forget_after`` seconds without failure;
* an attempt made while a delay runs is refused without looking at the passphrase (429 with
  Retry-After), so waiting is the only way forward; every failure and refusal is logged with
  the client address and the counts, never with what was typed.

State is in memory: a restart forgets it, and restarting needs the server's operator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("capwallet.signin")


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """``wait`` seconds before an attempt is allowed (0: go ahead) and who imposes it."""

    wait: float
    scope: str = ""  # "client" or "overall" when wait > 0


class SignInThrottle:
    def __init__(self, *, free: int = 3, overall_free: int = 20, base: float = 1.0,
                 cap: float = 900.0, forget_after: float = 3600.0, max_clients: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.overall_free = free, overall_free
        self.base, self.cap, self.forget_after = base, cap, forget_after
        self.max_clients = max_clients
        self.clock = clock
        self._clients: dict[str, _Count] = {}
        self._overall = _Count()
        self._lock = threading.Lock()

    def _delay(self, count: _Count, free: int, now: float) -> float:
        if count.failures < free:
            return 0.0
        step: float = min(self.cap, self.base * 2.0 ** (count.failures - free))
        return max(0.0, count.last + step - now)

    def _fresh(self, count: _Count, now: float) -> _Count:
        if count.failures and now - count.last > self.forget_after:
            count.failures = 0
        return count

    def check(self, client: str) -> Verdict:
        """May ``client`` try a passphrase now?"""
        now = self.clock()
        with self._lock:
            mine = self._fresh(self._clients.get(client, _Count()), now)
            overall = self._fresh(self._overall, now)
            wait_client = self._delay(mine, self.free, now)
            wait_overall = self._delay(overall, self.overall_free, now)
        if wait_client <= 0 and wait_overall <= 0:
            return Verdict(0.0)
        verdict = (Verdict(wait_client, "client") if wait_client >= wait_overall
                   else Verdict(wait_overall, "overall"))
        log.warning("passphrase sign-in refused from %s: wait %.0f s (%s delay)", client,
                    verdict.wait, verdict.scope)
        return verdict

    def failure(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            if client not in self._clients and len(self._clients) >= self.max_clients:
                self._clients.pop(next(iter(self._clients)))  # oldest first (insertion order)
            mine = self._fresh(self._clients.setdefault(client, _Count()), now)
            mine.failures += 1
            mine.last = now
            overall = self._fresh(self._overall, now)
            overall.failures += 1
            overall.last = now
            counts = (mine.failures, overall.failures)
        log.warning("passphrase sign-in failed from %s (%d failures from this client, %d "
                    "overall)", client, *counts)

    def success(self, client: str) -> None:
        """The right passphrase clears this client's count (not the overall one: a guesser
        elsewhere keeps meeting the overall delay)."""
        with self._lock:
            self._clients.pop(client, None)
        log.info("passphrase sign-in from %s", client)
