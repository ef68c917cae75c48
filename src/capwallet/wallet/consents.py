"""Consent pages in progress: the request shown to the user, waiting for their answer.

The consent form names its request by a random id bound to the browser session, so the answer
is checked against exactly what was shown (the app cannot change its request in between, and
another session cannot answer it). Entries expire after CONSENT_TTL.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from capwallet.wallet.authorization import AuthorizationRequest

CONSENT_TTL = 15 * 60


@dataclass(frozen=True, slots=True)
class Consent:
    session_id: str
    request: AuthorizationRequest
    expires_at: int


class Consents:
    def __init__(self) -> None:
        self._items: dict[str, Consent] = {}
        self._lock = threading.Lock()

    def add(self, consent: Consent) -> str:
        cid = secrets.token_urlsafe(18)
        with self._lock:
            now = consent.expires_at - CONSENT_TTL
            for k in [k for k, c in self._items.items() if c.expires_at < now]:
                del self._items[k]
            self._items[cid] = consent
        return cid

    def get(self, cid: str, session_id: str, now: int) -> Consent | None:
        with self._lock:
            c = self._items.get(cid)
        if c is None or c.session_id != session_id or now >= c.expires_at:
            return None
        return c

    def take(self, cid: str) -> None:
        with self._lock:
            self._items.pop(cid, None)
