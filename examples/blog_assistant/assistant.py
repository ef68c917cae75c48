"""A small blog assistant that uses AI through the user's capwallet.

    capwallet serve                      # in one terminal (or: capwallet demo --keep-running)
    python examples/blog_assistant/assistant.py --wallet http://127.0.0.1:8750 [--no-browser]

1. ``connect()`` opens the wallet's consent page: "Blog Assistant wants to use AI". The user
   may lower the budget or drop a model; the app gets a token and the relay URL.
2. It reads the posts from the blog's own API with that token (scope posts:read).
3. For the summarising sub-task it attenuates its token (offline, no wallet round trip): one
   cheap model, 0.10 USD in total, 200 output tokens per call, read-only. Even if that
   sub-task misbehaved, it could not spend more or publish anything.
4. It calls the model with the openai SDK, pointing base_url at the relay.
5. It publishes a post. ``posts:publish`` is ask-first, so the blog API asks the wallet, the
   user approves in the wallet, and the app retries with the approval.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import httpx
import openai

from capwallet import caveats as cav
from capwallet.client import (
    APPROVAL_HEADER,
    ApprovalDenied,
    ConnectError,
    Connection,
    connect,
    wait_for_approval,
)
from capwallet.token import attenuate

PERMISSIONS: dict[str, Any] = {
    "providers": ["openai"],
    "models": ["gpt-4o-mini", "gpt-4.1-mini"],
    "budget": {"amount": "2.00", "currency": "USD", "period": "month"},
    "max_input_tokens": 20000,
    "max_output_tokens": 1000,
    "scopes": ["posts:read", "posts:publish"],
    "ask_first": ["posts:publish"],
    "confirm_above": {"amount": "0.25", "currency": "USD"},
    "expires_in": 30 * 86400,
    "logging": "metadata",
}


def summariser_token(token: str) -> str:
    """A narrower token for the summarising sub-task."""
    return attenuate(token, [
        cav.Models(("gpt-4o-mini",)),
        cav.Budget(10, "USD", "total"),  # 0.10 USD for this sub-task, on its own counter
        cav.MaxOutputTokens(200),
        cav.Scopes(("posts:read",)),
    ])


def summarise(conn: Connection, posts: list[dict[str, Any]]) -> list[str]:
    client = openai.OpenAI(api_key=summariser_token(conn.token),
                           base_url=conn.openai_base_url, max_retries=0)
    lines = []
    for post in posts:
        r = client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=60,
            messages=[{"role": "system", "content": "Summarise the blog post in one line."},
                      {"role": "user", "content": f"{post['title']}\n\n{post['body']}"}])
        lines.append(f"{post['title']}: {r.choices[0].message.content}")
    return lines


def publish(conn: Connection, blog_url: str, post_id: int,
            on_waiting: Callable[[str], None], *, timeout: float = 300.0) -> dict[str, Any]:
    """Publish a post; if the user must approve, wait for the wallet and retry once."""
    auth = {"authorization": f"Bearer {conn.token}"}
    url = f"{blog_url}/posts/{post_id}/publish"
    r = httpx.post(url, headers=auth)
    if r.status_code == 403 and r.json().get("error") == "confirmation_required":
        rid = r.json()["approval_request_id"]
        on_waiting(f"{conn.wallet_url}/approvals")
        approval = wait_for_approval(conn.wallet_url, conn.token, rid, timeout=timeout)
        r = httpx.post(url, headers={**auth, APPROVAL_HEADER: approval})
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def run(wallet_url: str, blog_url: str, *, open_browser: Callable[[str], object] | None = None,
        on_waiting: Callable[[str], None] | None = None, say: Callable[[str], None] = print,
        no_browser: bool = False, timeout: float = 300.0,
        ) -> dict[str, Any]:
    kwargs: dict[str, Any] = {} if open_browser is None else {"open_browser": open_browser}
    if no_browser:
        kwargs["open_browser"] = None
    say("Asking your wallet for permission"
        + (" (open the link below)..." if no_browser else " (a browser tab opens)..."))
    conn = connect("Blog Assistant", PERMISSIONS, wallet_url=wallet_url, timeout=timeout,
                   say=say, **kwargs)
    granted = conn.granted
    say(f"Connected: {', '.join(granted['models'])}, budget {granted['budget']['amount']} "
        f"{granted['budget']['currency']} per {granted['budget']['period']}.")
    r = httpx.get(f"{blog_url}/posts", headers={"authorization": f"Bearer {conn.token}"})
    r.raise_for_status()
    posts = r.json()
    say(f"Read {len(posts)} posts from the blog.")
    summaries = summarise(conn, posts)
    for line in summaries:
        say(f"  - {line}")
    draft = next(p for p in posts if not p["published"])
    waiting = on_waiting or (lambda url: say(f"Publishing needs your OK: approve it at {url}"))
    published = publish(conn, blog_url, draft["id"], waiting, timeout=timeout)
    say(f"Published “{published['title']}”.")
    return {"connection": conn, "grant_id": conn.grant_id, "summaries": summaries,
            "published": published}


def main(argv: list[str] | None = None) -> int:
    # the module beside this script (its directory is on sys.path when run as a script)
    from blog_api import running_blog_api  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wallet", default="http://127.0.0.1:8750", help="the wallet's URL")
    parser.add_argument("--no-browser", action="store_true",
                        help="only print the consent link (open it yourself, on any browser "
                             "signed in to the wallet)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for each answer in the wallet (300)")
    args = parser.parse_args(argv)
    with running_blog_api(args.wallet) as blog_url:
        try:
            run(args.wallet, blog_url, no_browser=args.no_browser, timeout=args.timeout)
        except (ConnectError, ApprovalDenied) as exc:
            print(f"blog assistant: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
