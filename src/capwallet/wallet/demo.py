"""`capwallet demo`: the whole story for a newcomer with no API key.

A temporary wallet (unless --home), the bundled fake provider standing in for OpenAI, the
wallet and relay on a loopback port, a sample app granted a budget, real calls through the
openai SDK (one refused, one through an attenuated token), then the spend and the dashboard
link. It also serves the web example (examples/web_app/) on a second loopback origin and
prints its URL: a page that connects to this wallet from the browser. By default it stops
after printing; --keep-running leaves both servers up.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capwallet import caveats as cav
from capwallet.money import format_micros
from capwallet.token import Token
from capwallet.wallet.grants import issue_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore, KeystoreError, read_passphrase
from capwallet.wallet.relay_config import RelaySetupError
from capwallet.wallet.runner import RunningWallet, running_wallet
from capwallet.wallet.usage import Snapshot, snapshot

APP = "Demo Blog Assistant"
PROMPTS = [
    ("gpt-4o-mini", "Suggest a title for a post about sourdough starters."),
    ("gpt-4o-mini", "Summarise this draft in one sentence: bread, patience, flour, water."),
    ("gpt-4.1-mini", "List three tags for a baking blog post."),
]


def _open_home(path: str | None, stack: contextlib.ExitStack) -> tuple[WalletHome, Keystore]:
    if path is None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="capwallet-demo-"))
        home = WalletHome(Path(tmp) / "wallet")
        home.ensure()
        # A throwaway wallet: a random passphrase, fast key derivation.
        return home, Keystore.create(home.keystore_path, secrets.token_urlsafe(16), "interactive")
    home = WalletHome.from_env(path)
    if home.exists():
        return home, Keystore.open(home.keystore_path, read_passphrase())
    home.ensure()
    passphrase = read_passphrase(confirm=True, prompt="Choose a passphrase for the demo wallet: ")
    return home, Keystore.create(home.keystore_path, passphrase)


def _calls(w: RunningWallet, token: str) -> list[dict[str, Any]]:
    import openai

    client = openai.OpenAI(api_key=token, base_url=f"{w.base_url}/v1", max_retries=0)
    out: list[dict[str, Any]] = []
    for model, prompt in PROMPTS:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=64)
        usage = r.usage
        out.append({"model": model, "ok": True, "prompt": prompt,
                    "output_tokens": usage.completion_tokens if usage else 0})
    # A sub-task gets an attenuated token: one cheap model, a 0.05 USD budget of its own, and
    # a name for the dashboard (an app caveat only labels; the grant keeps its own name).
    child = Token.parse(token).attenuate([
        cav.App("proofreader"), cav.Models(("gpt-4o-mini",)), cav.Budget(5, "USD", "total"),
    ]).serialize()
    sub = openai.OpenAI(api_key=child, base_url=f"{w.base_url}/v1", max_retries=0)
    r = sub.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Fix typos: teh bread"}],
        max_tokens=32)
    out.append({"model": "gpt-4o-mini", "ok": True, "prompt": "(attenuated sub-task token)",
                "output_tokens": r.usage.completion_tokens if r.usage else 0})
    # A model the user did not grant is refused by the relay, with a reason.
    try:
        sub.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        out.append({"model": "gpt-4.1-mini", "ok": True, "prompt": "(should be refused)"})
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        code = err.get("code") if isinstance(err, dict) else None
        out.append({"model": "gpt-4.1-mini", "ok": False, "status": exc.status_code,
                    "reason": code or str(exc.status_code),
                    "prompt": "(sub-task token, model not in its caveats)"})
    return out


def _spend(w: RunningWallet) -> Snapshot:
    import asyncio

    async def go() -> Snapshot:
        return await snapshot(w.ctx.grants, w.ctx.store, int(time.time()))

    return asyncio.run(go())


def _web_app(stack: contextlib.ExitStack, w: RunningWallet, say: Callable[..., None],
             keep_running: bool) -> str | None:
    """Serve examples/web_app/ on its own origin (another loopback port); its URL."""
    from urllib.parse import quote

    from capwallet.wallet.example_site import PAGE_PATH, missing_files, running_example_site

    missing = missing_files()
    if missing:
        say(f"Web app: not offered ({', '.join(missing)} missing; run `npm ci` in the "
            "repository)")
        return None
    origin = stack.enter_context(running_example_site())
    url = f"{origin}{PAGE_PATH}?wallet={quote(w.base_url, safe=':/')}"
    say(f"Web app: {url}\n   (a page on another origin: Connect your AI wallet, then ask"
        + (")" if keep_running else "; it needs `capwallet demo --keep-running`)"))
    return url


def run_demo(*, home: str | None, port: int, keep_running: bool, as_json: bool) -> int:
    from capwallet.cli.common import CliError
    from fake_provider import DEFAULT_API_KEY, running_fake_provider

    def say(*parts: object, flush: bool = False) -> None:
        if not as_json:
            print(*parts, flush=flush)

    try:
        import openai  # noqa: F401 - the calls below need it
    except ImportError:
        # Installed without the demo's extra (`pipx install .`): say so before starting anything.
        raise CliError("capwallet demo makes its calls with the official openai SDK, which is "
                       "not installed here: pipx install '.[demo]' (or pip install "
                       "'capwallet[demo]'); make demo's .venv has it") from None

    with contextlib.ExitStack() as stack:
        try:
            wallet_home, ks = _open_home(home, stack)
        except KeystoreError as exc:
            raise CliError(str(exc)) from None
        say("capwallet demo: no API key needed, a bundled fake provider stands in for OpenAI.\n")
        say(f"1. Wallet in {wallet_home.path} (provider keys sealed under a passphrase)")
        fake = stack.enter_context(running_fake_provider())
        ks.add_provider("openai", DEFAULT_API_KEY, f"{fake}/v1", "openai")
        ks.save()
        say(f"2. Fake provider at {fake}; its key is in the wallet, never in the app")
        try:
            w = stack.enter_context(running_wallet(
                wallet_home, ks, port=port,
                started_by="capwallet demo --keep-running" if keep_running else "capwallet demo"))
        except RelaySetupError as exc:
            raise CliError(str(exc)) from None
        say(f"3. Wallet and relay running at {w.base_url} (loopback only)")
        now = int(time.time())
        grant, token = issue_grant(
            w.ctx.grants, ks.current_root_key, app=APP, source="cli", now=now,
            caveats=[cav.App(APP), cav.Expires(now + 7 * 86400),
                     cav.Providers(("openai",)), cav.Models(("gpt-4.1-mini", "gpt-4o-mini")),
                     cav.Budget(500, "USD", "month"), cav.MaxInputTokens(8000),
                     cav.ConfirmAbove(50, "USD"), cav.Logging("metadata")],
        )
        say(f'4. Granted "{APP}": openai gpt-4o-mini and gpt-4.1-mini, 5.00 USD per month, '
            "8000 input tokens per request, asks above 0.50 USD, 7 days")
        say(f"   grant id {grant.grant_id} (the app holds a token, never the provider key)")
        say(f"5. The app calls models with the openai SDK, base_url={w.base_url}/v1")
        calls = _calls(w, token)
        for c in calls:
            if c["ok"]:
                say(f"   ok      {c['model']:<13} {c['prompt'][:58]}")
            else:
                say(f"   refused {c['model']:<13} {c['reason']} {c['prompt']}")
        snap = _spend(w)
        row = next(r for r in snap.apps if r.grant.grant_id == grant.grant_id)
        spent = row.budgets[0] if row.budgets else None
        say(f"6. Spend: {APP}: {spent.text() if spent else '-'} "
            f"({row.calls} calls logged; models used: {', '.join(row.models_used)})")
        for name, cur, cost, n in snap.spend_by("model"):
            say(f"   {name:<28} {n} call{'s' if n != 1 else ' '}  {format_micros(cost, cur)}")
        for t in row.subtasks:  # the attenuated token's calls, told apart from the app's
            say(f"   sub-task {t.label or ''} ({t.chain_id[:8]}): {t.calls} call"
                f"{'s' if t.calls != 1 else ''}; " + "; ".join(t.words()))
        say(f"\nDashboard: {w.login_url}")
        web_url = _web_app(stack, w, say, keep_running)
        if as_json:
            print(json.dumps({
                "home": str(wallet_home.path), "wallet_url": w.base_url,
                "dashboard_url": w.login_url, "relay_url": f"{w.base_url}/v1",
                "web_app_url": web_url,
                "grant_id": grant.grant_id, "calls": calls,
                "spend": {"spent": spent.spent if spent else 0,
                          "limit": spent.limit if spent else 0,
                          "currency": spent.currency if spent else None},
                "per_model": [{"model": n, "currency": c, "cost": v, "calls": k}
                              for n, c, v, k in snap.spend_by("model")],
                "subtasks": [{"chain_id": t.chain_id, "label": t.label, "calls": t.calls,
                              "limits": t.words()} for t in row.subtasks],
            }, indent=2), flush=True)
        if keep_running:
            say("The wallet keeps running; open the dashboard link above (it signs you in)"
                + (", then the web app" if web_url else "") + ". Stop with Ctrl-C.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        else:
            say("(The demo wallet stops now; `capwallet demo --keep-running` leaves it up.)")
    return 0
