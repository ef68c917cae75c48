"""An app's authorization request: what GET /authorize asked for, checked and typed.

Parameters: response_type=code, redirect_uri, state, code_challenge,
code_challenge_method=S256 (plain is refused), authorization_details (see permissions.py),
app_name (the name the app gives itself), and client_id or origin, which say what kind of app
is asking:

* a **web app with a verified identity**: ``client_id`` is an https URL with a path, the app's
  Client ID Metadata Document (client_metadata.py). The wallet fetches it; the name shown is
  the document's ``client_name``, the origin is the client_id's, and the redirect_uri must be
  one the document lists.
* a **web app**: ``client_id`` (or ``origin``) is a bare origin, ``https://notes.example`` or
  for development ``http://localhost:5500``; or neither is sent and the redirect_uri is https.
  The redirect_uri must be on exactly that origin (scheme, host and port). The name is the
  app's own claim and the consent page says so.
* a **native app** (RFC 8252): neither client_id nor origin, and a loopback http redirect_uri
  (127.0.0.1, [::1], localhost) on any port. Its grant has no origin, so no browser page can
  use its token through CORS.

Web origins are https, or http on localhost/127.0.0.1/[::1] for development. A bad redirect
URI, or one off the app's origin, is shown to the user with a reason code, never followed.
Each parameter is sent once (RFC 6749 section 3.1): one sent twice is refused rather than one
of its values picked, shown to the user when it is redirect_uri, client_id or origin (which
say where an error would go), else sent back to the app as invalid_request.

This module is the leaf the OAuth handlers (oauth.py) and the consent book (consents.py)
both import: it imports neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from capwallet.wallet.client_metadata import ClientMetadata, is_metadata_url, origin_of
from capwallet.wallet.codes import valid_challenge
from capwallet.wallet.permissions import Permission, PermissionRequestError

_APP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,80}")
_STATE_MAX = 512
LOOPBACK = ("127.0.0.1", "::1", "localhost")

# Reason codes of BadRedirect (shown to the user; never sent to the redirect URI).
REDIRECT_INVALID = "redirect_uri_invalid"
REDIRECT_OFF_ORIGIN = "redirect_uri_off_origin"
REDIRECT_NOT_REGISTERED = "redirect_uri_not_registered"
CLIENT_ID_INVALID = "client_id_invalid"


class AuthorizeError(Exception):
    """An error to send back to the app's redirect URI (RFC 6749 section 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class BadRedirect(Exception):
    """The redirect URI (or the app's identity) is unusable: tell the user, do not redirect."""

    def __init__(self, message: str, reason: str = REDIRECT_INVALID) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    app_name: str
    origin: str  # the web app's origin; "" for a native app
    redirect_uri: str
    state: str
    code_challenge: str
    permission: Permission
    client_id: str = ""  # the metadata document URL when the identity is verified
    verified: bool = False  # app_name comes from the app's metadata document
    logo_uri: str = ""

    @property
    def is_native(self) -> bool:
        return not self.origin

    @property
    def origin_label(self) -> str:
        return "an app on this computer" if self.is_native else self.origin


def web_origin(value: str) -> str:
    """A web app's origin, serialized as browsers send it; raises ValueError if unusable.

    https on any host, or http on a loopback host (development)."""
    parts = urlsplit(value)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username \
            or parts.password or "#" in value or "?" in value:
        raise ValueError("an origin is scheme://host[:port], nothing more")
    origin = origin_of(value)
    if parts.scheme.lower() == "http" and (parts.hostname or "") not in LOOPBACK:
        raise ValueError("a web app's origin must be https (or http on localhost, 127.0.0.1 "
                         "or [::1] for development)")
    return origin


def check_redirect_uri(uri: str) -> str:
    """The origin of an acceptable redirect URI; raises BadRedirect."""
    if not uri or len(uri) > 2000:
        raise BadRedirect("the app sent no redirect_uri, or one that is too long")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 -- ValueError on a bad port
    except ValueError:
        raise BadRedirect("the app's redirect_uri is not a valid URL") from None
    if parts.fragment or "#" in uri:
        raise BadRedirect("a redirect_uri must not have a fragment")
    if parts.username or parts.password:
        raise BadRedirect("a redirect_uri must not carry a user name or password")
    host = parts.hostname or ""
    if (parts.scheme == "http" and host in LOOPBACK) or (parts.scheme == "https" and host):
        try:
            return origin_of(uri)
        except ValueError:
            raise BadRedirect("the app's redirect_uri has no usable host") from None
    raise BadRedirect(
        "a redirect_uri must be https, or http on a loopback address (127.0.0.1 or [::1])"
    )


