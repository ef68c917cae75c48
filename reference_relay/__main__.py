"""``python -m reference_relay --config relay.toml [--host 127.0.0.1] [--port N] [--workers N]``

Serves the relay with uvicorn on loopback by default. ``--port 0`` picks a free port; the
first line on stdout is ``relay listening on http://HOST:PORT`` once it accepts connections.
``--workers N`` runs N processes on the one listening socket under uvicorn's supervisor: the
relay keeps no state between requests (the store holds it), so a second core serves more
calls, at the cost of the processes contending for the SQLite write lock (Redis: none).

uvicorn runs on uvloop when it is installed (``pip install uvloop``, the ``relay`` extra;
about 20% less CPU per call), else on asyncio; it parses requests with httptools (a
dependency: the relay's upstream client parses with it too).

Limits on what a client may send:
* request target + headers: at most 16 KiB in total and 100 fields (431 headers_too_large
  from the relay, see reference_relay.app.RequestGuard; a head still arriving is cut off at
  16 KiB too, by reference_relay.http_limits with a 431, since httptools alone would buffer
  any size), and complete within ``header_timeout`` seconds of the connection (or of the
  first byte of a later request on it), 10 by default (408 request_timeout and close,
  reference_relay.http_limits); a capability token is at most
  8192 characters (capwallet.token.MAX_TOKEN_CHARS: 401 malformed);
* body: ``max_body_bytes`` from the config, 4 MiB by default (413 beyond it), arriving within
  ``body_timeout`` seconds of the headers, 30 by default (408 request_timeout otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors.multiprocess import Multiprocess

from capwallet.keys import KeyFileError
from capwallet.provider_url import is_loopback_host
from capwallet.store import StoreUnavailable
from reference_relay.app import REDACTOR, create_app
from reference_relay.config import ConfigError, RelayConfig, load_config
from reference_relay.http_limits import BoundedHttpToolsProtocol, set_head_timeout
from reference_relay.listen import listen, serve_announced, url

log = logging.getLogger("reference_relay")


CONFIG_ENV = "CAPWALLET_RELAY_CONFIG"  # how worker processes find the config (--workers N)
LOG_LEVEL_ENV = "CAPWALLET_RELAY_LOG_LEVEL"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(REDACTOR)


def _tune_gc() -> None:
    # Fewer cyclic-GC passes: a call allocates many short-lived objects and almost no cycles,
    # and everything loaded at startup lives forever (measured: about 8% less CPU per call).
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)


def _uvicorn_config(app: Any, log_level: str, config: RelayConfig, **kw: Any) -> uvicorn.Config:
    return set_head_timeout(uvicorn.Config(
        app, http=BoundedHttpToolsProtocol, loop="auto", lifespan="on", log_config=None,
        log_level=log_level, access_log=False, server_header=False, proxy_headers=False,
        timeout_graceful_shutdown=int(config.upstream_timeout) + 5, **kw), config.header_timeout)


def worker_app() -> Starlette:
    """The app of one worker process (``--workers N``): its own store connections, upstream
    pool and caches; the config path comes from the parent in CAPWALLET_RELAY_CONFIG."""
    _setup_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    app = create_app(load_config(os.environ[CONFIG_ENV]))
    _tune_gc()
    return app


class _Workers(Multiprocess):
    """uvicorn's worker supervisor (restarts a worker that dies or hangs, forwards signals),
    which says "listening" once every worker serves."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, url: str) -> None:
        super().__init__(config, sockets=[sock])
        self.url = url

    def init_processes(self) -> None:
        super().init_processes()
        for process in self.processes:
            if not process.wait_until_ready(60.0, self.should_exit):
                print("relay: a worker process did not start", file=sys.stderr, flush=True)
                self.should_exit.set()
                return
        log.info("%d worker processes serve %s", len(self.processes), self.url)
        print(f"relay listening on {self.url}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_relay",
                                     description="Serve the capwallet reference relay.")
    parser.add_argument("--config", required=True, help="relay TOML config")
    parser.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: the config's; 0 = any free)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the port, each with its own store "
                             "connections (the relay keeps no state of its own; default 1)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")

    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        app = create_app(config)  # also checks the keys and opens the store: errors show here
    except (ConfigError, KeyFileError, ValueError, StoreUnavailable) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    if not is_loopback_host(host):
        log.warning("listening on %s, which is not loopback: tokens travel in clear text "
                    "unless a TLS proxy fronts the relay; set relay.allowed_hosts", host)
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"relay: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2

    if args.workers > 1:
        asyncio.run(app.state.relay.aclose())  # each worker opens its own
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
        os.environ[LOG_LEVEL_ENV] = args.log_level
        workers = _Workers(_uvicorn_config("reference_relay.__main__:worker_app", args.log_level,
                                           config, factory=True, workers=args.workers),
                           sock, url(sock))
        with sock:
            workers.run()
        return 0

    server = uvicorn.Server(_uvicorn_config(app, args.log_level, config))
    _tune_gc()

    # uvicorn's own choice of loop (uvloop when installed), which asyncio.run() would ignore.
    with sock, asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_announced(server, sock, "relay"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
