"""Calls to providers: one connection pool per relay, the provider key added here and only here.

The wire is reference_relay.pool (an asyncio Protocol per connection, httptools parsing; its
docstring says why not httpx). This module builds the request bytes.

The app's own credentials and headers are not forwarded: the upstream request carries only the
body, a content type, the provider's key and the few protocol headers each API needs. Upstream
error bodies passed back to the app are scrubbed of the provider key, in case a provider echoes
it (some echo a masked form; a verbatim one must never get through).
"""

from __future__ import annotations

import re
from collections.abc import Coroutine, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from reference_relay.config import ProviderConfig, RelayConfig
from reference_relay.errors import (
    INVALID_REQUEST,
    PROVIDER_UNAVAILABLE,
    UPSTREAM_ERROR,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    RelayError,
)
from reference_relay.pool import (
    ConnectFailed,
    ConnectTimeout,
    Origin,
    Pool,
    ProtocolFailure,
    Response,
)

ANTHROPIC_VERSION = "2023-06-01"
_PASS_THROUGH_STATUS = frozenset({400, 404, 409, 422})
# A forwarded header value: visible ASCII and inner spaces only (no CR/LF, no controls).
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


class Upstream:
    """The relay's pool of provider connections and the requests it sends on them."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.pool = Pool(max_connections=config.max_connections,
                         connect_timeout=config.connect_timeout)
        # (base_url + path, key) -> (origin, the request head up to the content length):
        # everything of a head but the length is the same for every call to one endpoint.
        self._heads: dict[tuple[str, str, str, str], tuple[Origin, bytes]] = {}

    async def aclose(self) -> None:
        await self.pool.aclose()

    def timeout(self, provider: ProviderConfig) -> float:
        return provider.timeout if provider.timeout is not None else self.config.upstream_timeout

    def head(self, provider: ProviderConfig, path: str, key: str) -> tuple[Origin, bytes]:
        """The origin and the request head up to its content length, the same for every call
        to one endpoint with one key (cached). The relay asks for it before it reserves, so
        that a key that cannot go in a header refuses the call with nothing reserved."""
        # Keyed by the strings the URL is made of (their hashes are kept in them), not by
        # the joined URL, a new string to hash on every call.
        k = (provider.base_url, path, key, provider.api)
        cached = self._heads.get(k)
        if cached is None:
            cached = self._head(provider, provider.base_url + path, key)
            if len(self._heads) < 1024:
                self._heads[k] = cached
        return cached

    @staticmethod
    def _head(provider: ProviderConfig, url: str, key: str) -> tuple[Origin, bytes]:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        host_header = f"[{host}]" if ":" in host else host
        if not default:
            host_header += f":{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {host_header}",
                 "content-type: application/json", "accept: application/json",
                 "accept-encoding: identity"]
        if key and not _HEADER_VALUE.fullmatch(key):
            raise RelayError(PROVIDER_UNAVAILABLE, f"the API key configured for provider "
                             f"{provider.id!r} has characters that cannot go in a header")
        if key:
            lines.append(f"x-api-key: {key}" if provider.api == "anthropic"
                         else f"authorization: Bearer {key}")
        return (scheme, host, port), ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def start(self, provider: ProviderConfig, path: str, body: bytes, key: str,
              forward: dict[str, str]) -> Started:
        """Build the request, its head and body as bytes, and send it at once if an idle
        connection to the provider is free (Pool.start); ``send`` finishes it: sends it if it
        is not sent yet, and waits for the answer's head. ``path`` is relative to the
        provider's base_url; ``forward`` comes from forwarded_headers. (One method: a
        separate build was one Python call more per relayed call.)"""
        origin, head = self.head(provider, path, key)
        extra = b""
        if provider.api == "anthropic":
            extra = b"anthropic-version: %s\r\n" % forward.get(
                "anthropic-version", ANTHROPIC_VERSION).encode("ascii")
            if forward.get("anthropic-beta"):
                extra += b"anthropic-beta: %s\r\n" % forward["anthropic-beta"].encode("ascii")
        data = b"%scontent-length: %d\r\n%s\r\n%s" % (head, len(body), extra, body)
        return _new(Started, (origin, data, self.pool.start(origin, data)))

    def begin(self, provider: ProviderConfig, path: str, body: bytes, key: str,
              forward: dict[str, str]) -> Started | None:
        """``start``, from the handler that reserved the call, the moment its reservation is
        committed: before the call's own objects are built (reference_relay.calls.Call),
        so that none of that work lies between the reservation and the provider getting the
        request. None if building it failed: the call's task meets that again (``start``)
        and closes the reservation."""
        try:
            return self.start(provider, path, body, key, forward)
        except Exception:
            return None

    def send(self, started: Started) -> Coroutine[Any, Any, Response]:
        """Awaited, returns once the answer's status and headers have arrived. (The pool's
        coroutine itself: no frame of this module's between the call and the pool.)"""
        return self.pool.request(started.origin, started.data, started.response)


