"""Discovery: how an app that knows only the wallet's (or the relay's) URL finds the rest.

* ``GET /.well-known/oauth-authorization-server`` is the wallet's RFC 8414 authorization
  server metadata: its endpoints, what it supports, and the capwallet extension
  ``capwallet_relay_url`` (where the granted token is used);
* ``GET /.well-known/oauth-protected-resource`` is RFC 9728 metadata for the relay inside the
  wallet, naming the wallet in ``authorization_servers``. (A stand-alone reference relay with
  ``wallet_url`` set serves its own, see reference_relay/app.py.)

Both are public: they hold nothing about the user, so any origin may read them
(``Access-Control-Allow-Origin: *``, no credentials), with the Private Network Access answer
for a page on a public origin reaching 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from capwallet.wallet.context import WalletContext
from capwallet.wallet.deployment import wallet_origin
from capwallet.wallet.permissions import DETAILS_TYPE

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"
RELAY_URL_FIELD = "capwallet_relay_url"


def _ctx(request: Request) -> WalletContext:
    ctx: WalletContext = request.app.state.wallet
    return ctx


def authorization_server_metadata(issuer: str, relay_url: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "client_id_metadata_document_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "authorization_details_types_supported": [DETAILS_TYPE],
        RELAY_URL_FIELD: relay_url,
    }


def _public(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={
        "access-control-allow-origin": "*", "cache-control": "max-age=300",
    })


async def preflight(request: Request) -> Response:
    headers = {
        "access-control-allow-origin": "*", "access-control-allow-methods": "GET",
        "access-control-max-age": "600",
    }
    if request.headers.get("access-control-request-private-network") == "true":
        headers["access-control-allow-private-network"] = "true"
    return Response(status_code=204, headers=headers)


async def authorization_server(request: Request) -> Response:
    ctx = _ctx(request)
    issuer = wallet_origin(request)
    return _public(authorization_server_metadata(issuer, ctx.relay_url or issuer))


async def protected_resource(request: Request) -> Response:
    ctx = _ctx(request)
    issuer = wallet_origin(request)
    return _public({
        "resource": ctx.relay_url or issuer,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": [DETAILS_TYPE],
        "resource_name": "capwallet relay",
    })
