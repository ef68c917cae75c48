"""Bring up a hosted wallet on this machine: Caddy (TLS, `tls internal`) in front of
`capwallet serve --public-url https://wallet.capwallet.test:PORT` on loopback.

The tests use :func:`hosted_stack`; a person runs it to try the hosted profile locally:

    python scripts/hosted_up.py --home ~/.capwallet --passphrase-file ~/.capwallet-pass

It prints the wallet's public URL, the one-time sign-in link, Caddy's local CA and the
flags a browser needs, then runs until Ctrl-C (``--check`` instead fetches /healthz through
Caddy and exits). Names under .capwallet.test are not in DNS: clients here map them to
127.0.0.1 themselves (Chromium's --host-resolver-rules; :func:`pinned_client` for httpx),
so nothing in /etc/hosts changes. Caddy's state (its CA included) lives in a temporary
folder unless --caddy-state names one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx

ROOT = Path(__file__).resolve().parents[1]
CADDYFILE = ROOT / "deploy" / "Caddyfile.test"
WALLET_HOST = "wallet.capwallet.test"
APP_HOST = "app.capwallet.test"


class HostedUpError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- clients that reach *.capwallet.test on 127.0.0.1 and trust Caddy's local CA ---------------

class _PinnedSync(httpcore.SyncBackend):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return super().connect_tcp(self.names.get(host, host), port, timeout, local_address,
                                   socket_options)


class _PinnedAsync(httpcore.AnyIOBackend):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        return await super().connect_tcp(self.names.get(host, host), port, timeout,
                                         local_address, socket_options)


def pinned_transport(ca: Path, names: dict[str, str]) -> httpx.HTTPTransport:
    """An httpx transport that connects ``names`` to fixed addresses (TLS still checks the
    name against the certificate, with ``ca`` as the only root)."""
    t = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(ca)))
    t._pool._network_backend = _PinnedSync(names)  # httpcore: no resolver hook
    return t


def pinned_async_transport(ca: Path, names: dict[str, str]) -> httpx.AsyncHTTPTransport:
    t = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(ca)))
    t._pool._network_backend = _PinnedAsync(names)
    return t


# --- the stack ----------------------------------------------------------------------------------

@dataclass
class HostedStack:
    wallet_url: str  # https://wallet.capwallet.test:PORT
    app_url: str  # https://app.capwallet.test:PORT, proxied to 127.0.0.1:app_port
    app_port: int
    wallet_port: int
    https_port: int
    ca_cert: Path
    login_url: str
    home: Path
    output: list[str] = field(default_factory=list)  # what `capwallet serve` printed

    @property
    def names(self) -> dict[str, str]:
        return {WALLET_HOST: "127.0.0.1", APP_HOST: "127.0.0.1"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(transport=pinned_transport(self.ca_cert, self.names), **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=pinned_async_transport(self.ca_cert, self.names),
                                 **kwargs)

    def spki_hashes(self) -> list[str]:
        """base64(SHA-256(SPKI)) of the certificates Caddy serves for our names."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        out = []
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        for host in (WALLET_HOST, APP_HOST):
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
            assert der is not None
            spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            out.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
        return out

    def chromium_args(self) -> list[str]:
        """Chromium maps our names to 127.0.0.1 and accepts Caddy's certificates for them
        (by their public keys: no other certificate error is ignored)."""
        rules = ", ".join(f"MAP {h} 127.0.0.1" for h in self.names)
        return [f"--host-resolver-rules={rules}",
                "--ignore-certificate-errors-spki-list=" + ",".join(self.spki_hashes())]


