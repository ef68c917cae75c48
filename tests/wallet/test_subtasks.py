"""Issue 14: calls made with a sub-task's token (attenuated offline from an app's grant) are
told apart from the app's own, shown under the grant, marked, with the sub-task's own limits.

Real components: the wallet server with its relay, the fake provider, the real openai SDK
calling with the parent token and with tokens attenuated from it, /api/usage read with a
signed-in session, and `capwallet apps/usage --json` as a user runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import openai
import pytest

from capwallet import caveats as cav
from capwallet.store import open_store
from capwallet.store.base import LedgerEntry
from capwallet.token import Token
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.runner import RunningWallet
from capwallet.wallet.usage import RECENT_LIMIT

from .conftest import signed_in


def _call(token: str, wallet: RunningWallet, model: str = "gpt-4o-mini") -> Any:
    client = openai.OpenAI(api_key=token, base_url=f"{wallet.base_url}/v1", max_retries=0)
    return client.chat.completions.create(model=model, max_tokens=20,
                                          messages=[{"role": "user", "content": "hello"}])


def _usage(wallet: RunningWallet, want_subtasks: int) -> dict[str, Any]:
    """/api/usage once the relay's background writes (chain records) have landed."""
    deadline = time.monotonic() + 10
    with signed_in(wallet) as client:
        while True:
            usage: dict[str, Any] = client.get("/api/usage").json()
            found = sum(len(a["subtasks"]) for a in usage["apps"])
            if found >= want_subtasks or time.monotonic() > deadline:
                return usage
            time.sleep(0.1)


