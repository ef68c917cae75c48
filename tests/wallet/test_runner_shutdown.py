"""Stopping the wallet while a call is in flight (wallet/stopping.py: the ordered stop).

The provider answers a call only after the wallet was told to stop. The call must still be
settled into the store (its spend recorded, its reservation closed) before the stores close,
nothing may use a store after it closed, and the app gets its answer, or, past the stop's
grace, a clean 503 with a reason code. The old runner cut requests after 3 s with a 500,
waited 10 s for the server thread and then closed the stores from the main thread underneath
the relay's settlement ("settle failed ... store is closed": the spend went unrecorded).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from capwallet import caveats as cav
from capwallet.store import open_store
from capwallet.store.base import LedgerEntry
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import ServeOptions, running_wallet
from fake_provider import DEFAULT_API_KEY, running_fake_provider

from .conftest import PASSPHRASE


def _stop_during_a_call(home: WalletHome, delay_ms: int,
                        options: ServeOptions) -> tuple[dict[str, Any], str, float]:
    """Start a call the provider answers after ``delay_ms``, stop the wallet while it waits.
    Returns the call's outcome ("reply" or "error"), its token id and how long the stop took."""
    outcome: dict[str, Any] = {}
    with running_fake_provider() as fake:
        ks = Keystore.open(home.keystore_path, PASSPHRASE)
        ks.add_provider("openai", DEFAULT_API_KEY, f"{fake}/v1", "openai")
        ks.save()
        r = httpx.post(f"{fake}/_fake/faults", json={"mode": f"delay:{delay_ms}"})
        assert r.status_code == 200, r.text
        with running_wallet(home, ks, options=options) as w:
            grant, token = issue_grant(
                w.ctx.grants, ks.current_root_key, app="slow",
                caveats=[cav.Budget(5_000_000, "USD", "month")], source="cli", now=w.ctx.now())
            client = openai.OpenAI(api_key=token, base_url=w.base_url + "/v1", max_retries=0,
                                   timeout=60)

            def call() -> None:
                try:
                    outcome["reply"] = client.chat.completions.create(
                        model="gpt-4o-mini", max_tokens=8,
                        messages=[{"role": "user", "content": "hi"}])
                except openai.APIError as exc:
                    outcome["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            _wait_for_model_call(fake, time.monotonic() + 30)
            stop = time.monotonic()
        # running_wallet has returned: the server stopped and closed its stores, in order.
        stopped_after = time.monotonic() - stop
        caller.join(60)
        assert not caller.is_alive()
    return outcome, grant.grant_id, stopped_after


def _wait_for_model_call(fake: str, deadline: float) -> None:
    """Until the fake provider has the call (it then sleeps before answering)."""
    while time.monotonic() < deadline:
        recorded = httpx.get(f"{fake}/_fake/requests", timeout=10).json()
        if any(r["path"].endswith("/chat/completions") for r in recorded):
            return
        time.sleep(0.05)
    raise AssertionError("the call never reached the provider")


def _ledger(home: WalletHome, token_id: str) -> list[LedgerEntry]:
    async def read() -> list[LedgerEntry]:
        store = open_store(home.store_url)
        try:
            return await store.ledger(token_ids=[token_id])
        finally:
            await store.close()

    return asyncio.run(read())


def _store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if "store is closed" in rec.getMessage() or "settle failed" in rec.getMessage()]


def test_a_call_in_flight_at_stop_finishes_and_is_settled(
        home: WalletHome, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    # 12 s: longer than the old runner's 10 s wait for its server thread, well inside the
    # stop's grace for requests in flight (DRAIN_S, 30 s).
    outcome, token_id, stopped_after = _stop_during_a_call(home, 12_000, ServeOptions(port=0))
    rows = _ledger(home, token_id)
    assert len(rows) == 1, rows  # the spend is recorded
    assert rows[0].status == "ok" and rows[0].output_tokens > 0 and rows[0].cost > 0, rows[0]
    assert not _store_errors(caplog)
    assert "reply" in outcome, outcome  # the app got its answer
    assert outcome["reply"].usage.completion_tokens == rows[0].output_tokens
    assert stopped_after >= 12 - 2, stopped_after  # the stop waited for it


def test_a_call_past_the_grace_is_cut_cleanly_and_still_settled(
        home: WalletHome, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    outcome, token_id, _ = _stop_during_a_call(home, 4_000, ServeOptions(port=0, drain=1))
    err = outcome.get("error")
    assert isinstance(err, openai.InternalServerError) and err.status_code == 503, outcome
    assert isinstance(err.body, dict) and err.body.get("code") == "wallet_stopping", err.body
    # The relay settled the call the provider answered after the cut, before the stores closed.
    rows = _ledger(home, token_id)
    assert len(rows) == 1 and rows[0].output_tokens > 0 and rows[0].cost > 0, rows
    assert not _store_errors(caplog)
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
