"""Grants: what the user gave each app, recorded in SQLite (table ``grants`` in wallet.db).

A grant is one minted root token: its id is the token id, so the relay's ledger, counters and
revocations (keyed on the token id) join onto it. The wallet stores the caveats, not the token:
a token is printed or handed over once and never kept. ``status`` is ``pending`` between the
user's approval and the app's code exchange, then ``active``, or ``revoked``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.limits import EffectiveLimits, effective
from capwallet.store.base import Store
from capwallet.token import mint
from capwallet.verify import CLOCK_SKEW
from capwallet.wallet.table import WalletTable

# Seconds past a grant's expiry, by the wallet's clock, during which a relay may still take its
# token: the verifier's allowance, by a relay's clock that may be as far behind (Grant.revocable).
REVOCABLE_AFTER_EXPIRY = 2 * CLOCK_SKEW

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    grant_id     TEXT PRIMARY KEY,       -- token id, 32 hex
    key_id       TEXT NOT NULL,          -- root key id, 16 hex
    app          TEXT NOT NULL,          -- display name the app gave (untrusted text)
    origin       TEXT NOT NULL DEFAULT '',
    redirect_uri TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL,          -- oauth | cli
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    caveats      TEXT NOT NULL,          -- JSON list of the caveats' signed text
    status       TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    revoked_at   INTEGER
);
CREATE INDEX IF NOT EXISTS grants_status ON grants(status);
"""


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    key_id: str
    app: str
    source: str
    created_at: int
    caveat_text: tuple[str, ...]
    status: str = "active"
    origin: str = ""
    redirect_uri: str = ""
    expires_at: int | None = None
    revoked_at: int | None = None
    _limits: list[EffectiveLimits] = field(default_factory=list, repr=False, compare=False)

    @property
    def caveats(self) -> list[cav.Caveat]:
        return [cav.decode(t.encode("utf-8")) for t in self.caveat_text]

    @property
    def limits(self) -> EffectiveLimits:
        """The grant's effective limits, with the counter ids the relay debits."""
        if not self._limits:
            raw = [t.encode("utf-8") for t in self.caveat_text]
            self._limits.append(
                effective(bytes.fromhex(self.grant_id), [(r, cav.decode(r)) for r in raw])
            )
        return self._limits[0]

    def is_live(self, now: int) -> bool:
        return self.status == "active" and (self.expires_at is None or now < self.expires_at)

    def revocable(self, now: int) -> bool:
        """Whether revoking it may still stop anything: it is active and a relay may still
        take its token. A relay takes it up to its expiry plus the verifier's clock allowance
        (CLOCK_SKEW) by the relay's clock, and that allowance is there because the relay's
        clock may differ from this wallet's by as much (spec/security.md): so up to
        REVOCABLE_AFTER_EXPIRY (twice CLOCK_SKEW) past its expiry by this wallet's clock.
        After that an expired grant is over, and the dashboard offers no Revoke button that
        would suggest it still works (revoking it stays harmless: the revoke route still takes
        it)."""
        return self.status == "active" and (
            self.expires_at is None or now < self.expires_at + REVOCABLE_AFTER_EXPIRY)