class Started(NamedTuple):
    """A request to a provider, built and perhaps sent (``response`` then waits for its
    answer: see Upstream.start). Built with tuple.__new__ from all its fields, in order
    (``_new``): the generated ``__new__`` is a Python frame more per call."""

    origin: Origin
    data: bytes
    response: Response | None


_new = tuple.__new__


# The app's headers the relay passes on to a provider (forwarded_headers).
FORWARDED = ("anthropic-version", "anthropic-beta")


def forwarded_headers(client: Mapping[str, str]) -> dict[str, str]:
    """The app's headers the relay passes on (Anthropic's version and beta flags), checked:
    visible ASCII only, so nothing the app sends can add a line to the upstream request."""
    out: dict[str, str] = {}
    for name in FORWARDED:
        value = client.get(name)
        if value is not None:
            if not _HEADER_VALUE.fullmatch(value):
                raise RelayError(INVALID_REQUEST, f"the {name} header has characters the "
                                 "relay does not forward")
            out[name] = value
    return out


def provider_key_missing(provider: ProviderConfig) -> RelayError:
    where = f"environment variable {provider.api_key_env}" if provider.api_key_env else "wallet"
    return RelayError(PROVIDER_UNAVAILABLE,
                      f"no API key is configured for provider {provider.id!r} ({where})")


def scrub(text: bytes, key: str) -> bytes:
    if key and key.encode() in text:
        return text.replace(key.encode(), b"[provider key removed]")
    return text


def upstream_status_error(provider: ProviderConfig, status: int, body: bytes,
                          key: str) -> tuple[RelayError, bytes | None]:
    """Map a provider's non-2xx answer: (our error, upstream body to pass through or None).

    Client errors the app can fix (400, 404, 409, 422) pass through with the provider's body
    (scrubbed) so the app sees the provider's own explanation. Auth failures are the relay's
    configuration problem, never the app's: they become a 502 without the provider's text.
    """
    if status in _PASS_THROUGH_STATUS:
        return RelayError(UPSTREAM_ERROR, f"provider {provider.id!r} rejected the request "
                          f"(HTTP {status})", status=status), scrub(body, key)
    if status in (401, 403):
        return RelayError(UPSTREAM_ERROR, f"provider {provider.id!r} refused the relay's API key "
                          f"(HTTP {status}); check the key configured for it", status=502), None
    if status == 429:
        return RelayError(UPSTREAM_RATE_LIMITED, f"provider {provider.id!r} is rate limiting the "
                          "relay's account (HTTP 429); retry later", status=429), None
    if status in (408, 504):
        return RelayError(UPSTREAM_TIMEOUT, f"provider {provider.id!r} timed out "
                          f"(HTTP {status})"), None
    return RelayError(UPSTREAM_ERROR, f"provider {provider.id!r} failed (HTTP {status})"), None


def transport_error(provider: ProviderConfig, exc: BaseException) -> RelayError:
    if isinstance(exc, (ConnectTimeout, TimeoutError)):
        return RelayError(UPSTREAM_TIMEOUT, f"provider {provider.id!r} did not answer in time")
    if isinstance(exc, ConnectFailed):
        return RelayError(UPSTREAM_ERROR, f"cannot connect to provider {provider.id!r}")
    if isinstance(exc, ProtocolFailure):
        return RelayError(UPSTREAM_ERROR, f"provider {provider.id!r}: {exc}")
    return RelayError(UPSTREAM_ERROR, f"the connection to provider {provider.id!r} failed "
                      f"({type(exc).__name__})")
