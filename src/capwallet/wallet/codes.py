"""Authorization codes: one-time, short-lived, bound to a redirect URI and a PKCE challenge.

Codes live in memory: they last a minute and the wallet server is one process. A code is
burnt by its first use, successful or not (a wrong verifier does not get a second try). A
code presented after it was redeemed is a replay: RFC 6749 section 4.1.2 says the tokens it
produced should be revoked, so ``redeem`` reports the grant for the caller to revoke.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass

CODE_TTL = 60
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 section 4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # base64url(SHA-256), no padding


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str) -> bool:
    return _CHALLENGE.fullmatch(challenge) is not None


class CodeError(Exception):
    """OAuth token error: ``error`` is the RFC 6749 code, ``replayed_grant`` set on replay.

    ``origin`` is the web origin of the code's grant when the code was known (None when not):
    the token endpoint lets that origin, and only it, read the error through CORS."""

    def __init__(self, error: str, description: str, replayed_grant: str | None = None,
                 origin: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.replayed_grant = replayed_grant
        self.origin = origin


@dataclass(frozen=True, slots=True)
class CodeEntry:
    grant_id: str
    token: str
    redirect_uri: str
    challenge: str
    expires_at: int
    details: str  # the granted authorization_details (JSON)
    origin: str = ""  # the grant's web origin; "" for a native app

    def __repr__(self) -> str:  # never show the token
        return f"CodeEntry(grant_id={self.grant_id!r}, expires_at={self.expires_at})"


class CodeBook:
    def __init__(self) -> None:
        self._live: dict[str, CodeEntry] = {}
        # code hash -> (grant id, grant origin, forget after)
        self._spent: dict[str, tuple[str, str, int]] = {}
        self._lock = threading.Lock()

    def issue(self, entry: CodeEntry) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._live[_h(code)] = entry
        return code

    def redeem(self, code: str, redirect_uri: str, verifier: str, now: int,
               origin: str | None = None) -> CodeEntry:
        """Burn the code and return its entry, or raise CodeError.

        ``origin`` is the request's Origin header (None for a call that sends none, such as
        a native app's): a code presented from a web origin other than its grant's is refused
        and NOT burnt, so another page cannot spoil the real app's exchange."""
        key = _h(code)
        with self._lock:
            self._sweep(now)
            entry = self._live.get(key)
            if entry is None:
                spent = self._spent.get(key)
                if spent is not None:
                    raise CodeError("invalid_grant", "this code was already used",
                                    replayed_grant=spent[0], origin=spent[1] or None)
                raise CodeError("invalid_grant", "unknown or expired code")
            if origin is not None and origin != entry.origin:
                raise CodeError("invalid_grant", "this code was issued to another origin"
                                if entry.origin else "this code was issued to a native app, "
                                "not to a web page")
            del self._live[key]
            self._spent[key] = (entry.grant_id, entry.origin, now + 3600)
        theirs = entry.origin or None
        if now >= entry.expires_at:
            raise CodeError("invalid_grant", "the code has expired", origin=theirs)
        if not hmac.compare_digest(redirect_uri.encode(), entry.redirect_uri.encode()):
            raise CodeError("invalid_grant", "redirect_uri does not match the authorization",
                            origin=theirs)
        if not _VERIFIER.fullmatch(verifier):
            raise CodeError("invalid_grant", "code_verifier must be 43-128 unreserved characters",
                            origin=theirs)
        if not hmac.compare_digest(s256(verifier).encode(), entry.challenge.encode()):
            raise CodeError("invalid_grant", "code_verifier does not match the code_challenge",
                            origin=theirs)
        return entry

    def _sweep(self, now: int) -> None:
        for k in [k for k, e in self._live.items() if e.expires_at + CODE_TTL < now]:
            gone = self._live.pop(k)
            self._spent[k] = (gone.grant_id, gone.origin, now + 3600)
        for k in [k for k, (_, _, until) in self._spent.items() if until < now]:
            del self._spent[k]


def _h(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()