def claimed_origin(params: dict[str, str]) -> str | None:
    """The origin the app claims by client_id / origin (not a metadata URL), if any."""
    client_id, origin = params.get("client_id", ""), params.get("origin", "")
    if client_id and is_metadata_url(client_id):
        client_id = ""  # judged by its document
    claims = {c for c in (client_id, origin) if c}
    if not claims:
        return None
    try:
        origins = {web_origin(c) for c in claims}
    except ValueError as exc:
        raise BadRedirect(
            f"the app's client_id/origin is not usable: {exc}. It must be the app's web "
            "origin, or the https URL of its client metadata document", CLIENT_ID_INVALID,
        ) from None
    if len(origins) != 1:
        raise BadRedirect("the app's client_id and origin differ", CLIENT_ID_INVALID)
    return origins.pop()


# The parameters that say where an error goes: one of them twice is shown, never followed.
_WHERE = ("redirect_uri", "client_id", "origin")


def repeated_names(items: Iterable[tuple[str, object]]) -> frozenset[str]:
    """The names that occur more than once in a query's or a form's (name, value) pairs."""
    seen: set[str] = set()
    twice: set[str] = set()
    for name, _ in items:
        (twice if name in seen else seen).add(name)
    return frozenset(twice)


def parse_authorization_request(
    params: dict[str, str], metadata: ClientMetadata | None = None,
    repeated: frozenset[str] = frozenset(),
) -> AuthorizationRequest:
    """Raises BadRedirect (show to user) or AuthorizeError (send to the app).

    ``metadata`` is the fetched document when client_id is a metadata URL (the caller fetches
    it: that is network I/O, kept out of this pure check). ``repeated``: the parameters the
    request sent more than once (repeated_names), each refused."""
    for name in _WHERE:
        if name in repeated:
            raise BadRedirect(f"the app sent {name} more than once",
                              REDIRECT_INVALID if name == "redirect_uri" else CLIENT_ID_INVALID)
    redirect_uri = params.get("redirect_uri", "")
    redirect_origin = check_redirect_uri(redirect_uri)
    claimed = claimed_origin(params)
    if metadata is not None:
        if claimed is not None and claimed != metadata.origin:
            raise BadRedirect("the app's origin parameter is not its client_id's origin",
                              CLIENT_ID_INVALID)
        if redirect_uri not in metadata.redirect_uris:
            raise BadRedirect(
                f"the redirect_uri is not one that the app's metadata document "
                f"({metadata.client_id}) lists", REDIRECT_NOT_REGISTERED)
        origin = metadata.origin
    elif claimed is not None:
        origin = claimed
    elif urlsplit(redirect_uri).scheme == "https":
        origin = redirect_origin
    else:
        origin = ""  # a native app: loopback redirect on any port (RFC 8252 section 7.3)
    if origin and redirect_origin != origin:
        raise BadRedirect(
            f"the redirect_uri ({redirect_uri}) is not on the app's origin ({origin})",
            REDIRECT_OFF_ORIGIN)
    if repeated:
        raise AuthorizeError("invalid_request", f"{min(repeated)} was sent more than once")
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
    if metadata is not None:
        name = metadata.client_name
    else:
        name = params.get("app_name", "").strip()
        if not _APP_NAME.fullmatch(name):
            raise AuthorizeError("invalid_request",
                                 "app_name is required (1-80 printable chars)")
    try:
        permission = Permission.from_details(params.get("authorization_details", ""))
    except PermissionRequestError as exc:
        raise AuthorizeError("invalid_authorization_details", str(exc)) from None
    return AuthorizationRequest(
        name, origin, redirect_uri, state, challenge, permission,
        client_id=metadata.client_id if metadata else "", verified=metadata is not None,
        logo_uri=metadata.logo_uri if metadata else "",
    )
