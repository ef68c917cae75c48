"""The wallet from the terminal: init, provider, grant, apps, usage, revoke, serve, demo.

The state lives in CAPWALLET_HOME (or --home). Commands that need a provider key or a root key
unlock the keystore with the passphrase (asked at the terminal, or CAPWALLET_PASSPHRASE);
``apps``, ``usage`` and ``revoke`` need no passphrase, so revoking is never slowed down.
A provider key is read from standard input or from the environment variable named by
--key-env, never from the command line, and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import re
import sys
import time
from typing import Any

from capwallet import caveats as cav
from capwallet.cli.caveat_flags import add_caveat_flags, caveats_from_args
from capwallet.cli.common import CliError, print_json
from capwallet.money import format_micros
from capwallet.provider_url import BaseUrlError, check_base_url
from capwallet.store import open_store
from capwallet.store.base import Store, StoreUnavailable
from capwallet.wallet.authorization import web_origin
from capwallet.wallet.grants import Grant, GrantStore, issue_grant, revoke_grant
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import (
    APIS,
    DEFAULT_BASE_URLS,
    Keystore,
    KeystoreError,
    read_passphrase,
    read_passphrase_file,
)
from capwallet.wallet.provider_check import ProviderCheckError, check_key
from capwallet.wallet.usage import Snapshot, limit_words, result_words, snapshot

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,39}")


def register(sub: Any) -> None:
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", metavar="DIR",
                      help="wallet folder (default: $CAPWALLET_HOME or ~/.capwallet)")

    p = sub.add_parser("init", parents=[home], help="create a wallet (asks for a passphrase)",
                       description="Create the wallet folder, its database and the keystore "
                                   "sealed with your passphrase.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("provider", help="add, list or remove provider API keys",
                       description="Provider accounts whose API keys the wallet holds.")
    psub = p.add_subparsers(dest="provider_command", required=True, metavar="ACTION",
                            parser_class=type(p))
    a = psub.add_parser("add", parents=[home], help="add or replace a provider's API key",
                        allow_abbrev=False,  # "--key sk-..." must not mean "--key-env sk-..."
                        description="Add a provider key. The key is read from standard input "
                                    "(typed without echo at a terminal) or from the environment "
                                    "variable named by --key-env; never from the command line.")
    a.add_argument("name", metavar="NAME", help="provider id, e.g. openai or anthropic")
    a.add_argument("--api", choices=APIS, help="API flavor (default: NAME if known, else openai)")
    a.add_argument("--base-url", metavar="URL",
                   help="API base URL as the provider's SDK uses it (default: the provider's)")
    a.add_argument("--key-env", metavar="VAR", help="read the key from this environment variable")
    a.add_argument("--check", action="store_true",
                   help="check the key with one free call (list models) before saving it")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_provider_add)
    ls = psub.add_parser("list", parents=[home], help="list providers (never their keys)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_provider_list)
    rm = psub.add_parser("remove", parents=[home], help="forget a provider's key")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--json", action="store_true")
    rm.set_defaults(func=cmd_provider_remove)

    p = sub.add_parser("grant", parents=[home], help="grant an app a token (prints it once)",
                       description="Mint a token for an app with the given limits, record the "
                                   "grant in the wallet, and print the token once.")
    add_caveat_flags(p, origin=False)
    p.add_argument("--origin", metavar="ORIGIN",
                   help="the web app's origin (https://notes.example, or http://localhost:5500 "
                        "for development): its pages may then call the relay from the browser, "
                        "and the token is bound to it (an origin caveat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("apps", parents=[home], help="apps you granted, their spend and expiry")
    p.add_argument("--all", action="store_true", help="include revoked and expired grants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apps)

    p = sub.add_parser("usage", parents=[home], help="calls made with your grants")
    p.add_argument("--app", metavar="NAME", help="only this app")
    p.add_argument("--since", metavar="DATE", help="2026-11-01, or 7d for the last 7 days")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N calls (50)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("revoke", parents=[home], help="revoke a grant now (no passphrase needed)")
    p.add_argument("grant_id", metavar="ID", help="grant id, or a unique prefix of it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("serve", parents=[home],
                       help="run the wallet pages and the relay on 127.0.0.1",
                       description="Run the wallet's web pages and the relay in one process on "
                                   "127.0.0.1, with provider keys from the keystore.")
    p.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 picks one)")
    p.add_argument("--open", action="store_true", help="open the dashboard in your browser")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line (wallet_url, dashboard_url: the sign-in link, "
                        "relay_url) instead of the text, for a script that starts it")
    h = p.add_argument_group(
        "on a server", "Run the wallet behind a reverse proxy (Caddy) that terminates TLS; see "
        "README 'Run your wallet on a server'.")
    h.add_argument("--public-url", metavar="URL",
                   help="the https URL the wallet is reached at, e.g. https://wallet.example.com; "
                        "used in every URL the wallet publishes, and the only Host it answers")
    h.add_argument("--trusted-proxy", metavar="ADDR", action="append", default=[],
                   help="believe X-Forwarded-For/-Proto only from this address or network "
                        "(repeatable; e.g. 127.0.0.1 for a proxy on the same machine)")
    h.add_argument("--listen", metavar="ADDR", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: only a local proxy reaches it)")
    h.add_argument("--passphrase-file", metavar="PATH",
                   help="read the keystore passphrase from this file (owner-only, e.g. a systemd "
                        "credential) so the server starts unattended")
    h.add_argument("--store", metavar="URL",
                   help="relay store: default the wallet's SQLite file; redis://host:6379/0 when "
                        "several relay processes share budgets")
    h.add_argument("--tls-cert", metavar="PEM", help="serve TLS directly (certificate chain)")
    h.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="see the whole story with a bundled fake provider",
                       description="Start a wallet and relay with a bundled fake provider (no "
                                   "API key needed), grant a sample app, make calls through "
                                   "the openai SDK, and print the dashboard URL and the spend.")
    p.add_argument("--home", metavar="DIR", help="wallet folder (default: a temporary one)")
    p.add_argument("--port", type=int, default=0, help="wallet port (default: any free port)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the server up after the demo (Ctrl-C to stop)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


# --- helpers ----------------------------------------------------------------------------------

def _home(args: Any) -> WalletHome:
    return WalletHome.from_env(getattr(args, "home", None))


def _existing(args: Any) -> WalletHome:
    home = _home(args)
    if not home.exists():
        raise CliError(f"no wallet at {home.path}: run `capwallet init` first")
    return home


def unlock(home: WalletHome) -> Keystore:
    """Open the keystore; a wrong passphrase is one clear line and exit 2."""
    try:
        return Keystore.open(home.keystore_path, read_passphrase())
    except KeystoreError as exc:
        raise CliError(str(exc)) from None


def _store(home: WalletHome) -> Store:
    try:
        return open_store(home.store_url)
    except (ValueError, StoreUnavailable) as exc:
        raise CliError(f"cannot open the usage store: {exc}") from None


def printable(text: str, width: int | None = None) -> str:
    """App-given text for a terminal: control characters (escape sequences) become '?'."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    if width is not None and len(clean) > width:
        clean = clean[: width - 1] + "…"
    return clean


