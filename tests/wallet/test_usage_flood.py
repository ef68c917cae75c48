"""Issue 13 F5: one app's refused calls cannot erase another app's spend from the wallet.

The review's flood: 20,000 refused calls in 80 s, each a ledger row, left the dashboard and
/api/usage (which read the newest 20,000 rows) showing no spend and no calls for the victim.
Spend figures now come from usage aggregates kept on settlement, and refusals are compacted.
The refusals are written through the store, as the relay writes them (a bounded fast path;
the relay's own refusal path is tested in tests/test_relay_deny.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from capwallet import caveats as cav
from capwallet.store import Hold, LedgerEntry, Reservation, open_store
from capwallet.wallet.grants import GrantStore, issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet

from .conftest import signed_in

CALL_COST = 1_250_000  # microunits of USD per victim call


def _row(token_id: str, app: str, status: str, cost: int, when: int) -> LedgerEntry:
    return LedgerEntry(time=when, token_id=token_id, app=app, provider="openai",
                       model="gpt-4o-mini", operation="chat", input_tokens=0 if cost == 0 else 9,
                       output_tokens=0 if cost == 0 else 16, cost=cost, currency="USD",
                       status=status, latency_ms=0)


async def _history(home: WalletHome, victim: str, attacker: str, now: int) -> None:
    store = open_store(home.store_url)
    try:
        for i in range(3):  # the victim's three settled calls, a few minutes earlier
            rid = secrets.token_hex(16)
            hold = Hold(f"victim-budget/{i}", CALL_COST, 10**12)
            assert (await store.reserve(Reservation(rid, victim, (hold,), now + 60,
                                                    created_at=now))).ok
            assert await store.settle(rid, {hold.counter_key: CALL_COST},
                                      _row(victim, "Victim", "ok", CALL_COST, now - 300 + i))
        # then 20,000 refusals of the attacker's token over 80 s
        for i in range(0, 20_000, 250):
            await asyncio.gather(*(store.append_ledger(
                _row(attacker, "Flooder", "denied:model_not_allowed", 0, now - 80 + (i + j) // 250))
                for j in range(250)))
    finally:
        await store.close()


def test_a_refusal_flood_leaves_the_victims_spend_and_calls(
        wallet: RunningWallet, home: WalletHome, keystore: Keystore) -> None:
    now = int(time.time())
    grants = GrantStore(home.db_path)
    try:
        victim, _ = issue_grant(grants, keystore.current_root_key, app="Victim",
                                caveats=[cav.Budget(500, "USD", "month")], source="cli", now=now)
        attacker, _ = issue_grant(grants, keystore.current_root_key, app="Flooder",
                                  caveats=[cav.Models(("gpt-4o",))], source="cli", now=now)
    finally:
        grants.close()
    asyncio.run(_history(home, victim.grant_id, attacker.grant_id, now))
    with signed_in(wallet) as client:
        usage = client.get("/api/usage").json()
        page = client.get("/")
    apps = {a["app"]: a for a in usage["apps"]}
    assert apps["Victim"]["calls"] == 3
    assert apps["Victim"]["models_used"] == ["gpt-4o-mini"]
    assert apps["Flooder"]["calls"] == 0
    spend = usage["spend"]
    assert spend["total"] == {"USD": 3 * CALL_COST}
    assert spend["calls"] == 3
    assert spend["by_app"] == [{"app": "Victim", "currency": "USD", "cost": 3 * CALL_COST,
                                "calls": 3}]
    assert spend["by_model"] == [{"model": "gpt-4o-mini (openai)", "currency": "USD",
                                  "cost": 3 * CALL_COST, "calls": 3}]
    assert sum(spend["by_day"]["USD"].values()) == 3 * CALL_COST
    # the flood is a couple of compacted rows, each with its count
    refused = [c for c in usage["calls"] if c["status"].startswith("denied")]
    assert sum(c["count"] for c in refused) == 20_000 and len(refused) <= 3
    assert page.status_code == 200 and "Victim" in page.text
