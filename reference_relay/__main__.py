"""``python -m reference_relay --config relay.toml [--host 127.0.0.1] [--port N]``

Serves the relay with uvicorn on loopback by default. ``--port 0`` picks a free port; the
first line on stdout is ``relay listening on http://HOST:PORT`` once it accepts connections.

uvicorn runs on uvloop when it is installed (``pip install uvloop``, the ``relay`` extra;
about 20% less CPU per call), else on asyncio; it parses requests with httptools (a
dependency: the relay's upstream client parses with it too).

Limits on what a client may send:
* request target + headers: at most 16 KiB in total and 100 fields (431 headers_too_large
  from the relay, see reference_relay.app.RequestGuard; a head still arriving is cut off at
  16 KiB too: by h11 with a 400, by reference_relay.http_limits with a 431 under httptools,
  whose parser alone would buffer any size); a capability token is at most
  8192 characters (capwallet.token.MAX_TOKEN_CHARS: 401 malformed);
* body: ``max_body_bytes`` from the config, 4 MiB by default (413 beyond it), arriving within
  ``body_timeout`` seconds of the headers, 30 by default (408 request_timeout otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from capwallet.keys import KeyFileError
from capwallet.store import StoreUnavailable
from reference_relay.app import MAX_HEADER_BYTES, create_app
from reference_relay.config import ConfigError, load_config
from reference_relay.listen import listen

log = logging.getLogger("reference_relay")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_relay",
                                     description="Serve the capwallet reference relay.")
    parser.add_argument("--config", required=True, help="relay TOML config")
    parser.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: the config's; 0 = any free)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        app = create_app(config)
    except (ConfigError, KeyFileError, ValueError, StoreUnavailable) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    relay = app.state.relay
    for handler in logging.getLogger().handlers:
        handler.addFilter(relay.redactor)
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    if not _is_loopback(host):
        log.warning("listening on %s, which is not loopback: tokens travel in clear text "
                    "unless a TLS proxy fronts the relay; set relay.allowed_hosts", host)
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"relay: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    http: Any = "h11"
    try:  # httptools when installed, with the head bound h11 has built in
        from reference_relay.http_limits import BoundedHttpToolsProtocol
        http = BoundedHttpToolsProtocol
    except ImportError:
        pass
    server = uvicorn.Server(uvicorn.Config(
        app, http=http, loop="auto", lifespan="on", log_config=None, log_level=args.log_level,
        access_log=False, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=int(config.upstream_timeout) + 5, server_header=False,
        proxy_headers=False,
    ))

    # Fewer cyclic-GC passes: a call allocates many short-lived objects and almost no cycles,
    # and everything loaded at startup lives forever (measured: about 8% less CPU per call).
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if server.started:
            h, p = sock.getsockname()[:2]
            url = f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}"
            print(f"relay listening on {url}", flush=True)
        await task

    # uvicorn's own choice of loop (uvloop when installed), which asyncio.run() would ignore.
    with sock, asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
