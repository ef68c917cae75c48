"""Verified app identity: fetching an OAuth Client ID Metadata Document, with strict limits.

A web app may use as its ``client_id`` an https URL on its own origin that serves a JSON
document naming it (draft-ietf-oauth-client-id-metadata-document, as the MCP authorization
spec uses it):

    {"client_id": "https://notes.example/capwallet-client.json",
     "client_name": "Notes", "logo_uri": "https://notes.example/logo.png",
     "redirect_uris": ["https://notes.example/connected"]}

Whoever controls that origin wrote the name, so the wallet can show it as verified. The
fetch is made by the wallet on the user's machine, at a URL an arbitrary web page chose, so it
is a server-side request forgery risk and is fenced in:

* https only, and no redirects (a 3xx is an error, never followed);
* the host name is resolved first and EVERY address is checked: none may be private,
  loopback, link-local, multicast or otherwise not globally routable; the connection then goes
  to a checked address (the name is not resolved a second time, which defeats DNS rebinding),
  with the TLS certificate still checked against the host name;
* at most ``size_limit`` bytes (no content encodings: a compressed body could expand), and
  at most ``time_limit`` seconds for resolving, connecting and reading together.

Each failure is a ``ClientMetadataError`` with a stable ``reason``; the wallet then shows the
user an error and changes nothing.

Tests cannot reach a public https server, so ``ClientMetadataFetcher.for_loopback_tests``
allows loopback addresses, and only together with a TLS context the test passes explicitly
(its own CA). The default fetcher, the one the wallet builds, never allows them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import certifi
import httpx

from capwallet import origins
from capwallet.wallet import json_input

SIZE_LIMIT = 8 * 1024
TIME_LIMIT = 5.0
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,80}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Stable reason codes (shown to the user next to the explanation, and used by tests).
NOT_HTTPS = "metadata_not_https"
PRIVATE_ADDRESS = "metadata_private_address"
UNRESOLVABLE = "metadata_unresolvable"
UNREACHABLE = "metadata_unreachable"
TIMEOUT = "metadata_timeout"
REDIRECT = "metadata_redirect"
TOO_LARGE = "metadata_too_large"
BAD_STATUS = "metadata_bad_status"
INVALID = "metadata_invalid"


class ClientMetadataError(Exception):
    """The app's metadata document could not be used; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """What a verified document says about the app."""

    client_id: str
    origin: str
    client_name: str
    redirect_uris: tuple[str, ...]
    logo_uri: str = ""


def is_metadata_url(client_id: str) -> bool:
    """A client_id with a path is a metadata document URL; a bare origin is not."""
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc and parts.path not in ("", "/"))


