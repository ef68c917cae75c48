"""Wallet sessions: kept by the server, proven by a secret that only the wallet's origin holds.

The rule (spec/security.md, "Loopback ports share cookies"): a browser sends a host's cookies
to every port of that host, so any process listening on another 127.0.0.1 port that gets the
browser to open its URL receives the wallet's cookies. A cookie alone therefore proves nothing
here. A request is signed in only when it carries BOTH

* the session cookie ``<session id>.<cookie secret>`` (HttpOnly, SameSite=Strict; on https
  ``__Host-`` and Secure), and
* the header ``x-capwallet-session: <session id>.<origin secret>``, which the wallet's own
  script (static/wallet.js) reads from localStorage of the wallet's origin. Storage is scoped
  by origin, and the origin includes the port: another port cannot read it, and the wallet
  serves no script but its own (CSP script-src 'self').

Both secrets are random (not derived from any key), the server keeps only their SHA-256, and a
session ends at sign-out, when it is ended from the list of sessions, after IDLE_TTL without
use, or SESSION_TTL after sign-in, whichever comes first. Sessions live in wallet.db (table
``sessions``), so a signed-in browser stays signed in across restarts of ``capwallet serve``
until one of those ends it. The CSRF token of a session is an HMAC under its origin secret, so
a page that shows one was fetched with the header.

Module API (for pages built on sessions, e.g. the hosted profile's sign-in):
``SessionStore.create/authenticate/get/list/end/end_all`` on the table, and
``BrowserSessions`` for HTTP: ``start`` + ``set_cookie`` (sign-in), ``current`` (the session
of a request, or None), ``check_csrf``, ``end_current``; ``CookiePolicy.for_origin`` picks the
cookie's name and attributes from the server's public origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection
from starlette.responses import Response

from capwallet.wallet.deployment import wallet_origin
from capwallet.wallet.security import same_origin_request
from capwallet.wallet.table import WalletTable

SESSION_HEADER = "x-capwallet-session"
SESSION_TTL = 30 * 86400  # absolute lifetime after sign-in
IDLE_TTL = 7 * 86400  # ends when unused this long
_TOUCH_EVERY = 60  # last_seen is written at most once a minute per session
_LABEL_MAX = 120
_ID_LEN = 32  # hex
_CSRF_LABEL = b"capwallet-csrf-v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id   TEXT PRIMARY KEY,      -- 32 hex, random; a public handle (shown in the list)
    cookie_hash  TEXT NOT NULL,         -- SHA-256 hex of the cookie secret
    secret_hash  TEXT NOT NULL,         -- SHA-256 hex of the origin-storage secret
    label        TEXT NOT NULL DEFAULT '',  -- what signed in (browser), untrusted text
    created_at   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
"""


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    label: str
    created_at: int
    last_seen: int
    expires_at: int
    ended_at: int | None = None

    def is_live(self, now: int) -> bool:
        return (self.ended_at is None and now < self.expires_at
                and now < self.last_seen + IDLE_TTL)

    def to_json(self) -> dict[str, object]:
        return {"session_id": self.session_id, "label": self.label,
                "created_at": self.created_at, "last_seen": self.last_seen,
                "expires_at": self.expires_at, "ended_at": self.ended_at}


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just created: its two secrets exist only here and in the browser."""

    session: Session
    cookie_value: str  # "<id>.<cookie secret>": goes into the HttpOnly cookie
    header_value: str  # "<id>.<origin secret>": goes to the page's script, into localStorage

    def __repr__(self) -> str:
        return f"NewSession(session_id={self.session.session_id!r})"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The session of a request that proved both secrets, and its CSRF token."""

    session: Session
    csrf: str

    @property
    def session_id(self) -> str:
        return self.session.session_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(value: str) -> tuple[str, str] | None:
    sid, dot, secret = value.strip().partition(".")
    if not dot or len(sid) != _ID_LEN or not secret or len(secret) > 100:
        return None
    if any(c not in "0123456789abcdef" for c in sid):
        return None
    return sid, secret


