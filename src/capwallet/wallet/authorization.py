"""An app's authorization request: what GET /authorize asked for, checked and typed.

Parameters: response_type=code, app_name, redirect_uri, state, code_challenge,
code_challenge_method=S256 (plain is refused), authorization_details (see permissions.py),
and optionally origin / client_id (the app's origin; must match the redirect URI's origin).
Redirect URIs are https on the app's origin, or loopback http on any port for native apps
(RFC 8252 section 7.3). A bad or missing redirect URI is shown to the user, never followed.

This module is the leaf the OAuth handlers (oauth.py) and the consent book (consents.py)
both import: it imports neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from capwallet.wallet.codes import valid_challenge
from capwallet.wallet.permissions import Permission, PermissionRequestError

_APP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,80}")
_STATE_MAX = 512
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class AuthorizeError(Exception):
    """An error to send back to the app's redirect URI (RFC 6749 section 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class BadRedirect(Exception):
    """The redirect URI itself is unusable: tell the user, do not redirect."""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    app_name: str
    origin: str
    redirect_uri: str
    state: str
    code_challenge: str
    permission: Permission

    @property
    def is_native(self) -> bool:
        return urlsplit(self.redirect_uri).hostname in LOOPBACK

    @property
    def origin_label(self) -> str:
        return "an app on this computer" if self.is_native else self.origin


def check_redirect_uri(uri: str) -> str:
    """The origin of an acceptable redirect URI; raises BadRedirect."""
    if not uri or len(uri) > 2000:
        raise BadRedirect("the app sent no redirect_uri, or one that is too long")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise BadRedirect("the app's redirect_uri is not a valid URL") from None
    if parts.fragment or "#" in uri:
        raise BadRedirect("a redirect_uri must not have a fragment")
    if parts.username or parts.password:
        raise BadRedirect("a redirect_uri must not carry a user name or password")
    host = parts.hostname or ""
    if parts.scheme == "http" and host in LOOPBACK:
        netloc = f"[{host}]" if ":" in host else host
        return f"http://{netloc}" + (f":{port}" if port else "")
    if parts.scheme == "https" and host:
        return f"https://{parts.netloc.lower()}"
    raise BadRedirect(
        "a redirect_uri must be https, or http on a loopback address (127.0.0.1 or [::1])"
    )


def parse_authorization_request(params: dict[str, str]) -> AuthorizationRequest:
    """Raises BadRedirect (show to user) or AuthorizeError (send to the app)."""
    redirect_uri = params.get("redirect_uri", "")
    redirect_origin = check_redirect_uri(redirect_uri)
    if params.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", "response_type must be code")
    state = params.get("state", "")
    if not state or len(state) > _STATE_MAX:
        raise AuthorizeError("invalid_request", "state is required (at most 512 characters)")
    method = params.get("code_challenge_method", "")
    if method != "S256":
        raise AuthorizeError(
            "invalid_request", "code_challenge_method must be S256 (plain is not accepted)"
        )
    challenge = params.get("code_challenge", "")
    if not valid_challenge(challenge):
        raise AuthorizeError("invalid_request", "code_challenge must be base64url(SHA-256)")
    name = params.get("app_name", "").strip()
    if not _APP_NAME.fullmatch(name):
        raise AuthorizeError("invalid_request", "app_name is required (1-80 printable chars)")
    origin = params.get("origin") or params.get("client_id") or redirect_origin
    native = urlsplit(redirect_uri).hostname in LOOPBACK
    if not _same_origin(origin, redirect_origin, loopback_any_port=native):
        raise AuthorizeError("invalid_request", "origin does not match the redirect_uri")
    if params.get("client_id") and params.get("origin") and (
        params["client_id"] != params["origin"]
    ):
        raise AuthorizeError("invalid_request", "client_id and origin differ")
    try:
        permission = Permission.from_details(params.get("authorization_details", ""))
    except PermissionRequestError as exc:
        raise AuthorizeError("invalid_authorization_details", str(exc)) from None
    return AuthorizationRequest(name, origin.rstrip("/").lower(), redirect_uri, state,
                                challenge, permission)


def _same_origin(a: str, b: str, *, loopback_any_port: bool) -> bool:
    try:
        pa, pb = urlsplit(a.rstrip("/").lower()), urlsplit(b.lower())
        if pa.path or pa.query or pa.fragment:
            return False
        if loopback_any_port:
            return pa.scheme == pb.scheme and pa.hostname in LOOPBACK
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:
        return False
