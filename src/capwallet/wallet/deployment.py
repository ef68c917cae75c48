"""Where the wallet is reached: on this computer (loopback) or on a server behind a proxy.

A wallet on 127.0.0.1 publishes URLs built from the Host it was called at (a loopback name;
anything else is refused). A hosted wallet (``capwallet serve --public-url https://...``)
publishes its public URL instead, everywhere: the OAuth ``iss`` and redirects, the relay URL
that /token returns, discovery metadata and the approval links in ``confirmation_required``.
Its Host check then admits exactly the public host, so a request that reached the process
under another name (DNS rebinding, a scanner at the bare IP) is refused.

One accessor, :func:`wallet_origin`, answers "what is this wallet's origin" for a request; the
Host/Origin middleware records the answer in the ASGI scope so every handler agrees with it.

Forwarded headers (X-Forwarded-For/-Proto) are believed only from the proxy addresses given
with ``--trusted-proxy`` (uvicorn's ProxyHeadersMiddleware does the rewriting); from any other
peer they are ignored, so a client cannot pick its own address for the rate limits and logs.
X-Forwarded-Host is never used: the public host is configured, not taken from a header.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

ORIGIN_SCOPE_KEY = "capwallet.origin"


class DeploymentError(ValueError):
    """A --public-url or --trusted-proxy that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """``public_origin`` is None for a wallet on loopback (the default)."""

    public_origin: str | None = None
    trusted_proxies: tuple[str, ...] = ()

    @property
    def public_host(self) -> str | None:
        """The Host header value the public URL implies ('wallet.example.com[:port]')."""
        if self.public_origin is None:
            return None
        return self.public_origin.split("://", 1)[1]

    @property
    def secure(self) -> bool:
        """Served over https: cookies get Secure and the __Host- prefix."""
        return self.public_origin is not None and self.public_origin.startswith("https://")


def parse_public_url(url: str) -> str:
    """The origin of a --public-url ('https://wallet.example.com'); raises DeploymentError.

    https is required, except for a loopback host (plain http there is the local profile).
    No path: the wallet's routes (/authorize, /v1, ...) sit at the root of its origin.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise DeploymentError(f"--public-url {url!r} is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise DeploymentError(f"--public-url {url!r} has no host name")
    if parts.username or parts.password:
        raise DeploymentError("--public-url must not carry a user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise DeploymentError(
            "--public-url must be an origin (scheme, host, port) without a path: the wallet's "
            "routes sit at its root; give the proxy a host name of its own"
        )
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise DeploymentError(
            "--public-url must be https (sign-in cookies and passkeys need it); plain http "
            "is only for a loopback host"
        )
    default = 443 if parts.scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}"


def parse_trusted_proxies(values: list[str]) -> tuple[str, ...]:
    """Proxy addresses or networks (127.0.0.1, 10.0.0.0/8, ::1); raises DeploymentError."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise DeploymentError(
                    f"--trusted-proxy {item!r} is not an IP address or network"
                ) from None
    return tuple(out)


def wallet_origin(conn: HTTPConnection) -> str:
    """This wallet's origin for this request: the public URL when hosted, else the loopback
    Host the request came to (the Host middleware has already refused any other)."""
    recorded = conn.scope.get(ORIGIN_SCOPE_KEY)
    if isinstance(recorded, str):
        return recorded
    return "http://" + conn.headers.get("host", "127.0.0.1").strip().lower()


def client_address(conn: HTTPConnection) -> str:
    """The client's IP: the peer, or what a trusted proxy said (uvicorn rewrote the scope)."""
    return conn.client.host if conn.client is not None else "unknown"