def csrf_for(header_value: str) -> str:
    """The CSRF token of the session whose header value this is."""
    return hmac.new(header_value.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()[:40]


class SessionStore(WalletTable):
    """The ``sessions`` table (wallet/table.py: one connection behind a lock)."""

    def __init__(self, path: Path | str, clock: Callable[[], int] | None = None) -> None:
        super().__init__(path, _SCHEMA)
        self._clock = clock or (lambda: int(time.time()))

    def create(self, label: str = "", *, now: int | None = None,
               ttl: int = SESSION_TTL) -> NewSession:
        """A new session with fresh random secrets; old ended or expired rows are dropped."""
        now = self._clock() if now is None else now
        sid = secrets.token_hex(_ID_LEN // 2)
        cookie_secret = secrets.token_urlsafe(32)
        origin_secret = secrets.token_urlsafe(32)
        label = "".join(c for c in label if c.isprintable())[:_LABEL_MAX]
        session = Session(sid, label, now, now, now + ttl)
        with self._tx() as db:
            db.execute(
                "DELETE FROM sessions WHERE ended_at IS NOT NULL OR expires_at <= ? "
                "OR last_seen <= ?", (now, now - IDLE_TTL))
            db.execute(
                "INSERT INTO sessions (session_id, cookie_hash, secret_hash, label, created_at, "
                "last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, _hash(cookie_secret), _hash(origin_secret), label, now, now, now + ttl),
            )
        return NewSession(session, f"{sid}.{cookie_secret}", f"{sid}.{origin_secret}")

    def authenticate(self, cookie_value: str, header_value: str, *,
                     now: int | None = None) -> Session | None:
        """The live session that both values belong to, else None (fail closed).

        Both must name the same session and both secrets must match (compared in constant
        time, as hashes); a cookie without the header, or the header without the cookie, is
        nothing.
        """
        now = self._clock() if now is None else now
        c, h = _split(cookie_value), _split(header_value)
        if c is None or h is None or not hmac.compare_digest(c[0], h[0]):
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT cookie_hash, secret_hash, {_COLUMNS} FROM sessions "  # noqa: S608
                "WHERE session_id = ?", (c[0],)).fetchone()
        if row is None:
            return None
        cookie_ok = hmac.compare_digest(str(row[0]), _hash(c[1]))
        secret_ok = hmac.compare_digest(str(row[1]), _hash(h[1]))
        session = _session(row[2:])
        if not (cookie_ok and secret_ok and session.is_live(now)):
            return None
        if now - session.last_seen >= _TOUCH_EVERY:
            with self._tx() as db:
                db.execute("UPDATE sessions SET last_seen = ? WHERE session_id = ?",
                           (now, session.session_id))
        return session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",  # noqa: S608
                (session_id,)).fetchone()
        return None if row is None else _session(row)

    def list(self, *, now: int | None = None) -> list[Session]:
        """Live sessions, most recently used first."""
        now = self._clock() if now is None else now
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE ended_at IS NULL "  # noqa: S608
                "AND expires_at > ? AND last_seen > ? ORDER BY last_seen DESC, session_id",
                (now, now - IDLE_TTL)).fetchall()
        return [_session(r) for r in rows]

    def end(self, session_id: str, *, now: int | None = None) -> bool:
        """End one session (sign-out, or "end" in the list); True if it was live."""
        now = self._clock() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sessions SET ended_at = ? WHERE session_id = ? AND ended_at IS NULL",
                (now, session_id))
            return cur.rowcount == 1

    def end_all(self, *, now: int | None = None, keep: str | None = None) -> int:
        """End every session (but ``keep``, if given); returns how many were ended."""
        now = self._clock() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sessions SET ended_at = ? WHERE ended_at IS NULL AND session_id != ?",
                (now, keep or ""))
            return cur.rowcount


_COLUMNS = "session_id, label, created_at, last_seen, expires_at, ended_at"


def _session(row: tuple[object, ...]) -> Session:
    sid, label, created, seen, expires, ended = row
    return Session(str(sid), str(label), int(str(created)), int(str(seen)), int(str(expires)),
                   None if ended is None else int(str(ended)))


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """The session cookie's name and attributes.

    On loopback http: ``capwallet_session``, HttpOnly, SameSite=Strict, Path=/. Served at a
    public https origin: ``__Host-capwallet_session`` and Secure too (the prefix makes the
    browser refuse it without Secure, with a Domain, or with another Path).
    """

    name: str = "capwallet_session"
    secure: bool = False

    @classmethod
    def for_origin(cls, origin: str) -> CookiePolicy:
        if origin.lower().startswith("https://"):
            return cls(name="__Host-capwallet_session", secure=True)
        return cls()

    def set(self, response: Response, value: str, max_age: int) -> None:
        response.set_cookie(self.name, value, max_age=max_age, path="/", httponly=True,
                            secure=self.secure, samesite="strict")

    def clear(self, response: Response) -> None:
        response.delete_cookie(self.name, path="/", httponly=True, secure=self.secure,
                               samesite="strict")


@dataclass
class BrowserSessions:
    """Sessions over HTTP: the sign-in secret, the cookie, the header, the CSRF token.

    ``login_secret`` is new for every server run (random, printed in the sign-in link's
    fragment, never derived from a key) and works for any number of sign-ins while it runs.
    """

    store: SessionStore
    cookie: CookiePolicy = field(default_factory=CookiePolicy)
    login_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def check_login(self, offered: str) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(),
                                                     self.login_secret.encode())

    def start(self, label: str = "") -> NewSession:
        """Create a session. The caller sets its cookie (``set_cookie``) and hands
        ``header_value`` to the page's script, and nowhere else."""
        return self.store.create(label)

    def set_cookie(self, response: Response, new: NewSession) -> None:
        self.cookie.set(response, new.cookie_value,
                        new.session.expires_at - new.session.created_at)

    def current(self, conn: HTTPConnection) -> Authenticated | None:
        """The request's session if it carries both the cookie and the header, else None.
        Cached on the request (pages ask more than once)."""
        cached = conn.scope.get("capwallet.session", False)
        if cached is not False:
            return cached  # type: ignore[no-any-return]
        header = conn.headers.get(SESSION_HEADER, "")
        session = self.store.authenticate(conn.cookies.get(self.cookie.name, ""), header)
        auth = None if session is None else Authenticated(session, csrf_for(header.strip()))
        conn.scope["capwallet.session"] = auth
        return auth

    def session_id(self, conn: HTTPConnection) -> str | None:
        auth = self.current(conn)
        return None if auth is None else auth.session_id

    def check_csrf(self, conn: HTTPConnection, offered: str | None) -> bool:
        """Signed in (cookie + header), Origin (or Referer) is ours, and the token matches."""
        auth = self.current(conn)
        if auth is None or not offered or not same_origin_request(conn.headers,
                                                                  wallet_origin(conn)):
            return False
        return hmac.compare_digest(offered.encode(), auth.csrf.encode())

    def end_current(self, conn: HTTPConnection, response: Response) -> bool:
        auth = self.current(conn)
        self.cookie.clear(response)
        return auth is not None and self.store.end(auth.session_id)