def _iso(t: int | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def _short(t: int | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _read_key(args: Any) -> str:
    if args.key_env:
        if not _ENV_NAME.fullmatch(args.key_env):
            # Never echo it: it may be a key typed where a variable name belongs.
            raise CliError("--key-env takes the NAME of an environment variable, like OPENAI_KEY")
        key = os.environ.get(args.key_env, "")
        if not key:
            raise CliError(f"environment variable {args.key_env} is not set or empty")
    elif sys.stdin.isatty():
        key = getpass.getpass(f"API key for {args.name} (not shown): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise CliError("no API key given (pipe it on standard input or use --key-env VAR)")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise CliError("the API key has spaces or control characters; check what was pasted")
    return key


# --- commands ---------------------------------------------------------------------------------

def cmd_init(args: Any) -> int:
    home = _home(args)
    if home.exists():
        raise CliError(f"a wallet already exists at {home.path}")
    try:
        passphrase = read_passphrase(confirm=True, prompt="Choose a wallet passphrase: ")
        home.ensure()
        ks = Keystore.create(home.keystore_path, passphrase)
    except KeystoreError as exc:
        raise CliError(str(exc)) from None
    GrantStore(home.db_path).close()
    asyncio.run(_close(_store(home)))
    if args.json:
        print_json({"home": str(home.path), "root_key_id": ks.current_root_key.key_id.hex()})
    else:
        print(f"Created your wallet in {home.path}")
        print("Next: add a provider key with `capwallet provider add openai` "
              "(or try `capwallet demo`).")
    return 0


async def _close(store: Store) -> None:
    await store.close()


def cmd_provider_add(args: Any) -> int:
    home = _existing(args)
    name = args.name
    if not _PROVIDER_ID.fullmatch(name):
        raise CliError("provider id must be lowercase letters, digits, '-', '_' or '.'")
    api = args.api or (name if name in APIS else "openai")
    base_url = args.base_url or DEFAULT_BASE_URLS.get(name)
    if not base_url:
        raise CliError(f"no default base URL for {name!r}: give --base-url")
    try:
        base_url = check_base_url(base_url)
    except BaseUrlError as exc:
        raise CliError(f"--base-url: {exc}") from None
    key = _read_key(args)
    models = None
    if args.check:
        try:
            models = check_key(api, base_url, key)
        except ProviderCheckError as exc:
            raise CliError(f"key not saved: {exc}") from None
    ks = unlock(home)
    ks.add_provider(name, key, base_url, api)
    ks.save()
    if args.json:
        print_json({"name": name, "api": api, "base_url": base_url, "checked": args.check,
                    "models_visible": models})
    else:
        checked = f" (checked: {models} models visible)" if models is not None else ""
        print(f"Saved the {name} key{checked}.")
    return 0


def cmd_provider_list(args: Any) -> int:
    ks = unlock(_existing(args))
    entries = [p.public() for p in sorted(ks.providers.values(), key=lambda p: p.name)]
    if args.json:
        print_json(entries)
    elif not entries:
        print("No providers yet: `capwallet provider add openai`.")
    else:
        print(_table(["PROVIDER", "API", "BASE URL", "ADDED"],
                     [[e["name"], e["api"], e["base_url"], _short(e["added_at"])]
                      for e in entries]))
    return 0


def cmd_provider_remove(args: Any) -> int:
    ks = unlock(_existing(args))
    if not ks.remove_provider(args.name):
        raise CliError(f"no provider named {args.name!r}")
    ks.save()
    if args.json:
        print_json({"name": args.name, "removed": True})
    else:
        print(f"Removed the {args.name} key.")
    return 0


def cmd_grant(args: Any) -> int:
    home = _existing(args)
    if not args.app:
        raise CliError("say who the grant is for: --app NAME")
    origin = ""
    if args.origin:
        try:
            origin = web_origin(args.origin)
        except ValueError as exc:
            raise CliError(f"--origin {args.origin!r}: {exc}") from None
    now = int(time.time())
    caveats = caveats_from_args(args, now)
    ks = unlock(home)
    grants = GrantStore(home.db_path)
    try:
        if origin:  # bound to it: a page on another origin is refused (origin_mismatch)
            caveats.append(cav.Origin(origin))
        grant, token = issue_grant(grants, ks.current_root_key, app=args.app, caveats=caveats,
                                   source="cli", now=now, origin=origin)
    finally:
        grants.close()
    if args.json:
        print_json({"grant_id": grant.grant_id, "app": grant.app, "token": token,
                    "origin": grant.origin or None, "expires_at": _iso(grant.expires_at)})
    else:
        if not args.budget:
            print("capwallet: warning: this grant has no --budget, so no spend limit",
                  file=sys.stderr)
        print(f"Granted {printable(grant.app)} (grant {grant.grant_id}). The token, shown once:",
              file=sys.stderr)
        print(token)
    return 0


def _snapshot(home: WalletHome, days: int, statuses: tuple[str, ...]) -> Snapshot:
    async def go() -> Snapshot:
        store = _store(home)
        grants = GrantStore(home.db_path)
        try:
            return await snapshot(grants, store, int(time.time()), days=days, statuses=statuses)
        finally:
            grants.close()
            await store.close()
    try:
        return asyncio.run(go())
    except StoreUnavailable as exc:
        raise CliError(f"the usage store is unavailable: {exc}") from None


def cmd_apps(args: Any) -> int:
    home = _existing(args)
    snap = _snapshot(home, 90, ("active", "revoked"))
    now = snap.now
    rows = [r for r in snap.apps if args.all or r.grant.is_live(now)]
    if args.json:
        print_json([r.to_json() for r in rows])
        return 0
    if not rows:
        print("No apps yet." if not snap.apps else "No live grants (--all shows revoked ones).")
        return 0
    table = []
    for r in rows:
        lim = r.grant.limits
        granted = ", ".join(sorted(lim.models)) if lim.models else "any model"
        providers = ", ".join(sorted(lim.providers)) if lim.providers else "any"
        spend = "; ".join([b.text() for b in r.budgets] + limit_words(r.grant)) or "no limit"
        state = r.grant.status if r.grant.status != "active" else (
            "expired" if not r.grant.is_live(now) else _short(r.grant.expires_at))
        table.append([
            printable(r.app, 24), r.grant.grant_id[:12], printable(providers, 20),
            printable(granted, 36), spend, printable(", ".join(r.models_used) or "-", 30),
            _short(r.last_use), state,
        ])
        for t in r.subtasks:  # under its grant, marked, with its own limits
            tlim = t.limits
            table.append([
                "  sub-task" + (f" {printable(t.label, 12)}" if t.label else ""), t.chain_id[:12],
                printable(", ".join(sorted(tlim.providers)) if tlim.providers else "any", 20),
                printable(", ".join(sorted(tlim.models)) if tlim.models else "any model", 36),
                "; ".join([b.text() for b in t.budgets] + [c.text() for c in t.counters])
                or "the grant's", f"{t.calls} call" + ("s" if t.calls != 1 else ""),
                _short(t.last_use), _short(tlim.expires),
            ])
    print(_table(["APP", "ID", "PROVIDERS", "MODELS GRANTED", "SPENT / LIMITS", "MODELS USED",
                  "LAST USE", "EXPIRES"], table))
    return 0


def _since(text: str | None, now: int) -> int:
    if text is None:
        return now - 30 * 86400
    m = re.fullmatch(r"(\d{1,5})d", text.strip())
    if m:
        return now - int(m.group(1)) * 86400
    try:
        d = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"--since: cannot read {text!r}; use 2026-11-01 or 7d") from None
    return int(dt.datetime.combine(d, dt.time(), dt.UTC).timestamp())


def cmd_usage(args: Any) -> int:
    home = _existing(args)
    now = int(time.time())
    since = _since(args.since, now)
    days = max(1, (now - since) // 86400 + 1)
    snap = _snapshot(home, days, ("active", "revoked"))
    calls = [c for c in snap.calls if c.entry.time >= since
             and (args.app is None or c.app == args.app)][: max(args.limit, 0)]
    if args.json:
        print_json([c.to_json() for c in calls])
        return 0
    if not calls:
        print("No calls in that time." if args.app is None else
              f"No calls by {printable(args.app)} in that time.")
        return 0
    print(_table(
        ["TIME (UTC)", "APP", "MODEL", "IN", "OUT", "COST", "RESULT"],
        [[_short(c.entry.time),
          printable(c.app, 24) + (f" (sub-task {c.entry.chain_id[:8]})" if c.subtask else ""),
          printable(c.entry.model or "-", 30),
          str(c.entry.input_tokens), str(c.entry.output_tokens),
          format_micros(c.entry.cost, c.entry.currency) if c.entry.currency else "-",
          # in words as on the dashboard ("refused: model not allowed"); --json keeps the code
          printable(result_words(c.entry.status)
                    + (f" x{c.entry.count}" if c.entry.count > 1 else ""), 40)]
         for c in calls]))
    totals: dict[str, int] = {}
    for c in calls:
        if c.entry.currency:
            totals[c.entry.currency] = totals.get(c.entry.currency, 0) + c.entry.cost
    print("Total: " + (", ".join(format_micros(v, k) for k, v in sorted(totals.items())) or "0"))
    return 0


def _find_grant(grants: GrantStore, text: str) -> Grant:
    matches = grants.find(text.strip().lower())
    if not matches:
        raise CliError(f"no grant with id {text!r} (see `capwallet apps --all`)")
    if len(matches) > 1:
        raise CliError(f"{text!r} matches {len(matches)} grants; give more of the id")
    return matches[0]


def cmd_revoke(args: Any) -> int:
    home = _existing(args)
    grants = GrantStore(home.db_path)
    try:
        grant = _find_grant(grants, args.grant_id)

        async def go() -> bool:
            store = _store(home)
            try:
                return await revoke_grant(grants, store, grant.grant_id, int(time.time()))
            finally:
                await store.close()
        try:
            changed = asyncio.run(go())
        except StoreUnavailable as exc:
            raise CliError(f"not revoked: the usage store is unavailable: {exc}") from None
    finally:
        grants.close()
    if args.json:
        print_json({"grant_id": grant.grant_id, "revoked": True, "was_active": changed})
    else:
        what = "Revoked" if changed else "Already revoked:"
        print(f"{what} {printable(grant.app)} (grant {grant.grant_id}).")
    return 0


def cmd_serve(args: Any) -> int:
    from capwallet.wallet.deployment import (
        Deployment,
        DeploymentError,
        parse_public_url,
        parse_trusted_proxies,
    )
    from capwallet.wallet.runner import ServeOptions, serve_forever

    try:
        public = parse_public_url(args.public_url) if args.public_url else None
        proxies = parse_trusted_proxies(args.trusted_proxy)
    except DeploymentError as exc:
        raise CliError(str(exc)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if args.listen not in ("127.0.0.1", "::1", "localhost"):
        if public is None:
            raise CliError("--listen on a non-loopback address needs --public-url (the Host "
                           "the wallet answers to)")
        if not args.tls_cert and not proxies:
            # Plain http on a public interface would carry the passphrase sign-in and the
            # session secrets in the clear while the wallet claims an https URL.
            raise CliError("--listen on a non-loopback address serves plain http: give "
                           "--tls-cert/--tls-key, or name the TLS proxy with --trusted-proxy")
    home = _existing(args)
    if args.passphrase_file:
        try:
            ks = Keystore.open(home.keystore_path, read_passphrase_file(args.passphrase_file))
        except KeystoreError as exc:
            raise CliError(str(exc)) from None
    else:
        ks = unlock(home)
    options = ServeOptions(
        port=args.port, listen=args.listen, store_url=args.store,
        deployment=Deployment(public_origin=public, trusted_proxies=proxies),
        tls_cert=args.tls_cert, tls_key=args.tls_key,
    )
    return serve_forever(home, ks, options=options, open_browser=args.open, as_json=args.json)


def cmd_demo(args: Any) -> int:
    from capwallet.wallet.demo import run_demo

    return run_demo(home=args.home, port=args.port, keep_running=args.keep_running,
                    as_json=args.json)
