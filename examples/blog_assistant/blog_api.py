"""The blog's own API: the resource server of the example app.

It holds the posts. Every request carries the user's capwallet token (Authorization: Bearer);
the API asks the wallet whether that token has the scope this request needs
(capwallet.client.check_scope, bound to a digest of the exact request). Reading needs
``posts:read``. Publishing needs ``posts:publish``, which the user granted as ask-first: the
wallet then records a pending approval, and the API answers 403 with its id. The app gets the
user's approval through the wallet and retries the same request with X-Capwallet-Approval.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from capwallet.approval import request_digest
from capwallet.client import APPROVAL_HEADER, check_scope

POSTS = {
    1: {"id": 1, "title": "Sourdough, week one", "published": False,
        "body": "Flour, water, patience. The starter doubled on day four; the first loaf "
                "was dense but the crust sang."},
    2: {"id": 2, "title": "Why I weigh everything", "published": True,
        "body": "Cups lie. A scale does not. Grams make a recipe repeatable."},
}


def create_blog_api(wallet_url: str) -> Starlette:
    async def authorize(request: Request, scope: str, summary: str) -> JSONResponse | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        digest = request_digest(request.method, request.url.path, await request.body())
        answer = check_scope(wallet_url, token, [scope], digest, summary=summary,
                             approval=request.headers.get(APPROVAL_HEADER))
        if answer.get("allowed"):
            return None
        return JSONResponse({"error": answer.get("reason") or answer.get("error"),
                             "message": answer.get("message"),
                             "approval_request_id": answer.get("approval_request_id")},
                            status_code=403)

    async def list_posts(request: Request) -> JSONResponse:
        denied = await authorize(request, "posts:read", "read your posts")
        return denied or JSONResponse(list(POSTS.values()))

    async def publish(request: Request) -> JSONResponse:
        post = POSTS.get(int(request.path_params["post_id"]))
        if post is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        denied = await authorize(request, "posts:publish", f"publish “{post['title']}”")
        if denied:
            return denied
        post["published"] = True
        return JSONResponse(post)

    return Starlette(routes=[
        Route("/posts", list_posts),
        Route("/posts/{post_id:int}/publish", publish, methods=["POST"]),
    ])


@contextmanager
def running_blog_api(wallet_url: str) -> Iterator[str]:
    """Serve the blog API on a free loopback port in a thread; yields its URL."""
    config = uvicorn.Config(create_blog_api(wallet_url), host="127.0.0.1", port=0,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