def _wait_https(stack: HostedStack, caddy: subprocess.Popen[bytes], deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if caddy.poll() is not None:
            raise HostedUpError(f"caddy exited with {caddy.returncode}")
        if stack.ca_cert.exists():
            try:
                with stack.client(timeout=5) as c:
                    if c.get(stack.wallet_url + "/healthz").status_code == 200:
                        return
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                last = exc
        time.sleep(0.1)
    raise HostedUpError(f"the wallet did not answer through Caddy: {last!r}")


@contextlib.contextmanager
def hosted_stack(home: Path, passphrase_file: Path, *, caddy_state: Path | None = None,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> Iterator[HostedStack]:
    """Caddy + `capwallet serve` for the wallet at ``home``; stops both on exit."""
    caddy_bin = shutil.which("caddy")
    if caddy_bin is None:
        raise HostedUpError("caddy is not installed (apt-get install caddy; "
                            "scripts/system-deps.sh does it)")
    https_port, http_port, app_port = free_port(), free_port(), free_port()
    wallet_url = f"https://{WALLET_HOST}:{https_port}"
    app_url = f"https://{APP_HOST}:{https_port}"
    with contextlib.ExitStack() as stack:
        state = caddy_state or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base_env = {**os.environ, **(env or {}), "CAPWALLET_HOME": str(home)}
        base_env.pop("CAPWALLET_PASSPHRASE", None)
        serve = subprocess.Popen(
            [sys.executable, "-m", "capwallet", "serve", "--port", "0",
             "--public-url", wallet_url, "--trusted-proxy", "127.0.0.1",
             "--passphrase-file", str(passphrase_file), *extra_args],
            env=base_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        stack.callback(_stop, serve)
        output: list[str] = []
        login = wallet_port = None
        deadline = time.monotonic() + timeout
        assert serve.stdout is not None
        while login is None:
            line = serve.stdout.readline()
            if not line:
                raise HostedUpError("capwallet serve stopped:\n" + "".join(output))
            output.append(line)
            if "capwallet is running on http://127.0.0.1:" in line:
                wallet_port = int(line.split("127.0.0.1:", 1)[1].split(",", 1)[0])
            if "Sign in to your wallet:" in line:
                login = line.split("Sign in to your wallet:", 1)[1].strip()
            if time.monotonic() > deadline:
                raise HostedUpError("capwallet serve did not start")
        threading.Thread(target=_drain, args=(serve, output), daemon=True).start()
        assert wallet_port is not None
        caddy_env = {
            **os.environ, "XDG_DATA_HOME": str(state), "XDG_CONFIG_HOME": str(state),
            "HOME": str(state), "CADDY_HTTP_PORT": str(http_port),
            "CADDY_HTTPS_PORT": str(https_port), "CADDY_STORAGE": str(state / "caddy"),
            "WALLET_HOST": WALLET_HOST, "WALLET_PORT": str(wallet_port),
            "APP_HOST": APP_HOST, "APP_PORT": str(app_port),
        }
        caddy = subprocess.Popen(
            [caddy_bin, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=caddy_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=state,
        )
        stack.callback(_stop, caddy)
        result = HostedStack(
            wallet_url=wallet_url, app_url=app_url, app_port=app_port, wallet_port=wallet_port,
            https_port=https_port, login_url=login, output=output, home=home,
            ca_cert=state / "caddy" / "pki" / "authorities" / "local" / "root.crt",
        )
        _wait_https(result, caddy, deadline)
        yield result


def _drain(proc: subprocess.Popen[str], output: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--home", required=True, help="the wallet folder (capwallet init made it)")
    p.add_argument("--passphrase-file", required=True, help="owner-only file with the passphrase")
    p.add_argument("--caddy-state", help="keep Caddy's CA and certificates here")
    p.add_argument("--check", action="store_true",
                   help="fetch /healthz through Caddy over HTTPS, print the URLs, and stop")
    args = p.parse_args(argv)
    try:
        with hosted_stack(Path(args.home), Path(args.passphrase_file),
                          caddy_state=Path(args.caddy_state) if args.caddy_state else None
                          ) as s:
            with s.client(timeout=10) as c:
                health = c.get(s.wallet_url + "/healthz")
            print(f"wallet:        {s.wallet_url}  (GET /healthz over HTTPS: "
                  f"{health.status_code})")
            print(f"sign in once:  {s.login_url}")
            print(f"relay for apps: {s.wallet_url}/v1")
            print(f"Caddy's CA:    {s.ca_cert}")
            print("browser flags: " + " ".join(repr(a) for a in s.chromium_args()), flush=True)
            if args.check:
                return 0 if health.status_code == 200 else 1
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except HostedUpError as exc:
        print(f"hosted_up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
