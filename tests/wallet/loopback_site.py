"""Another web origin on this machine, for the browser tests: a page server on a loopback port.

The browser tests need the other side of a cross-origin check: a hostile page, an app's own
origin, a program listening on another 127.0.0.1 port that the browser is sent to. Each is
this server with other pages; it records what the browser sent (the Cookie header above all,
since browsers send a host's cookies to every port of it).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopbackSite:
    url: str  # http://<host>:<port>, no trailing slash
    pages: dict[str, str] = field(default_factory=dict)  # request path (query included) -> HTML
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Cookie header) per GET

    def cookies(self) -> set[str]:
        """The non-empty Cookie headers the browser sent."""
        return {c for _, c in self.seen if c}


@contextlib.contextmanager
def loopback_site(host: str = "127.0.0.1", *,
                  fallback: str | None = None) -> Iterator[LoopbackSite]:
    """Serve ``site.pages`` on 127.0.0.1 at a free port, named ``host`` in ``site.url`` (give
    "localhost" for an origin other than the wallet's 127.0.0.1); a path with no page gets
    ``fallback``, or 404 when that is None. Tests may add pages while it runs."""
    site = LoopbackSite("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.seen.append((self.path, self.headers.get("cookie", "")))
            page = site.pages.get(self.path, fallback)
            body = (page if page is not None else "not found").encode()
            self.send_response(200 if page is not None else 404)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://{host}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
