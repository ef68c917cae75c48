"""Notebook: a web app whose *server* uses its users' capwallet grants.

Its users sign in to the app, write notes, and connect their wallet (a hosted capwallet,
reached over HTTPS). Then the app's backend

* answers a question about the notes (POST /ask), and
* writes a summary of each user's notes on a schedule, with no browser open.

How it connects (OAuth 2.0 authorization code + PKCE, as spec/oauth.md says):
1. /connect sends the user to {wallet}/authorize with an https redirect_uri on this app's
   own origin (client_id = that origin) and a PKCE challenge; the verifier stays here.
2. The wallet shows its consent page; the user approves (or narrows, or denies).
3. /callback checks ``state`` and the issuer, then exchanges the code at {wallet}/token from
   this server. The answer holds the token and the relay URL.
4. The token is stored encrypted (NaCl SecretBox under APP_SECRET_KEY) in this app's SQLite
   database, and never logged: log lines name the grant id.

How it calls: the official ``openai`` SDK with ``base_url = relay_url + "/v1"`` and the token as
the API key. What it does with the relay's answers (the expected handling for any app):
* 401 (revoked, expired): the grant is gone; forget the token and ask the user to connect
  again;
* 429 budget_exceeded (error.reason; error.code is insufficient_quota) / 429 quota: show it
  to the user (what was spent, when it resets);
* 403 confirmation_required: send the user to the approval link the relay returned, then
  retry with the approval (here: the user clicks "ask again" after approving).

Run it (the hosted wallet's URL is all it needs to know about the wallet):

    APP_URL=https://notes.example.com WALLET_URL=https://wallet.example.com \\
    APP_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))') \\
    python -m uvicorn examples.web_server_app.app:app --port 8800
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import nacl.secret
import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

log = logging.getLogger("notebook")

MODEL = "gpt-4o-mini"
PERMISSION = {
    "type": "capwallet_ai", "providers": ["openai"], "models": [MODEL],
    "budget": {"amount": "2.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 20000, "expires_in": 90 * 86400, "logging": "metadata",
}
SESSION_COOKIE = "__Host-notebook"
CONNECT_TTL = 600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, pw_salt BLOB, pw_hash BLOB);
CREATE TABLE IF NOT EXISTS sessions (sid_hash TEXT PRIMARY KEY, user TEXT, created INTEGER);
CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, user TEXT, text TEXT);
CREATE TABLE IF NOT EXISTS pending (state TEXT PRIMARY KEY, user TEXT, verifier TEXT,
                                    created INTEGER);
CREATE TABLE IF NOT EXISTS connections (user TEXT PRIMARY KEY, grant_id TEXT,
                                        relay_url TEXT, token_box BLOB, status TEXT,
                                        note TEXT);
CREATE TABLE IF NOT EXISTS summaries (id INTEGER PRIMARY KEY, user TEXT, created INTEGER,
                                      text TEXT);
"""


@dataclass(frozen=True)
class Settings:
    app_url: str  # this app's origin, https://notes.example.com
    wallet_url: str  # the hosted wallet, https://wallet.example.com
    db_path: str
    secret_key: bytes  # 32 bytes: encrypts tokens at rest
    summary_every: float = 3600.0

    @classmethod
    def from_env(cls) -> Settings:
        key = bytes.fromhex(os.environ["APP_SECRET_KEY"])
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            raise SystemExit("APP_SECRET_KEY must be 32 bytes in hex")
        return cls(app_url=os.environ["APP_URL"].rstrip("/"),
                   wallet_url=os.environ["WALLET_URL"].rstrip("/"),
                   db_path=os.environ.get("APP_DB", "notebook.db"), secret_key=key,
                   summary_every=float(os.environ.get("SUMMARY_EVERY", "3600")))

    @property
    def redirect_uri(self) -> str:
        return self.app_url + "/callback"


