"""The rule for a provider's base URL: https, or plain http to this machine only.

The relay sends the user's provider key to this URL in a header, so a URL that reads as local
but reaches another host leaks the key in cleartext. The URL is parsed, never matched as a
string: ``http://127.0.0.1@gateway.example.net/v1`` (userinfo; the host is gateway.example.net),
``http://localhost.example.net/v1`` and ``http://127.0.0.1.nip.io:8080/v1`` (DNS names that
merely start like a loopback name) are all refused.

* scheme ``https``, or ``http`` when the host is a loopback IP literal (127.0.0.0/8, [::1])
  or exactly ``localhost``;
* no userinfo (``user:pass@``), query or fragment; a host of DNS-name characters or an IP
  literal; a valid port.

One function, used by both ``capwallet provider add --base-url`` and the relay's config loader
(reference_relay.config), so the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


class BaseUrlError(ValueError):
    """The URL may not carry a provider key; the message says why."""


def is_loopback_host(host: str) -> bool:
    """A loopback IP literal, or exactly "localhost" (no name that merely starts with it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, or BaseUrlError if a provider key may not go there."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
        raise BaseUrlError("base URL must be an http(s) URL without spaces or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise BaseUrlError(f"base URL {url!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise BaseUrlError("base URL must start with https:// (or http:// for a loopback "
                           "address)")
    if "@" in parts.netloc:
        raise BaseUrlError("base URL must not contain a user name or password (user@host)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise BaseUrlError("base URL must not have a query or a fragment")
    host = parts.hostname or ""
    bracketed = parts.netloc.startswith("[")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BaseUrlError(f"base URL host [{host}] is not an IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise BaseUrlError(f"base URL host {host!r} is not a host name or IP address")
    if port == 0:
        raise BaseUrlError("base URL port must be 1-65535")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise BaseUrlError(f"base URL must use https: plain http is allowed only to this "
                           f"machine (127.0.0.1, [::1] or localhost), not to {host!r}")
    return url.rstrip("/")