def _cli(home: WalletHome, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "CAPWALLET_PASSPHRASE"}
    env["CAPWALLET_HOME"] = str(home.path)
    r = subprocess.run([sys.executable, "-m", "capwallet", *args], env=env, text=True,
                       capture_output=True, timeout=60, check=False, start_new_session=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def family(wallet_relay: RunningWallet) -> dict[str, str]:
    """A grant's token, a sub-task's token attenuated from it, and one from the sub-task."""
    ctx = wallet_relay.ctx
    _, parent = issue_grant(
        ctx.grants, ctx.keystore.current_root_key, app="Research Agent", source="cli",
        now=int(time.time()),
        caveats=[cav.App("Research Agent"), cav.Models(("gpt-4o-mini", "gpt-4.1-mini")),
                 cav.Budget(500, "USD", "month")])
    child = Token.parse(parent).attenuate([
        cav.App("summariser"), cav.Models(("gpt-4o-mini",)), cav.Budget(5, "USD", "total"),
        cav.TokenQuota(5000, "day"), cav.MaxOutputTokens(64)]).serialize()
    grandchild = Token.parse(child).attenuate([cav.Rate(3)]).serialize()
    return {"parent": parent, "child": child, "grandchild": grandchild}


def test_subtask_calls_are_told_apart_and_shown_with_their_limits(
        wallet_relay: RunningWallet, home: WalletHome, family: dict[str, str]) -> None:
    parent, child, grandchild = family["parent"], family["child"], family["grandchild"]
    ids = {k: Token.parse(t).chain_id for k, t in family.items()}
    assert len(set(ids.values())) == 3  # same token id, three chains
    _call(parent, wallet_relay)
    _call(parent, wallet_relay, "gpt-4.1-mini")
    _call(child, wallet_relay)
    _call(child, wallet_relay)
    _call(grandchild, wallet_relay)
    with pytest.raises(openai.PermissionDeniedError):  # the parent may; the sub-task may not
        _call(child, wallet_relay, "gpt-4.1-mini")

    usage = _usage(wallet_relay, 2)
    [app] = [a for a in usage["apps"] if a["app"] == "Research Agent"]
    assert app["calls"] == 5  # the grant counts every call made under it
    subs = {t["chain_id"]: t for t in app["subtasks"]}
    assert set(subs) == {ids["child"], ids["grandchild"]}  # the grant's own chain is not one
    sub = subs[ids["child"]]
    assert sub["parent"] is None and subs[ids["grandchild"]]["parent"] == ids["child"]
    # Named by the app caveat it appended; the one narrowed from it appended none.
    assert sub["label"] == "summariser" and subs[ids["grandchild"]]["label"] is None
    assert all(c["app"] == "Research Agent" for c in usage["calls"])  # the grant's name stays
    # Its own limits: the chain's effective limits, and the counters its caveats added.
    assert sub["limits"]["models"] == ["gpt-4o-mini"]
    assert sub["limits"]["max_output_tokens"] == 64
    [budget] = sub["budgets"]
    assert (budget["limit"], budget["currency"], budget["period"]) == (5, "USD", "total")
    assert 0 < budget["spent"] <= 5 * 10**6
    [quota] = sub["counters"]
    assert (quota["kind"], quota["limit"], quota["period"]) == ("quota", 5000, "day")
    assert quota["used"] > 0
    # The budget is debited by every call whose chain carries its caveat: the sub-task's own
    # calls and those of the sub-task narrowed from it.
    assert sub["calls"] == 2
    assert budget["spent"] == (sub["spend"]["USD"]
                               + subs[ids["grandchild"]]["spend"]["USD"])
    assert "models: gpt-4o-mini" in sub["words"]
    assert "up to 64 output tokens per call" in sub["words"]
    assert [c["kind"] for c in subs[ids["grandchild"]]["counters"]] == ["rate"]
    # Its words name only what it narrows: the models it shares with its parent are not news.
    [only] = subs[ids["grandchild"]]["words"]
    assert only.endswith(" of 3 requests this minute")
    assert subs[ids["grandchild"]]["limits"]["models"] == ["gpt-4o-mini"]  # still effective
    # Each ledger row names its chain; the sub-task's (its refusal too) are marked.
    calls = [c for c in usage["calls"] if c["app"] == "Research Agent"]
    by_chain = {(c["chain_id"], c["status"], c["subtask"]) for c in calls}
    assert by_chain == {(ids["parent"], "ok", False), (ids["child"], "ok", True),
                        (ids["grandchild"], "ok", True),
                        (ids["child"], "denied:model_not_allowed", True)}
    # The terminal says the same.
    cli_calls = json.loads(_cli(home, "usage", "--json"))
    assert sorted((c["chain_id"], c["subtask"]) for c in cli_calls if c["status"] == "ok") == \
        sorted([(ids["parent"], False)] * 2 + [(ids["child"], True)] * 2
               + [(ids["grandchild"], True)])
    [cli_app] = [a for a in json.loads(_cli(home, "apps", "--json"))
                 if a["app"] == "Research Agent"]
    assert {t["chain_id"] for t in cli_app["subtasks"]} == set(subs)
    table = _cli(home, "apps")
    [line] = [ln for ln in table.splitlines() if ids["child"][:12] in ln]
    assert line.startswith("  sub-task summariser ")  # indented under its grant's line
    assert "of 0.05 USD in total" in line and "of 5,000 model tokens today" in line
    assert f"(sub-task {ids['child'][:8]})" in _cli(home, "usage")


def test_a_token_without_subtasks_shows_none(wallet_relay: RunningWallet,
                                             family: dict[str, str]) -> None:
    _call(family["parent"], wallet_relay)
    usage = _usage(wallet_relay, 0)
    [app] = [a for a in usage["apps"] if a["app"] == "Research Agent"]
    assert app["subtasks"] == []
    assert [c["subtask"] for c in usage["calls"]] == [False]


def test_a_subtasks_calls_still_count_once_they_left_the_recent_calls(
        wallet_relay: RunningWallet, home: WalletHome, family: dict[str, str]) -> None:
    """The recent-calls list holds the newest RECENT_LIMIT rows of every app; a sub-task's
    count used to be read from it, so other traffic after its calls took the count to 0."""
    child = family["child"]
    child_id = Token.parse(child).chain_id
    for _ in range(3):
        _call(child, wallet_relay)

    async def flood() -> None:
        """More refused calls than the list holds, each from its own token, after the
        sub-task's: written to the wallet's store file on another connection, as a second
        relay process sharing the file writes them."""
        store = open_store(home.store_url)
        try:
            later = int(time.time()) + 1
            for _ in range(RECENT_LIMIT + 1):
                await store.append_ledger(LedgerEntry(
                    time=later, token_id=secrets.token_hex(16), app="", provider="", model="",
                    operation="chat", input_tokens=0, output_tokens=0, cost=0, currency="",
                    status="denied:bad_signature", latency_ms=0))
        finally:
            await store.close()

    asyncio.run(flood())
    usage = _usage(wallet_relay, 1)
    assert not [c for c in usage["calls"] if c["chain_id"] == child_id]  # out of the list
    [app] = [a for a in usage["apps"] if a["app"] == "Research Agent"]
    [sub] = app["subtasks"]
    assert sub["chain_id"] == child_id
    assert sub["calls"] == 3
    [budget] = sub["budgets"]  # its own budget counter saw exactly its three calls
    assert sub["spend"] == {"USD": budget["spent"]} and budget["spent"] > 0
    assert sub["last_use"] is not None
    with signed_in(wallet_relay) as client:
        page = client.get("/").text
    row = page.split(f'id="subtask-{child_id}"', 1)[1].split('class="subtask-limits', 1)[0]
    assert "· 3 calls" in row, row