class Db:
    """The app's own SQLite database. Tokens go in only as SecretBox ciphertext."""

    def __init__(self, path: str, key: bytes) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._box = nacl.secret.SecretBox(key)

    def q(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def seal(self, token: str) -> bytes:
        return bytes(self._box.encrypt(token.encode()))

    def open(self, box: bytes) -> str:
        return self._box.decrypt(box).decode()


# --- the app's own users (a stand-in for whatever sign-in the app already has) -----------------

def _pw_hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


def _user(request: Request) -> str | None:
    db: Db = request.app.state.db
    sid = request.cookies.get(SESSION_COOKIE, "")
    if not sid:
        return None
    rows = db.q("SELECT user FROM sessions WHERE sid_hash = ?",
                hashlib.sha256(sid.encode()).hexdigest())
    return str(rows[0][0]) if rows else None


def _same_origin(request: Request) -> bool:
    """The app's forms post only from its own pages (SameSite=Lax plus this check)."""
    settings: Settings = request.app.state.settings
    return request.headers.get("origin") == settings.app_url


def page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>Notebook</title><h1>Notebook</h1>{body}",
        status_code=status,
        headers={"content-security-policy": "default-src 'none'; form-action 'self' "
                 + "https:", "x-frame-options": "DENY", "cache-control": "no-store"})


async def home(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return page('<form method=post action=/signin><input name=name placeholder=name>'
                    '<input name=password type=password placeholder=password>'
                    '<button>Sign in</button></form>')
    db: Db = request.app.state.db
    conn = db.q("SELECT status, note FROM connections WHERE user = ?", user)
    status, note = conn[0] if conn else ("none", "")
    notes = "".join(f"<li>{html.escape(t)}</li>" for (t,) in
                    db.q("SELECT text FROM notes WHERE user = ? ORDER BY id", user))
    wallet = ('<p id=wallet>Wallet connected.</p>' if status == "connected" else
              f'<p id=wallet>{html.escape(note or "Connect your AI wallet to use AI.")} '
              '<a id=connect href=/connect>Connect your wallet</a></p>')
    summary = db.q("SELECT text FROM summaries WHERE user = ? ORDER BY id DESC LIMIT 1", user)
    return page(
        f"<p>Signed in as {html.escape(user)}</p>{wallet}<ul id=notes>{notes}</ul>"
        "<form method=post action=/notes><input name=text><button>Add note</button></form>"
        "<form method=post action=/ask><input name=question><button>Ask</button></form>"
        f"<p id=summary>{html.escape(summary[0][0]) if summary else 'No summary yet.'}</p>")


async def signin(request: Request) -> Response:
    if not _same_origin(request):
        return page("forbidden", 403)
    db: Db = request.app.state.db
    form = await request.form()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    if not name or not password:
        return page("name and password, please", 400)
    rows = db.q("SELECT pw_salt, pw_hash FROM users WHERE name = ?", name)
    if rows:
        if not hmac.compare_digest(_pw_hash(password, rows[0][0]), rows[0][1]):
            return page("wrong password", 403)
    else:  # first sign-in creates the account (it is a demo)
        salt = secrets.token_bytes(16)
        db.q("INSERT INTO users VALUES (?, ?, ?)", name, salt, _pw_hash(password, salt))
    sid = secrets.token_urlsafe(32)
    db.q("INSERT INTO sessions VALUES (?, ?, ?)", hashlib.sha256(sid.encode()).hexdigest(),
         name, int(time.time()))
    response = RedirectResponse("/", status_code=303)
    # Lax, not Strict: the wallet's redirect back to /callback is a cross-site navigation.
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, secure=True, samesite="lax",
                        path="/")
    return response


async def add_note(request: Request) -> Response:
    user = _user(request)
    if user is None or not _same_origin(request):
        return page("sign in first", 403)
    text = str((await request.form()).get("text", ""))[:2000]
    if text:
        request.app.state.db.q("INSERT INTO notes (user, text) VALUES (?, ?)", user, text)
    return RedirectResponse("/", status_code=303)


# --- connecting the wallet (OAuth code + PKCE, from the server) --------------------------------

