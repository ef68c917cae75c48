"""npm clients (openai-node, the Vercel AI SDK with its OpenAI and Anthropic providers,
@anthropic-ai/sdk) against a real relay: tests/js/relay_clients.test.js run by Node's test
runner, with the relay's URL and tokens in its environment; then the ledger is checked here."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from relay_harness import Relay
from test_js_package import ROOT, _tool, npm_installed

from capwallet import caveats as cav

TESTS = Path(__file__).resolve().parent / "js" / "relay_clients.test.js"


def test_npm_clients(relay: Relay) -> None:
    npm_installed()
    token = relay.mint(cav.Budget(1000, "USD", "month"))
    capped = relay.mint(cav.MaxOutputTokens(12))
    env = {**os.environ, "RELAY_URL": relay.url, "TOKEN": token, "TOKEN_CAP": capped}
    done = subprocess.run([_tool("node"), "--test", str(TESTS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    assert passed and int(passed.group(1)) == 5, done.stdout[-2000:]
    rows = relay.wait_ledger(token, 6)
    ops = sorted((r.model, r.status) for r in rows)
    assert all(status == "ok" for _, status in ops), ops
    # Every Responses call and the token count were metered on the budget token.
    assert len(rows) >= 6 and sum(r.cost for r in rows) > 0
