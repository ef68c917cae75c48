"""The web example's own origin: a static server for examples/web_app/ on a loopback port.

The example is a web app like any other, so it must live on another origin than the wallet
(another port is another origin): that is what makes the browser apply CORS, origin-bound
tokens and the popup flow to it. The page has no build step; its import map points at the
repository's js/src/ (the capwallet package) and node_modules/openai/ (installed by
``npm ci``), so this server serves exactly those three folders of the repository and nothing
else (no listing, no path outside them).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[3]
PAGE_PATH = "/examples/web_app/"
SERVED = ("examples/web_app", "js/src", "node_modules/openai")
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
          ".html": "text/html; charset=utf-8", ".json": "application/json",
          ".map": "application/json"}


def missing_files(repo: Path = REPO) -> list[str]:
    """What the example needs that is not there (empty when it can be served)."""
    need = [repo / "examples/web_app/index.html", repo / "js/src/index.js",
            repo / "node_modules/openai/index.mjs"]
    return [str(p.relative_to(repo)) for p in need if not p.is_file()]


class _Handler(SimpleHTTPRequestHandler):
    repo: Path = REPO

    def translate_path(self, path: str) -> str:
        rel = unquote(urlsplit(path).path).lstrip("/")
        if rel == "examples/web_app" or rel.endswith("/"):
            rel += "/index.html" if not rel.endswith("/") else "index.html"
        target = (self.repo / rel).resolve()
        for folder in SERVED:
            root = (self.repo / folder).resolve()
            if target == root or root in target.parents:
                return str(target)
        return str(self.repo / "__not_served__")

    def list_directory(self, path: Any) -> None:
        self.send_error(404)
        return None

    def guess_type(self, path: Any) -> str:
        return _TYPES.get(Path(str(path)).suffix, "application/octet-stream")

    def end_headers(self) -> None:
        self.send_header("cache-control", "no-store")
        self.send_header("x-content-type-options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the redirect page's query holds an OAuth code: keep it out of logs


@contextlib.contextmanager
def running_example_site(port: int = 0, host: str = "127.0.0.1",
                         repo: Path = REPO) -> Iterator[str]:
    """Serve the example; yields its origin (http://127.0.0.1:PORT)."""
    handler = type("ExampleHandler", (_Handler,), {"repo": repo})
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