async def connect(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return RedirectResponse("/", status_code=303)
    settings: Settings = request.app.state.settings
    db: Db = request.app.state.db
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(24)
    db.q("DELETE FROM pending WHERE created < ?", int(time.time()) - CONNECT_TTL)
    db.q("INSERT INTO pending VALUES (?, ?, ?, ?)", state, user, verifier, int(time.time()))
    query = urlencode({
        "response_type": "code", "app_name": "Notebook", "client_id": settings.app_url,
        "redirect_uri": settings.redirect_uri, "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256", "authorization_details": json.dumps([PERMISSION]),
    })
    return RedirectResponse(f"{settings.wallet_url}/authorize?{query}", status_code=303)


async def callback(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    db: Db = request.app.state.db
    user = _user(request)
    state = request.query_params.get("state", "")
    rows = db.q("SELECT user, verifier, created FROM pending WHERE state = ?", state)
    db.q("DELETE FROM pending WHERE state = ?", state)
    if user is None or not rows or rows[0][0] != user or (
            rows[0][2] < time.time() - CONNECT_TTL):
        return page("This connection attempt is not yours or has expired. "
                    "<a href=/connect>Try again</a>", 400)
    if request.query_params.get("iss") != settings.wallet_url:  # RFC 9207: the right wallet
        return page("The answer did not come from your wallet.", 400)
    if "error" in request.query_params:
        note = ("You declined the connection." if request.query_params["error"] ==
                "access_denied" else "The wallet refused the request.")
        _set_status(db, user, "none", note)
        return RedirectResponse("/", status_code=303)
    async with request.app.state.http() as http:
        r = await http.post(f"{settings.wallet_url}/token", data={
            "grant_type": "authorization_code", "code": request.query_params.get("code", ""),
            "redirect_uri": settings.redirect_uri, "code_verifier": rows[0][1],
        })
    if r.status_code != 200:
        log.warning("token exchange for %s failed: %s", user, r.status_code)
        return page("The wallet did not hand over access. <a href=/connect>Try again</a>", 502)
    doc = r.json()
    db.q("INSERT OR REPLACE INTO connections VALUES (?, ?, ?, ?, 'connected', '')", user,
         doc["grant_id"], doc["relay_url"], db.seal(doc["access_token"]))
    log.info("user %s connected grant %s", user, doc["grant_id"])
    return RedirectResponse("/", status_code=303)


def _set_status(db: Db, user: str, status: str, note: str) -> None:
    if db.q("SELECT 1 FROM connections WHERE user = ?", user):
        db.q("UPDATE connections SET status = ?, note = ? WHERE user = ?", status, note, user)
    else:
        db.q("INSERT INTO connections VALUES (?, '', '', NULL, ?, ?)", user, status, note)


# --- calling the model through the user's grant ------------------------------------------------

@dataclass
class Outcome:
    text: str | None = None
    problem: str | None = None  # shown to the user
    approval_url: str | None = None  # send the user here


async def ask_model(app: Starlette, user: str, prompt: str) -> Outcome:
    """One model call with ``user``'s grant, and what to do with each refusal."""
    db: Db = app.state.db
    rows = db.q("SELECT grant_id, relay_url, token_box, status FROM connections "
                "WHERE user = ?", user)
    if not rows or rows[0][3] == "none":
        return Outcome(problem="Connect your wallet first.")
    if rows[0][3] == "revoked":  # an earlier call (perhaps the scheduled job) saw the 401
        return Outcome(problem="Your wallet no longer allows this app. Connect again.")
    grant_id, relay_url, box, _ = rows[0]
    async with app.state.http() as http:
        client = openai.AsyncOpenAI(api_key=db.open(box), base_url=relay_url + "/v1",
                                    http_client=http, max_retries=0)
        try:
            answer = await client.chat.completions.create(
                model=MODEL, max_tokens=300, messages=[{"role": "user", "content": prompt}])
        except openai.AuthenticationError:
            # Revoked or expired: this token will never work again. Forget it, ask again.
            db.q("UPDATE connections SET status = 'revoked', token_box = NULL, note = ? "
                 "WHERE user = ?", "Your wallet no longer allows this app (the access was "
                 "revoked or has expired).", user)
            log.info("grant %s of %s refused: revoked or expired", grant_id, user)
            return Outcome(problem="Your wallet no longer allows this app. Connect again.")
        except openai.APIStatusError as exc:
            err = _error_of(exc)
            code = err.get("reason") or err.get("code")  # the relay's reason code
            log.info("grant %s of %s refused: %s", grant_id, user, code)
            if code == "confirmation_required" and isinstance(err.get("approval_url"), str):
                return Outcome(problem="Your wallet asks you to approve this call.",
                               approval_url=err["approval_url"])
            if code in ("budget_exceeded", "quota_exceeded", "rate_limited"):
                return Outcome(problem=f"Your wallet's limit for this app is reached: "
                                       f"{err.get('message', code)}")
            return Outcome(problem=f"The wallet refused the call ({code}).")
    return Outcome(text=answer.choices[0].message.content or "")


def _error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    return inner if isinstance(inner, dict) else {}


async def ask(request: Request) -> Response:
    user = _user(request)
    if user is None or not _same_origin(request):
        return page("sign in first", 403)
    question = str((await request.form()).get("question", ""))[:2000]
    notes = [t for (t,) in request.app.state.db.q(
        "SELECT text FROM notes WHERE user = ? ORDER BY id", user)]
    out = await ask_model(request.app, user, f"Notes: {notes}\nQuestion: {question}")
    if out.approval_url:
        return page(f'<p id=problem>{html.escape(out.problem or "")}</p>'
                    f'<a id=approve href="{html.escape(out.approval_url)}">Approve in your '
                    'wallet</a>, then ask again.', 403)
    if out.problem:
        return page(f'<p id=problem>{html.escape(out.problem)}</p>'
                    '<a id=connect href=/connect>Connect your wallet</a> <a href=/>Back</a>',
                    402 if "limit" in out.problem else 401 if "Connect" in out.problem
                    else 403)
    return page(f'<p id=answer>{html.escape(out.text or "")}</p><a href=/>Back</a>')


async def summaries_json(request: Request) -> Response:
    user = _user(request)
    if user is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    db: Db = request.app.state.db
    rows = db.q("SELECT created, text FROM summaries WHERE user = ? ORDER BY id", user)
    conn = db.q("SELECT status, note FROM connections WHERE user = ?", user)
    return JSONResponse({"summaries": [{"created": c, "text": t} for c, t in rows],
                         "connection": conn[0][0] if conn else "none",
                         "note": conn[0][1] if conn else ""})


# --- the scheduled job: no browser, no user present --------------------------------------------

async def summarize_all(app: Starlette) -> int:
    """Summarize every connected user's notes; returns how many summaries were written."""
    db: Db = app.state.db
    written = 0
    for (user,) in db.q("SELECT user FROM connections WHERE status = 'connected'"):
        notes = [t for (t,) in db.q("SELECT text FROM notes WHERE user = ? ORDER BY id", user)]
        if not notes:
            continue
        out = await ask_model(app, user, f"Summarize these notes in one line: {notes}")
        if out.text is not None:
            db.q("INSERT INTO summaries (user, created, text) VALUES (?, ?, ?)", user,
                 int(time.time()), out.text)
            written += 1
        # A refusal was recorded by ask_model (a revoked grant is marked; the user sees the
        # note next time they visit). The job just moves on.
    return written


async def _scheduler(app: Starlette, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await summarize_all(app)
        except Exception:  # keep the schedule; the failure is in the log (no token in it)
            log.exception("summary run failed")


def create_app(settings: Settings,
               http: Callable[[], httpx.AsyncClient] | None = None) -> Starlette:
    """``http`` makes the HTTP client used toward the wallet and relay (tests point it at
    a local CA); by default an ordinary httpx client with the system's roots."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_scheduler(app, settings.summary_every))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    if urlsplit(settings.app_url).scheme != "https":
        raise SystemExit("APP_URL must be https (the wallet accepts https redirect URIs)")
    app = Starlette(routes=[
        Route("/", home), Route("/signin", signin, methods=["POST"]),
        Route("/notes", add_note, methods=["POST"]), Route("/connect", connect),
        Route("/callback", callback), Route("/ask", ask, methods=["POST"]),
        Route("/api/summaries", summaries_json),
    ], lifespan=lifespan)
    app.state.settings = settings
    app.state.db = Db(settings.db_path, settings.secret_key)
    app.state.http = http or (lambda: httpx.AsyncClient(timeout=60))
    return app


def __getattr__(name: str) -> Any:
    """``uvicorn examples.web_server_app.app:app`` builds the app from the environment."""
    if name == "app":
        return create_app(Settings.from_env())
    raise AttributeError(name)
