"""Assemble and run the wallet server: keystore + grants + store + relay on 127.0.0.1.

The relay is the reference relay (reference_relay.create_app) configured from the keystore:
one provider entry per stored key, priced from the relay's default table, the same SQLite
store as the wallet, and the keystore's root keys. $CAPWALLET_HOME/relay.toml, if present,
may add [rates], [prices] and [relay] settings or replace the providers (their keys still come
from the keystore).

Stopping: wallet/stopping.py (the server closes the stores itself, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from capwallet.store import open_store
from capwallet.store.base import Store, StoreUnavailable
from capwallet.wallet.body_limit import BODY_TIMEOUT
from capwallet.wallet.context import WalletContext
from capwallet.wallet.deployment import Deployment
from capwallet.wallet.grants import GrantStore
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.pages import Pages
from capwallet.wallet.relay_config import RelaySetupError, relay_config_data
from capwallet.wallet.server import create_wallet_app, login_url
from capwallet.wallet.sessions import BrowserSessions, CookiePolicy, SessionStore
from capwallet.wallet.signin_state import Ceremonies, PasskeyStore, SignIn
from capwallet.wallet.stopping import DRAIN_S, CutAtStop, WalletServer, close_stores
from capwallet.wallet.throttle import SignInThrottle
from reference_relay.http_limits import HEAD_TIMEOUT, BoundedHttpToolsProtocol, set_head_timeout

T = TypeVar("T")

log = logging.getLogger("capwallet.wallet.runner")

# running_wallet: how long the caller waits for the server thread to end (its drain, the
# relay's grace for settlements, SETTLE_S, and some more); after it, the stores stay open.
JOIN_S = 90.0


def build_relay(home: WalletHome, keystore: Keystore, store: Store, wallet_url: str) -> ASGIApp:
    from reference_relay import create_app
    from reference_relay.config import ConfigError, parse_config

    try:
        config = parse_config(relay_config_data(home, keystore, wallet_url), home.path)
    except ConfigError as exc:
        raise RelaySetupError(f"relay configuration: {exc}") from None

    def provider_key(provider_id: str) -> str:
        entry = keystore.providers.get(provider_id)
        return "" if entry is None else entry.key

    app = create_app(config, store=store, keys=keystore.keyring(), provider_keys=provider_key)
    # Keep provider keys and tokens out of every log line the server writes.
    redactor = app.state.relay.redactor
    for name in ("", "uvicorn", "uvicorn.error", "capwallet"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redactor)
    asgi: ASGIApp = app
    return asgi


@dataclass
class RunningWallet:
    base_url: str  # the public URL of a hosted wallet, else its loopback URL
    ctx: WalletContext
    local_port: int = 0  # the port it listens on (behind the proxy, for a hosted wallet)

    @property
    def login_url(self) -> str:
        return login_url(self.base_url, self.ctx)


def bind_loopback(port: int, address: str = "127.0.0.1") -> socket.socket:
    """Listen on ``address`` (loopback unless --listen says otherwise) at ``port``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise RelaySetupError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


@dataclass(frozen=True)
class ServeOptions:
    """How `capwallet serve` is reached. The defaults are the local profile (127.0.0.1)."""

    port: int = 8750
    listen: str = "127.0.0.1"
    deployment: Deployment = field(default_factory=Deployment)
    store_url: str | None = None  # default: the wallet's SQLite file; redis://... to share
    tls_cert: str | None = None  # direct TLS in uvicorn (instead of a reverse proxy)
    tls_key: str | None = None
    head_timeout: float = HEAD_TIMEOUT  # seconds for a request head to arrive (else 408)
    body_timeout: float = BODY_TIMEOUT  # seconds for a wallet page's body (else 408)
    drain: int = DRAIN_S  # seconds requests in flight may take to finish after a stop


def make_context(home: WalletHome, keystore: Keystore,
                 options: ServeOptions | None = None,
                 started_by: str = "capwallet serve") -> WalletContext:
    home.ensure()
    options = options or ServeOptions()
    # Sessions live in wallet.db (they outlast a restart, not their expiry or sign-out); their
    # secrets are random, never derived from the root key. The cookie's name and attributes
    # follow the origin the wallet is served at (__Host- and Secure on https).
    sessions = BrowserSessions(SessionStore(home.db_path), CookiePolicy.for_origin(
        options.deployment.public_origin or ""))
    return WalletContext(
        home=home, keystore=keystore, grants=GrantStore(home.db_path),
        store=open_store(options.store_url or home.store_url),
        pages=Pages(sessions, started_by), sessions=sessions, deployment=options.deployment,
        signin=SignIn(PasskeyStore(home.db_path), Ceremonies(), SignInThrottle()),
    )


def _server(app: ASGIApp, ctx: WalletContext, relay: ASGIApp | None,
            options: ServeOptions | None = None) -> WalletServer:
    options = options or ServeOptions()
    trusted = list(options.deployment.trusted_proxies)
    # uvicorn believes X-Forwarded-* from 127.0.0.1 by default; we believe them from the
    # configured proxies only, and from nobody when none is configured.
    # The relay's protocol: request heads bounded in size (431) and in time (408 and close
    # after head_timeout: a client that never finishes its head no longer holds a connection).
    # A stop lets requests in flight finish for options.drain seconds (wallet/stopping.py).
    cut = CutAtStop(app)
    config = uvicorn.Config(cut, http=BoundedHttpToolsProtocol, log_level="warning",
                            access_log=False, lifespan="on",
                            timeout_graceful_shutdown=options.drain, proxy_headers=bool(trusted),
                            forwarded_allow_ips=trusted or None,
                            ssl_certfile=options.tls_cert, ssl_keyfile=options.tls_key)
    return WalletServer(set_head_timeout(config, options.head_timeout), ctx, relay, cut)


