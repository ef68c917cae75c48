"""Signing in to a wallet on a server: passkeys (WebAuthn), and the passphrase as a fallback.

A hosted wallet is reachable from anywhere, so the one-time link that `capwallet serve`
prints is for its owner at the console only. Everyday sign-in is a passkey:

* the first passkey is registered by the owner, signed in with the console's link, on the
  Passkeys page (``/passkeys``); more are added and removed there (from any signed-in device);
* sign-in asks the browser for an assertion of a registered passkey over a challenge the
  server made (single use, five minutes), with user verification required;
* the ceremonies are checked by Duo's py_webauthn (``webauthn`` on PyPI): origin, RP ID
  (the public host), challenge, user presence and verification, signature, sign count.
  We write no verifier.

A successful sign-in starts a server-side session (``sessions.py``): the same two secrets as
on loopback (HttpOnly ``__Host-`` cookie + origin-storage header), the same expiry, and it
appears on the sessions list, where it can be ended.

The passphrase sign-in is the fallback (a lost passkey): it is throttled per client and
overall with a growing delay, and every failure is logged (``throttle.py``). Passkeys exist
only in the hosted profile: WebAuthn does not accept an IP address such as 127.0.0.1 as a
relying party, and on loopback the console link is the sign-in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import webauthn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from webauthn.helpers import bytes_to_base64url, options_to_json
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from capwallet.wallet import json_input
from capwallet.wallet.context import WalletContext
from capwallet.wallet.deployment import client_address, wallet_origin
from capwallet.wallet.keystore import Keystore, KeystoreError
from capwallet.wallet.pages import navigate
from capwallet.wallet.signin_state import SignIn

log = logging.getLogger("capwallet.signin")

MAX_PASSKEYS = 50
_NAME_MAX = 60


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


def _rp(request: Request) -> tuple[str, str]:
    """(RP ID, expected origin): the public host and origin of this wallet."""
    origin = wallet_origin(request)
    return urlsplit(origin).hostname or "", origin


def _signin(request: Request) -> SignIn:
    """The sign-in state; only called after ``enabled`` said it exists."""
    signin = _ctx(request).signin
    if signin is None:
        raise RuntimeError("passkeys are not set up on this server")
    return signin


def enabled(request: Request) -> bool:
    """Passkeys (and the passphrase sign-in) are for a wallet served over https."""
    ctx = _ctx(request)
    return bool(ctx.deployment.secure) and ctx.signin is not None


def _refuse(reason: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": reason, "message": message}, status_code=status,
                        headers={"cache-control": "no-store"})


async def _json(request: Request) -> dict[str, Any] | None:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = json_input.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _signed_in(request: Request, body: dict[str, Any] | None) -> str | None:
    """The session id of a signed-in request whose CSRF token (in the JSON) is right."""
    ctx = _ctx(request)
    csrf = body.get("csrf") if body else None
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return None
    sid: str | None = ctx.sessions.session_id(request)
    return sid


def _start_session(request: Request, how: str) -> Response:
    ctx = _ctx(request)
    agent = request.headers.get("user-agent", "")[:80]
    new = ctx.sessions.start(label=f"{how} · {client_address(request)} · {agent}")
    response = JSONResponse({"location": "/", "session": new.header_value},
                            headers={"cache-control": "no-store"})
    ctx.sessions.set_cookie(response, new)
    return response


# --- registration (signed in: the console's link, or an earlier passkey) ----------------------

async def register_options(request: Request) -> Response:
    if not enabled(request):
        return _refuse("passkeys_unavailable", "passkeys need the wallet served over https")
    body = await _json(request)
    sid = _signed_in(request, body)
    if sid is None:
        return _refuse("forbidden", "sign in first (and send the page's CSRF token)", 403)
    signin = _signin(request)
    existing = signin.passkeys.all()
    if len(existing) >= MAX_PASSKEYS:
        return _refuse("too_many_passkeys", f"at most {MAX_PASSKEYS} passkeys; remove one")
    rp_id, _ = _rp(request)
    options = webauthn.generate_registration_options(
        rp_id=rp_id, rp_name="capwallet", user_name="owner", user_display_name="Wallet owner",
        user_id=signin.passkeys.user_id(),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=_b64(p.credential_id))
                             for p in existing],
    )
    cid = signin.ceremonies.start("register", options.challenge, sid)
    return JSONResponse({"ceremony": cid, "publicKey": json.loads(options_to_json(options))},
                        headers={"cache-control": "no-store"})


async def register(request: Request) -> Response:
    if not enabled(request):
        return _refuse("passkeys_unavailable", "passkeys need the wallet served over https")
    body = await _json(request)
    sid = _signed_in(request, body)
    if sid is None or body is None:
        return _refuse("forbidden", "sign in first (and send the page's CSRF token)", 403)
    signin = _signin(request)
    challenge = signin.ceremonies.take(str(body.get("ceremony", "")), "register", sid)
    if challenge is None:
        return _refuse("ceremony_expired", "start again: the request expired or was used")
    rp_id, origin = _rp(request)
    try:
        verified = webauthn.verify_registration_response(
            credential=body.get("credential") or {}, expected_challenge=challenge,
            expected_rp_id=rp_id, expected_origin=origin, require_user_verification=True)
    except (InvalidRegistrationResponse, ValueError, TypeError, KeyError) as exc:
        log.warning("passkey registration refused from %s: %s", client_address(request), exc)
        return _refuse("passkey_invalid", "the browser's answer did not check out")
    name = "".join(c for c in str(body.get("name") or "") if c.isprintable()).strip()
    name = name[:_NAME_MAX] or f"Passkey {time.strftime('%Y-%m-%d')}"
    cred_id = bytes_to_base64url(verified.credential_id)
    if signin.passkeys.get(cred_id) is not None:
        return _refuse("passkey_exists", "this passkey is registered already")
    signin.passkeys.add(cred_id, verified.credential_public_key, verified.sign_count, name,
                        _ctx(request).now())
    log.info("passkey %r registered from %s", name, client_address(request))
    return JSONResponse({"location": "/passkeys", "registered": name},
                        headers={"cache-control": "no-store"})


async def remove(request: Request) -> Response:
    ctx = _ctx(request)
    form = await request.form()
    csrf = form.get("csrf")
    if not ctx.sessions.check_csrf(request, csrf if isinstance(csrf, str) else None):
        return ctx.pages.forbidden(request)
    if not enabled(request):
        return navigate("/passkeys")
    removed = _signin(request).passkeys.remove(request.path_params["credential_id"])
    if removed:
        log.info("passkey removed from %s", client_address(request))
    return navigate("/passkeys")


async def passkeys_page(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.sessions.current(request) is None:
        return ctx.pages.locked(request)
    listed = ctx.signin.passkeys.all() if ctx.signin is not None else []
    return ctx.pages.render(request, "passkeys.html", passkeys=listed,
                            available=enabled(request), nav="passkeys")


# --- sign-in -------------------------------------------------------------------------------------

async def signin_options(request: Request) -> Response:
    if not enabled(request):
        return _refuse("passkeys_unavailable", "passkeys need the wallet served over https")
    signin = _signin(request)
    rp_id, _ = _rp(request)
    options = webauthn.generate_authentication_options(
        rp_id=rp_id, user_verification=UserVerificationRequirement.REQUIRED,
        allow_credentials=[PublicKeyCredentialDescriptor(id=_b64(p.credential_id))
                           for p in signin.passkeys.all()],
    )
    cid = signin.ceremonies.start("signin", options.challenge, None)
    return JSONResponse({"ceremony": cid, "publicKey": json.loads(options_to_json(options))},
                        headers={"cache-control": "no-store"})


async def signin_passkey(request: Request) -> Response:
    if not enabled(request):
        return _refuse("passkeys_unavailable", "passkeys need the wallet served over https")
    body = await _json(request)
    if body is None:
        return _refuse("invalid_request", "send the browser's answer as JSON")
    signin = _signin(request)
    challenge = signin.ceremonies.take(str(body.get("ceremony", "")), "signin", None)
    if challenge is None:
        return _refuse("ceremony_expired", "start again: the request expired or was used")
    credential = body.get("credential")
    cred_id = credential.get("id") if isinstance(credential, dict) else None
    passkey = signin.passkeys.get(cred_id) if isinstance(cred_id, str) else None
    if passkey is None:
        log.warning("passkey sign-in with an unknown credential from %s",
                    client_address(request))
        return _refuse("passkey_unknown", "this passkey is not registered with this wallet",
                       401)
    rp_id, origin = _rp(request)
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential or {}, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count, require_user_verification=True)
    except (InvalidAuthenticationResponse, ValueError, TypeError, KeyError) as exc:
        log.warning("passkey sign-in refused from %s: %s", client_address(request), exc)
        return _refuse("passkey_invalid", "the browser's answer did not check out", 401)
    signin.passkeys.used(passkey.credential_id, verified.new_sign_count, _ctx(request).now())
    log.info("passkey sign-in (%s) from %s", passkey.name, client_address(request))
    return _start_session(request, f"passkey {passkey.name}")


async def signin_passphrase(request: Request) -> Response:
    """The fallback: the keystore passphrase, throttled (throttle.py) and logged."""
    ctx = _ctx(request)
    if not enabled(request):
        return _refuse("signin_unavailable", "on this computer, use the link `capwallet "
                       "serve` printed", 404)
    signin = _signin(request)
    client = client_address(request)
    verdict = signin.throttle.check(client)
    if verdict.wait > 0:
        return _throttled(ctx, request, int(verdict.wait) + 1, verdict.scope)
    form = await request.form()
    offered = form.get("passphrase")
    ok = False
    if isinstance(offered, str) and offered and len(offered) <= 1024:
        ok = await anyio.to_thread.run_sync(_passphrase_ok, ctx.home.keystore_path, offered)
    if not ok:
        signin.throttle.failure(client)
        return ctx.pages.render(request, "message.html", 401, title="Wrong passphrase",
                                message="That is not the wallet's passphrase.", tone="error")
    signin.throttle.success(client)
    return _start_session(request, "passphrase")


def _throttled(ctx: WalletContext, request: Request, wait: int, scope: str) -> Response:
    why = ("from this address" if scope == "client" else "at this wallet")
    response: Response = ctx.pages.render(
        request, "message.html", 429, title="Too many wrong passphrases",
        message=f"Too many wrong passphrases {why}: wait {wait} seconds before the next try, "
                "or sign in with a passkey.", tone="error")
    response.headers["retry-after"] = str(wait)
    return response


def _passphrase_ok(path: Path, offered: str) -> bool:
    try:
        Keystore.open(path, offered)
    except KeystoreError:
        return False
    return True


def _b64(credential_id: str) -> bytes:
    return webauthn.base64url_to_bytes(credential_id)
