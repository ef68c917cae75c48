"""Server-rendered pages: a Jinja2 environment that escapes everything by default.

App names, origins, model names and approval summaries come from apps, so they are hostile
text. Autoescaping is on for every template and nothing is marked safe; the spend chart is
SVG elements whose text goes through the same escaping.

A page that shows anything (dashboard, consent, approvals) is served in two steps, because a
cookie alone does not prove a session on loopback (``sessions.py``): a navigation gets a shell
with no data (``shell.html``), whose script (static/wallet.js) fetches the same URL again with
the session header and shows what comes back. ``behind_shell`` does the first step for a
handler; answers to the script's form posts are JSON ``{"location": ...}`` (``navigate``),
since a fetch must not follow a redirect to an app.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from capwallet.money import format_micros, format_minor, format_short
from capwallet.wallet.sessions import SESSION_HEADER, BrowserSessions
from capwallet.wallet.usage import limit_words, result_words

STATIC = {"wallet.css": "text/css", "wallet.js": "text/javascript"}

DURATIONS = [
    (3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"), (30 * 86400, "30 days"),
    (90 * 86400, "90 days"), (365 * 86400, "1 year"),
]


def when(ts: int | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(ts: int | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%d %b %Y")


def duration(seconds: int) -> str:
    for s, label in DURATIONS:
        if s == seconds:
            return label
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds // 60} minutes"


def amount(minor: int, currency: str) -> str:
    """Decimal amount without the currency, for form fields: 1050 EUR -> '10.50'."""
    return format_minor(minor, currency).split(" ")[0]


def expiry_choices(requested: int) -> list[tuple[int, str]]:
    choices = [(s, label) for s, label in DURATIONS if s < requested]
    choices.append((requested, duration(requested)))
    return choices


class Pages:
    def __init__(self, sessions: BrowserSessions, started_by: str = "capwallet serve") -> None:
        self.sessions = sessions
        self.started_by = started_by  # the command whose terminal shows the sign-in link
        self.env = Environment(
            loader=PackageLoader("capwallet.wallet", "templates"),
            autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters.update(
            money=lambda m, c: format_minor(int(m), str(c)),  # limits: minor units
            micros=lambda m, c: format_micros(int(m), str(c)),  # costs: microunits, exact
            short=lambda m, c: format_short(int(m), str(c)),  # costs at a glance
            result=result_words, limit_words=limit_words,
            when=when, day=day,
            duration=duration, amount=amount, num=lambda n: f"{int(n):,}",
        )
        self.env.globals.update(expiry_choices=expiry_choices)
        folder = resources.files("capwallet.wallet").joinpath("static")
        self.static = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    @property
    def css(self) -> bytes:
        return self.static["wallet.css"]

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        auth = self.sessions.current(request)
        ctx.setdefault("csrf", auth.csrf if auth else "")
        ctx.setdefault("signed_in", auth is not None)
        ctx.setdefault("pending_count", 0)
        ctx.setdefault("nav", "")
        ctx.setdefault("hosted", _public_origin(request))
        html = self.env.get_template(template).render(**ctx)
        return HTMLResponse(html, status_code=status)

    def shell(self, request: Request) -> Response:
        """The data-less page a navigation gets; its script loads the content."""
        return self.render(request, "shell.html", 200, signed_in=False, csrf="")

    def error(self, request: Request, title: str, message: str, status: int = 400,
              command: str = "") -> Response:
        return self.render(request, "message.html", status, title=title, message=message,
                           tone="error", command=command)

    def forbidden(self, request: Request) -> Response:
        return self.render(
            request, "message.html", 403, title="Request refused",
            message="This form did not come from your wallet's own page (missing or wrong "
                    "security token). Nothing was changed.", tone="error",
        )

    def locked(self, request: Request) -> Response:
        """Not signed in. On a hosted (https) wallet: the sign-in page. Locally: the sign-in
        link is in the terminal of the command that started the wallet (``serve`` or
        ``demo``); wallet.js brings the browser back to this page after sign-in, so a waiting
        consent is not lost."""
        if _public_origin(request).startswith("https://"):
            return self.render(request, "signin.html", 401)  # passkey, or the passphrase
        waiting = request.url.path == "/authorize"
        return self.render(
            request, "message.html", 401, title="Your wallet is locked in this browser",
            message="Open the sign-in link that this command printed in its terminal:",
            command=self.started_by,
            after=("You come back to this request once you are signed in." if waiting
                   else "You come back to this page once you are signed in."),
            tone="info",
        )

    def consent(self, request: Request, areq: Any, consent_id: str, *, error: str | None,
                quote: Any, status: int = 200) -> Response:
        return self.render(request, "consent.html", status, req=areq, perm=areq.permission,
                           consent_id=consent_id, error=error, quote=quote)


def _public_origin(request: Request) -> str:
    """The public URL of a hosted wallet ('' on loopback)."""
    wallet = getattr(request.app.state, "wallet", None)
    origin = getattr(getattr(wallet, "deployment", None), "public_origin", None)
    return origin if isinstance(origin, str) else ""


def navigate(location: str, *, forget: bool = False) -> JSONResponse:
    """The answer to a form the page's script posted: go to ``location`` (``forget``: also
    drop the session secret from the browser's storage, at sign-out)."""
    body: dict[str, object] = {"location": location}
    if forget:
        body["forget"] = True
    return JSONResponse(body, headers={"cache-control": "no-store"})


Handler = Callable[[Request], Awaitable[Response]]


def behind_shell(handler: Handler) -> Handler:
    """A GET without the session header (a navigation) gets the shell, never ``handler``."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        if SESSION_HEADER not in request.headers:
            pages: Pages = request.app.state.wallet.pages
            return pages.shell(request)
        return await handler(request)

    return page