def public_address(ip: IPAddress) -> bool:
    """Globally routable unicast only (IPv4-mapped IPv6 is judged as the IPv4 it maps)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
    )
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


class ClientMetadataFetcher:
    def __init__(
        self, *, size_limit: int = SIZE_LIMIT, time_limit: float = TIME_LIMIT,
        resolver: Resolver = system_resolver, tls: ssl.SSLContext | None = None,
        _allow_loopback: bool = False,
    ) -> None:
        if _allow_loopback and tls is None:
            raise ValueError("loopback metadata servers are for tests, with an explicit CA")
        self.size_limit = size_limit
        self.time_limit = time_limit
        self.resolver = resolver
        self.tls = tls or ssl.create_default_context(cafile=certifi.where())
        self._allow_loopback = _allow_loopback

    @classmethod
    def for_loopback_tests(cls, tls: ssl.SSLContext, *, time_limit: float = TIME_LIMIT,
                           size_limit: int = SIZE_LIMIT) -> ClientMetadataFetcher:
        """A fetcher that may also reach loopback addresses, trusting only ``tls``'s CA."""
        return cls(tls=tls, time_limit=time_limit, size_limit=size_limit,
                   _allow_loopback=True)

    def address_allowed(self, ip: IPAddress) -> bool:
        return public_address(ip) or (self._allow_loopback and ip.is_loopback)

    async def fetch(self, client_id: str) -> ClientMetadata:
        """Fetch and check the document at ``client_id``; raises ClientMetadataError."""
        try:
            parts = urlsplit(client_id)
            port = parts.port or 443
        except ValueError:
            raise ClientMetadataError(INVALID, "the client_id is not a valid URL") from None
        if parts.scheme != "https" or not parts.hostname:
            raise ClientMetadataError(
                NOT_HTTPS, "the app's client_id must be an https URL (its metadata document)")
        if parts.username or parts.password or parts.fragment or len(client_id) > 2000:
            raise ClientMetadataError(INVALID, "the client_id URL has a user, a fragment, "
                                      "or is too long")
        host = parts.hostname
        try:
            with anyio.fail_after(self.time_limit):
                body = await self._get(client_id, host, port)
        except TimeoutError:
            raise ClientMetadataError(
                TIMEOUT, f"the app's metadata document did not arrive within "
                f"{self.time_limit:g} seconds") from None
        return parse_document(client_id, body)

    async def _get(self, url: str, host: str, port: int) -> bytes:
        try:
            addresses = await self.resolver(host, port)
        except OSError:
            raise ClientMetadataError(
                UNRESOLVABLE, f"the app's host name {host} does not resolve") from None
        if not addresses:
            raise ClientMetadataError(UNRESOLVABLE, f"the app's host name {host} has no address")
        checked: list[str] = []
        for addr in addresses:
            try:
                ip = ipaddress.ip_address(addr.split("%", 1)[0])
            except ValueError:
                raise ClientMetadataError(UNRESOLVABLE, "the host resolved to no IP") from None
            if not self.address_allowed(ip):
                raise ClientMetadataError(
                    PRIVATE_ADDRESS, f"{host} resolves to a private or local address ({ip}); "
                    "the wallet fetches app metadata only from public addresses")
            checked.append(str(ip))
        last: Exception | None = None
        for ip_text in checked:
            try:
                return await self._get_from(url, host, ip_text)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
        raise ClientMetadataError(
            UNREACHABLE, f"cannot connect to {host} over https ({type(last).__name__})")

    async def _get_from(self, url: str, host: str, ip_text: str) -> bytes:
        target = httpx.URL(url).copy_with(host=ip_text)
        netloc = urlsplit(url).netloc
        async with httpx.AsyncClient(verify=self.tls, follow_redirects=False, trust_env=False,
                                     timeout=self.time_limit) as client:
            request = client.build_request(
                "GET", target,
                headers={"host": netloc, "accept": "application/json",
                         "accept-encoding": "identity"},
                extensions={"sni_hostname": host},
            )
            try:
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise
            except httpx.HTTPError as exc:
                raise ClientMetadataError(
                    UNREACHABLE, f"the https exchange with {host} failed "
                    f"({type(exc).__name__})") from None
            try:
                return await self._read(response)
            finally:
                await response.aclose()

    async def _read(self, response: httpx.Response) -> bytes:
        if 300 <= response.status_code < 400:
            raise ClientMetadataError(
                REDIRECT, "the app's metadata URL answered with a redirect; the wallet "
                "follows none")
        if response.status_code != 200:
            raise ClientMetadataError(
                BAD_STATUS, f"the app's metadata URL answered HTTP {response.status_code}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise ClientMetadataError(INVALID, "the metadata document must not be compressed")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.size_limit:
            raise ClientMetadataError(TOO_LARGE, _too_large(self.size_limit))
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self.size_limit:
                    raise ClientMetadataError(TOO_LARGE, _too_large(self.size_limit))
        except httpx.HTTPError as exc:
            raise ClientMetadataError(
                UNREACHABLE, f"reading the metadata document failed ({type(exc).__name__})"
            ) from None
        return bytes(body)


def _too_large(limit: int) -> str:
    return f"the app's metadata document is larger than {limit} bytes"


def parse_document(client_id: str, body: bytes) -> ClientMetadata:
    """The document's fields, checked: it must name itself and keep its URIs on its origin."""
    try:
        doc = json_input.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ClientMetadataError(INVALID, "the metadata document is not JSON") from None
    if not isinstance(doc, dict):
        raise ClientMetadataError(INVALID, "the metadata document must be a JSON object")
    if doc.get("client_id") != client_id:
        raise ClientMetadataError(
            INVALID, "the metadata document's client_id is not the URL it was fetched from")
    name = doc.get("client_name")
    if not isinstance(name, str) or not _NAME.fullmatch(name.strip()):
        raise ClientMetadataError(INVALID, "client_name is missing or not 1-80 printable "
                                  "characters")
    origin = origin_of(client_id)
    uris = doc.get("redirect_uris")
    if (not isinstance(uris, list) or not uris or len(uris) > 20
            or not all(isinstance(u, str) for u in uris)):
        raise ClientMetadataError(INVALID, "redirect_uris must be a list of 1-20 URLs")
    for uri in uris:
        try:
            same = origin_of(uri) == origin
        except ValueError:
            same = False
        if not same:
            raise ClientMetadataError(
                INVALID, f"redirect URI {uri!r} is not on the app's origin {origin}")
    logo = doc.get("logo_uri", "")
    if not isinstance(logo, str):
        raise ClientMetadataError(INVALID, "logo_uri must be a string")
    return ClientMetadata(client_id=client_id, origin=origin, client_name=name.strip(),
                          redirect_uris=tuple(uris), logo_uri=logo)


def origin_of(url: str) -> str:
    """The browser's serialization of a URL's origin (lowercase, default port dropped), in the
    canonical form the origin caveat names (capwallet.origins)."""
    parts = urlsplit(url)
    port = parts.port  # ValueError on a bad port
    host = (parts.hostname or "").lower()
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    canonical = origins.normalise(f"{scheme}://{netloc}")
    if canonical is None:  # e.g. a non-ASCII host: never an origin a caveat could name
        raise ValueError(f"not a web origin: {url!r}")
    return canonical