def local_base_url(sock: socket.socket, options: ServeOptions) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if options.tls_cert else "http"
    name = f"[{host}]" if ":" in host else host
    return f"{scheme}://{name}:{port}"


@contextlib.contextmanager
def running_wallet(
    home: WalletHome, keystore: Keystore, *, port: int = 0, with_relay: bool = True,
    options: ServeOptions | None = None, started_by: str = "capwallet serve",
) -> Iterator[RunningWallet]:
    """Run the wallet server in a background thread; yields its URL and context.

    ``base_url`` is the public URL when ``options`` give one, else the loopback URL.
    ``started_by`` is the command whose terminal shows the sign-in link (the locked page
    names it)."""
    options = options or ServeOptions(port=port)
    sock = bind_loopback(options.port, options.listen)
    base_url = options.deployment.public_origin or local_base_url(sock, options)
    try:
        ctx = make_context(home, keystore, options, started_by)
    except BaseException:
        sock.close()
        raise
    server: WalletServer | None = None
    thread: threading.Thread | None = None
    try:
        relay = build_relay(home, keystore, ctx.store, base_url) if with_relay else None
        server = _server(create_wallet_app(ctx, relay, body_timeout=options.body_timeout),
                         ctx, relay, options)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name="capwallet-wallet", daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RelaySetupError("the wallet server did not start")
            threading.Event().wait(0.02)
        yield RunningWallet(base_url, ctx, sock.getsockname()[1])
    finally:
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(JOIN_S)
        if thread is not None and thread.is_alive():
            # It still owns the stores: closing them under it is what the order prevents.
            log.error("the wallet server thread did not end within %.0f s; its stores are "
                      "left open", JOIN_S)
        else:
            sock.close()
            if server is None or not server.entered:  # it never ran: nothing else uses them
                run_async(lambda: close_stores(ctx))


def run_async(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if this thread runs an event loop
    already (Playwright's sync API does): then it runs on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fn())
    box: list[T] = []
    t = threading.Thread(target=lambda: box.append(asyncio.run(fn())))
    t.start()
    t.join()
    return box[0]


@contextlib.contextmanager
def _stop_on_signals(server: WalletServer) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM (systemd's stop, `kill`) stop the server in order
    (wallet/stopping.py; a second Ctrl-C stops waiting for calls in flight). The handlers are
    ours, not uvicorn's: uvicorn raised the signal again when serving ended, with the handler
    it found, so SIGTERM ended the process before the stores closed and Ctrl-C left as a
    KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, server.handle_exit)
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _say_started(base_url: str, url: str, options: ServeOptions, ctx: WalletContext) -> None:
    print(f"  Sign in to your wallet:  {url}")
    if options.deployment.public_origin is not None:
        print("  The sign-in link works once; then sign in with a passkey (or the passphrase).")
    if options.deployment.secure and ctx.signin is not None and not ctx.signin.passkeys.all():
        print(f"  No passkey yet: after signing in, add one at {base_url}/passkeys")
    print(f"  Relay for apps:          {base_url}/v1  (openai SDK base_url)")
    print("  Keep this sign-in link private. Stop with Ctrl-C.", flush=True)


def serve_forever(home: WalletHome, keystore: Keystore, *, options: ServeOptions,
                  open_browser: bool, as_json: bool = False) -> int:
    """`capwallet serve`: run in the foreground until Ctrl-C (or SIGTERM from systemd).
    ``as_json``: the addresses as one JSON line on stdout instead of the text."""
    from capwallet.cli.common import CliError

    try:
        sock = bind_loopback(options.port, options.listen)
    except RelaySetupError as exc:
        raise CliError(str(exc)) from None
    local = local_base_url(sock, options)
    base_url = options.deployment.public_origin or local
    try:
        ctx = make_context(home, keystore, options)
    except (ValueError, StoreUnavailable) as exc:
        sock.close()
        raise CliError(f"store: {exc}") from None
    server: WalletServer | None = None
    try:
        try:
            relay = build_relay(home, keystore, ctx.store, base_url)
        except RelaySetupError as exc:
            raise CliError(str(exc)) from None
        server = _server(create_wallet_app(ctx, relay, body_timeout=options.body_timeout),
                         ctx, relay, options)
        # From here a stop signal stops the server the ordered way, even one that arrives
        # before it runs (a service manager may stop the wallet as soon as it printed).
        with _stop_on_signals(server):
            url = login_url(base_url, ctx)
            if as_json:
                # the keys `capwallet demo --json` uses; dashboard_url is the sign-in link
                print(json.dumps({"wallet_url": base_url, "listening_on": local,
                                  "dashboard_url": url, "relay_url": f"{base_url}/v1"}),
                      flush=True)
            elif options.deployment.public_origin is None:
                print(f"capwallet is running on {base_url} (only this computer can reach it).")
            else:
                print(f"capwallet is running on {local}, published as {base_url}.")
                proxies = ", ".join(options.deployment.trusted_proxies) or "none"
                print(f"  Forwarded headers trusted from: {proxies}")
            if not as_json:
                _say_started(base_url, url, options, ctx)
            if open_browser:
                webbrowser.open(url)
            server.run(sockets=[sock])
    finally:
        sock.close()
        if server is None or not server.entered:  # it never ran: nothing else uses them
            asyncio.run(close_stores(ctx))
    print("capwallet stopped." if server is None or server.stores_closed else
          "capwallet stopped, leaving calls unfinished (see the error above).", file=sys.stderr)
    return 0
