"""Web origins as the origin caveat names them and browsers send them (spec/caveats.md#origin).

An origin is ``scheme "://" host [":" port]`` (RFC 6454 serialisation): scheme ``https`` or
``http``, a lower-case ASCII host (a DNS name in A-label form, a dotted IPv4 address, or an IPv6
address in brackets, in their one canonical form), and a port only when it is not the scheme's
default (443, 80). That is exactly how a browser writes the ``Origin`` header, so a caveat that
must be canonical and a header that is normalised compare as plain strings. Anything else
(a path, userinfo, a query, ``null``, a non-ASCII host) is not an origin: it never matches.
"""

from __future__ import annotations

import ipaddress
import re

DEFAULT_PORTS = {"https": 443, "http": 80}
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|"
                     r"[A-Za-z0-9.\-]+)(?::(?P<port>[0-9]{1,5}))?")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?")
MAX_ORIGIN = 300


def _host(text: str) -> str | None:
    """The canonical form of a host, or None if it is not one."""
    if text.startswith("["):
        try:
            addr = ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            return None
        return f"[{addr.compressed}]"
    host = text.lower()
    if len(host) > 253 or host.endswith("."):
        return None
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if all(label.isdigit() for label in labels):  # an IPv4 address, written one way only
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return host


def normalise(text: str) -> str | None:
    """The canonical serialisation of an origin written with any case or a default port.

    Returns None for anything that is not an http(s) origin (``null``, a URL with a path,
    userinfo, a bad host or port), which therefore matches no origin caveat.
    """
    if len(text) > MAX_ORIGIN or not text.isascii():
        return None
    m = _ORIGIN.fullmatch(text)
    if m is None:
        return None
    scheme = m["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        return None
    host = _host(m["host"])
    if host is None:
        return None
    port_text = m["port"]
    if port_text is None:
        return f"{scheme}://{host}"
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    if port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def is_canonical(text: str) -> bool:
    """True if ``text`` is an origin in its one canonical spelling (what a caveat must hold)."""
    return normalise(text) == text
