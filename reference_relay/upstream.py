"""Calls to providers: one pooled httpx.AsyncClient, the provider key added here and only here.

The client's transport is reference_relay.pool.Http1Pool (httpcore's HTTP/1.1 connections in a
pool whose cost per request does not grow with the number of connections).

The app's own credentials and headers are not forwarded: the upstream request carries only the
body, a content type, the provider's key and the few protocol headers each API needs. Upstream
error bodies passed back to the app are scrubbed of the provider key, in case a provider echoes
it (some echo a masked form; a verbatim one must never get through).
"""

from __future__ import annotations

import httpx

from reference_relay.config import ProviderConfig, RelayConfig
from reference_relay.errors import (
    PROVIDER_UNAVAILABLE,
    UPSTREAM_ERROR,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    RelayError,
)
from reference_relay.pool import Http1Pool

ANTHROPIC_VERSION = "2023-06-01"
_PASS_THROUGH_STATUS = frozenset({400, 404, 409, 422})


class Upstream:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        timeout = httpx.Timeout(config.upstream_timeout, connect=config.connect_timeout)
        self._timeouts = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self.client = httpx.AsyncClient(
            transport=Http1Pool(max_connections=config.max_connections),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def timeout(self, provider: ProviderConfig) -> float:
        return provider.timeout if provider.timeout is not None else self.config.upstream_timeout

    def build(self, provider: ProviderConfig, path: str, body: bytes, key: str,
              client_headers: dict[str, str]) -> httpx.Request:
        """The upstream request. ``path`` is relative to the provider's base_url."""
        headers = {"content-type": "application/json", "accept": "application/json"}
        if provider.api == "anthropic":
            headers["anthropic-version"] = client_headers.get("anthropic-version",
                                                              ANTHROPIC_VERSION)
            beta = client_headers.get("anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = "Bearer " + key
        # httpx.Request directly rather than client.build_request: nothing of the client's
        # defaults (base URL, cookies, params) applies, and merging them cost a third of the
        # upstream call's CPU. The timeout extension is what build_request would have set.
        return httpx.Request("POST", self._url(provider.base_url + path), content=body,
                             headers=headers, extensions={"timeout": self._timeouts})

    def _url(self, text: str) -> httpx.URL:
        url = self._urls.get(text)
        if url is None:
            url = self._urls[text] = httpx.URL(text)
        return url


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
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return RelayError(UPSTREAM_TIMEOUT, f"provider {provider.id!r} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return RelayError(UPSTREAM_ERROR, f"cannot connect to provider {provider.id!r}")
    return RelayError(UPSTREAM_ERROR, f"the connection to provider {provider.id!r} failed "
                      f"({type(exc).__name__})")
