"""A two-minute tour of the token protocol: mint -> attenuate -> inspect -> verify.

    python examples/protocol_demo.py

No keys or network needed: a throwaway root key is made in memory.
"""

from __future__ import annotations

import time

from capwallet import caveats as cav
from capwallet.keys import Keyring, RootKey
from capwallet.money import MICROS_PER_MINOR as MICROS
from capwallet.token import Token, mint
from capwallet.verify import Request, Verifier


def show(title: str, decision_or_text: object) -> None:
    print(f"\n== {title}\n{decision_or_text}")


def main() -> None:
    now = int(time.time())
    wallet_key = RootKey.generate()  # lives in the user's wallet, never leaves it
    grant = mint(wallet_key, [
        cav.App("https://blog.example"),
        cav.Expires(now + 30 * 86400),
        cav.Providers(("anthropic", "openai")),
        cav.Models(("claude-sonnet-4-5", "gpt-4o-mini")),
        cav.Budget(1000, "EUR", "month"),  # 10.00 EUR a month
        cav.MaxInputTokens(50_000),
        cav.Scopes(("posts:read", "drafts:write")),
        cav.ConfirmAbove(50, "EUR"),  # ask the user before any call above 0.50 EUR
    ], now=now)
    show("1. the wallet grants the app a token (token id, never the token, goes in logs)",
         f"{grant.serialize()[:48]}...  id={grant.token_id}")

    # The app narrows it for a summariser sub-component, offline, without any key.
    child = grant.attenuate([
        cav.Models(("gpt-4o-mini",)),
        cav.Budget(100, "EUR", "day"),
        cav.MaxOutputTokens(300),
        cav.Scopes(("posts:read",)),
    ])
    show("2. the app attenuates it for a sub-component", f"{len(child.raw_caveats)} caveats")

    parsed = Token.parse(child.serialize())
    lines = [f"   {raw.decode()}" for raw in parsed.raw_caveats]
    show("3. anyone can inspect it (unverified without the key)", "\n".join(lines))

    relay = Verifier(Keyring([wallet_key]))
    call = Request(provider="openai", model="gpt-4o-mini", operation="chat",
                   scopes=("posts:read",), input_tokens=1200, output_tokens=300,
                   cost={"EUR": 2 * MICROS})
    d = relay.verify(child.serialize(), call, now)
    show("4. the relay verifies a call: allowed, and names every counter to debit",
         "\n".join(f"   {x.kind} {x.counter_key}: +{x.amount} (limit {x.limit})"
                   for x in d.debits))
    for label, req in [
        ("a model the child may not use",
         call._replace(model="claude-sonnet-4-5")),
        ("more output than the child allows", call._replace(output_tokens=1000)),
        ("a scope the child dropped", call._replace(scopes=("drafts:write",))),
        ("more than today's 1.00 EUR", call._replace(cost={"EUR": 150 * MICROS})),
    ]:
        d = relay.verify(child.serialize(), req, now)
        print(f"   deny {label}: {d.reason}: {d.message}")
    d = relay.verify(grant.serialize(), call._replace(cost={"EUR": 80 * MICROS}), now)
    show("5. an expensive call on the parent needs the user's approval", f"{d.reason}: {d.message}")
    print("\nNext: `make test` runs the test suite; spec/ defines the protocol.")


if __name__ == "__main__":
    main()