class GrantStore(WalletTable):
    """The grants table (wallet/table.py: one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def add(self, g: Grant) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO grants (grant_id, key_id, app, origin, redirect_uri, source, "
                "created_at, expires_at, caveats, status, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (g.grant_id, g.key_id, g.app, g.origin, g.redirect_uri, g.source, g.created_at,
                 g.expires_at, json.dumps(list(g.caveat_text)), g.status, g.revoked_at),
            )

    def activate(self, grant_id: str) -> bool:
        """pending -> active (the app has exchanged its code)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE grants SET status = 'active' WHERE grant_id = ? AND status = 'pending'",
                (grant_id,),
            )
            return cur.rowcount == 1

    def revoke(self, grant_id: str, now: int) -> bool:
        """Mark revoked; True if it was not already. The relay store's revocation is separate."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE grants SET status = 'revoked', revoked_at = ? "
                "WHERE grant_id = ? AND status != 'revoked'",
                (now, grant_id),
            )
            return cur.rowcount == 1

    def delete_pending_before(self, cutoff: int) -> int:
        """Forget approvals whose code was never exchanged: their token never left the wallet."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM grants WHERE status = 'pending' AND created_at < ?", (cutoff,)
            )
            return cur.rowcount

    def get(self, grant_id: str) -> Grant | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE grant_id = ?", (grant_id,)  # noqa: S608
            ).fetchone()
        return None if row is None else _grant(row)

    def find(self, prefix: str) -> list[Grant]:
        """Grants whose id starts with ``prefix`` (lowercase hex), for short ids on the CLI."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE substr(grant_id, 1, ?) = ?",  # noqa: S608
                (len(prefix), prefix),
            ).fetchall()
        return [_grant(r) for r in rows]

    def list(self, *, statuses: tuple[str, ...] = ("active", "revoked")) -> list[Grant]:
        """Newest first."""
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE status IN ({marks}) "  # noqa: S608
                "ORDER BY created_at DESC, grant_id",
                statuses,
            ).fetchall()
        return [_grant(r) for r in rows]

    def live_origins(self, now: int) -> frozenset[str]:
        """Origins of active, unexpired grants: the only origins the relay answers CORS for."""
        with self._lock:
            rows = self._db.execute(
                "SELECT origin FROM grants WHERE status = 'active' AND origin != '' "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (now,),
            ).fetchall()
        return frozenset(r[0] for r in rows)

    def pending_origins(self, now: int) -> frozenset[str]:
        """Origins of grants approved but not yet exchanged: the only origins /token's CORS
        preflight answers (the exchange itself is checked against the code's own grant)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT origin FROM grants WHERE status = 'pending' AND origin != '' "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (now,),
            ).fetchall()
        return frozenset(r[0] for r in rows)


_COLUMNS = (
    "grant_id, key_id, app, source, created_at, caveats, status, origin, redirect_uri, "
    "expires_at, revoked_at"
)


def _grant(row: tuple[object, ...]) -> Grant:
    (gid, kid, app, source, created, caveats, status, origin, redirect, expires, revoked) = row
    return Grant(
        grant_id=str(gid), key_id=str(kid), app=str(app), source=str(source),
        created_at=int(str(created)), caveat_text=tuple(json.loads(str(caveats))),
        status=str(status), origin=str(origin), redirect_uri=str(redirect),
        expires_at=None if expires is None else int(str(expires)),
        revoked_at=None if revoked is None else int(str(revoked)),
    )


def issue_grant(
    grants: GrantStore,
    key: RootKey,
    *,
    app: str,
    caveats: list[cav.Caveat],
    source: str,
    now: int,
    origin: str = "",
    redirect_uri: str = "",
    status: str = "active",
) -> tuple[Grant, str]:
    """Mint a root token for ``app`` under ``key``, record the grant, return it and the token.

    The caller hands the token to the app once; the wallet keeps only the caveats.
    """
    token = mint(key, caveats, now=now)
    expiries = [c.time for c in caveats if isinstance(c, cav.Expires)]
    grant = Grant(
        grant_id=token.token_id, key_id=token.key_id, app=app, source=source, created_at=now,
        caveat_text=tuple(t.decode("utf-8") for t in token.raw_caveats), status=status,
        origin=origin, redirect_uri=redirect_uri, expires_at=min(expiries) if expiries else None,
    )
    grants.add(grant)
    return grant, token.serialize()


async def revoke_grant(grants: GrantStore, store: Store, grant_id: str, now: int) -> bool:
    """Revoke a grant: in the relay store first (that is what stops calls), then the record.

    Revocation is by token id, so every token attenuated from the grant's token dies with it.
    Raises StoreUnavailable if the store cannot record it (the grant then stays active).
    """
    await store.revoke(grant_id, now)
    return grants.revoke(grant_id, now)
