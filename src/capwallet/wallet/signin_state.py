"""What a wallet server keeps for signing in: registered passkeys, open ceremonies, the throttle.

The sign-in handlers (passkeys.py) work on this state, and WalletContext holds it; it is a
module of its own so that the context can hold it without importing the handlers, which
import the context.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from capwallet.wallet.throttle import SignInThrottle

CEREMONY_TTL = 300
MAX_CEREMONIES = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passkeys (
    credential_id TEXT PRIMARY KEY,   -- base64url, as the browser names it
    public_key    BLOB NOT NULL,      -- COSE key
    sign_count    INTEGER NOT NULL,
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used     INTEGER
);
CREATE TABLE IF NOT EXISTS passkey_user (id BLOB NOT NULL);  -- the wallet's WebAuthn user
"""


@dataclass(frozen=True, slots=True)
class Passkey:
    credential_id: str
    public_key: bytes
    sign_count: int
    name: str
    created_at: int
    last_used: int | None


class PasskeyStore:
    """The ``passkeys`` table in wallet.db (one wallet, one owner: every passkey is theirs)."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def user_id(self) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT id FROM passkey_user").fetchone()
            if row is None:
                uid = secrets.token_bytes(32)
                self._db.execute("INSERT INTO passkey_user (id) VALUES (?)", (uid,))
                return uid
            return bytes(row[0])

    def all(self) -> list[Passkey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT credential_id, public_key, sign_count, name, created_at, last_used "
                "FROM passkeys ORDER BY created_at, credential_id").fetchall()
        return [Passkey(r[0], bytes(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def get(self, credential_id: str) -> Passkey | None:
        return next((p for p in self.all() if secrets.compare_digest(
            p.credential_id.encode(), credential_id.encode())), None)

    def add(self, credential_id: str, public_key: bytes, sign_count: int, name: str,
            now: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO passkeys (credential_id, public_key, sign_count, name, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (credential_id, public_key, sign_count, name, now))

    def used(self, credential_id: str, sign_count: int, now: int) -> None:
        with self._lock:
            self._db.execute("UPDATE passkeys SET sign_count = ?, last_used = ? "
                             "WHERE credential_id = ?", (sign_count, now, credential_id))

    def remove(self, credential_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM passkeys WHERE credential_id = ?",
                                   (credential_id,))
            return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class _Ceremony:
    kind: str  # "register" or "signin"
    challenge: bytes
    expires_at: float
    session_id: str | None  # registration: the signed-in session that asked


class Ceremonies:
    """Challenges handed out and not yet answered: single use, short-lived, bounded."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, _Ceremony] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, challenge: bytes, session_id: str | None) -> str:
        cid = secrets.token_urlsafe(18)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, c in self._open.items() if c.expires_at < now]:
                del self._open[key]
            while len(self._open) >= MAX_CEREMONIES:
                self._open.popitem(last=False)
            self._open[cid] = _Ceremony(kind, challenge, now + CEREMONY_TTL, session_id)
        return cid

    def take(self, cid: str, kind: str, session_id: str | None) -> bytes | None:
        with self._lock:
            c = self._open.pop(cid, None)
        if c is None or c.kind != kind or c.expires_at < time.monotonic():
            return None
        if c.session_id != session_id:
            return None
        return c.challenge


@dataclass
class SignIn:
    """What the sign-in handlers share (built once per server)."""

    passkeys: PasskeyStore
    ceremonies: Ceremonies
    throttle: SignInThrottle
