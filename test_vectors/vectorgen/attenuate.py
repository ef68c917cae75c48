"""attenuate.json: parent -> child -> grandchild, siblings, how limits combine."""

from __future__ import annotations

import hashlib
from typing import Any

from capwallet import caveats as cav
from capwallet.token import Token

from .encoder import Tok, caveat_json, tok
from .files import File, crosscheck_mint, keys_json, token_json
from .flags import ATT, CHAIN, COMBINE, ORIGIN_F, SIBLING, VALID, WIDEN
from .requests import access, allow, call, ckey, counter, ctx, debit, deny, hit, limits
from .seeds import K1, T, utc


def build_attenuate() -> File:
    f = File("attenuate", [
        "Attenuation (spec/token-format.md#attenuation, spec/caveats.md#effective-limits):",
        "anyone holding a token may append caveats without a key; the signature extends as",
        "HMAC(previous signature, caveat). Every caveat of every level applies, so a child",
        "never has more authority than its parent, and every budget in the chain is debited.",
    ])
    keys = keys_json(K1)
    P = tok("family", f"expires {T + 30 * 86400}", "providers anthropic openai",
            "models claude-sonnet-4-5 gpt-4o gpt-4o-mini", "budget b000000000000010 2000 EUR month",
            "max-output-tokens 8000")
    t = P.token_id
    pb = "budget b000000000000010 2000 EUR month"
    pbc = counter("budget", t, pb, 2000, "EUR", "month")
    nov = utc(2026, 10, 1)

    def pdebit(amount: int = 12, used: int = 0) -> dict[str, Any]:
        return debit("budget", t, pb, "2026-09", amount=amount, limit=2000, used=used,
                     unit="EUR", resets_at=nov)

    parent_limits = dict(expires=T + 30 * 86400, providers=["anthropic", "openai"],
                         models=["claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini"],
                         max_output_tokens=8000, counters=[pbc])

    def add(desc: str, spec: str, flags: list[str], child: Tok, parent: Tok,
            context: dict[str, Any], expected: dict[str, Any], cross: bool = True) -> None:
        added = child.caveats[len(parent.caveats):]
        assert child.caveats[: len(parent.caveats)] == parent.caveats
        if cross:
            again = Token.parse(parent.s).attenuate(cav.decode_all(added)).serialize()
            if again != child.s:
                raise SystemExit(f"attenuate: implementation differs for {desc}")
            crosscheck_mint(child)
        # Computed here from the signature alone; the implementation must agree.
        chain_id = hashlib.sha256(child.sig).digest()[:8].hex()
        if Token.parse(child.s).chain_id != chain_id:
            raise SystemExit(f"attenuate: chain id differs for {desc}")
        f.add(desc, spec, [ATT, *flags], keys=keys, parent=parent.s,
              attenuate=[caveat_json(c) for c in added], chain_id=chain_id, **token_json(child),
              context=context, expected=expected)

    crosscheck_mint(P)
    f.add("The parent used in this file: 30-day expiry, two providers, three models, a "
          "20.00 EUR monthly budget, 8000 output tokens at most.", "token-format.md#attenuation",
          [VALID], keys=keys, **token_json(P), context=ctx(call(model="gpt-4o")),
          expected=allow(pdebit(), limits=limits(**parent_limits)))
    cb = "budget b000000000000011 500 EUR month"
    C = P.child("models gpt-4o-mini", f"expires {T + 86400}", "max-output-tokens 1000", cb)
    add("A child narrowed to one model, one day, 1000 output tokens and its own 5.00 EUR "
        "budget. Both budgets are debited, in token order.", "budgets.md#attenuation-and-budgets",
        [CHAIN, COMBINE], C, P, ctx(),
        allow(pdebit(), debit("budget", t, cb, "2026-09", amount=12, limit=500, unit="EUR",
                              resets_at=nov),
              limits=limits(**{**parent_limits, "expires": T + 86400, "models": ["gpt-4o-mini"],
                               "max_output_tokens": 1000,
                               "counters": [pbc, counter("budget", t, cb, 500, "EUR",
                                                         "month")]})))
    add("The child asks for gpt-4o, which the parent allows and the child does not.",
        "caveats.md#effective-limits", [CHAIN], C, P, ctx(call(model="gpt-4o")),
        deny("model_not_allowed"))
    add("The child asks for 2000 output tokens: under the parent's 8000, over its own 1000.",
        "caveats.md#effective-limits", [CHAIN], C, P, ctx(call(output_tokens=2000)),
        deny("output_too_large"))
    W = P.child("models gpt-4o-mini o3")
    add("A child 'adds' model o3 by appending a models caveat naming it; the parent's models "
        "caveat still applies, so o3 stays forbidden.", "caveats.md#effective-limits",
        [WIDEN], W, P, ctx(call(model="o3")), deny("model_not_allowed"))
    add("The widening child can still use a model both caveats name.",
        "caveats.md#effective-limits", [WIDEN], W, P, ctx(),
        allow(pdebit(), limits=limits(**{**parent_limits, "models": ["gpt-4o-mini"]})))
    L = P.child(f"expires {T + 60 * 86400}")
    add("A child appends a later expiry; the parent's earlier expiry still applies (checked "
        "60 s after it).", "verification.md#clock-skew", [WIDEN], L, P,
        ctx(now=T + 30 * 86400 + 60), deny("expired"))
    rc = "rate c000000000000012 10"
    G = C.child("operations chat", rc)
    add("A grandchild adds an operation list and a rate; rates are checked before budgets, "
        "and every counter of every level is debited.", "budgets.md#attenuation-and-budgets",
        [CHAIN], G, C, ctx(),
        allow(debit("rate", t, rc, "2026-09-21T14:13", amount=1, limit=10, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              pdebit(),
              debit("budget", t, cb, "2026-09", amount=12, limit=500, unit="EUR",
                    resets_at=nov),
              limits=limits(**{**parent_limits, "expires": T + 86400, "models": ["gpt-4o-mini"],
                               "max_output_tokens": 1000, "operations": ["chat"],
                               "counters": [pbc, counter("budget", t, cb, 500, "EUR", "month"),
                                            counter("rate", t, rc, 10, "requests",
                                                    "minute")]})))
    add("The grandchild asks for embeddings.", "caveats.md#operations", [CHAIN], G, C,
        ctx(call(operation="embeddings")), deny("operation_not_allowed"))
    add("The grandchild's 0.30 EUR request exceeds its own 5.00 EUR budget (4.80 EUR of it "
        "used) while the parent's budget has room.", "budgets.md#attenuation-and-budgets",
        [CHAIN], G, C,
        ctx(call(cost={"EUR": 30}), counters={ckey(t, pb, "2026-09"): 480,
                                               ckey(t, cb, "2026-09"): 480}),
        deny("budget_exceeded", hit("budget", t, cb, "2026-09", limit=500, used=480, needed=30,
                                    unit="EUR", resets_at=nov)))
    add("The grandchild's 0.30 EUR request fits its own budget but not the parent's (19.90 "
        "of 20.00 EUR used): a child never outspends its parent.",
        "budgets.md#attenuation-and-budgets", [CHAIN], G, C,
        ctx(call(cost={"EUR": 30}), counters={ckey(t, pb, "2026-09"): 1990}),
        deny("budget_exceeded", hit("budget", t, pb, "2026-09", limit=2000, used=1990,
                                    needed=30, unit="EUR", resets_at=nov)))
    sa, sb = "budget b0000000000000a1 500 EUR month", "budget b0000000000000b1 500 EUR month"
    A, B = P.child(sa), P.child(sb)
    add("Sibling A: its 5.00 EUR budget has its own counter, its nonce b0000000000000a1 in the "
        "signed bytes.", "budgets.md#siblings", [SIBLING], A, P, ctx(),
        allow(pdebit(), debit("budget", t, sa, "2026-09", amount=12, limit=500, unit="EUR",
                              resets_at=nov)))
    add("Sibling B: the same limit with nonce b0000000000000b1, so a different counter id, "
        "although both siblings share the token id.", "budgets.md#siblings", [SIBLING], B, P,
        ctx(), allow(pdebit(), debit("budget", t, sb, "2026-09", amount=12, limit=500,
                                     unit="EUR", resets_at=nov)))
    add("Sibling B is not limited by sibling A's spending (A's counter is at 5.00 of 5.00 "
        "EUR).",
        "budgets.md#siblings", [SIBLING], B, P,
        ctx(counters={ckey(t, sa, "2026-09"): 500, ckey(t, pb, "2026-09"): 500}),
        allow(pdebit(used=500), debit("budget", t, sb, "2026-09", amount=12, limit=500,
                                      unit="EUR", resets_at=nov)))
    D = P.child(pb)
    add("A child appends a caveat identical to one its parent has: identical bytes name one "
        "counter, which is debited once.", "budgets.md#identical-caveats", [COMBINE], D, P,
        ctx(), allow(pdebit(), limits=limits(**parent_limits)))
    add("Appending providers with no provider in common empties the set: nothing is allowed.",
        "caveats.md#effective-limits", [COMBINE], P.child("providers mistral"), P,
        ctx(call("mistral", "gpt-4o-mini")), deny("provider_not_allowed"))
    add("A holder appends a caveat type the verifier does not know: the token fails closed.",
        "caveats.md#decoding-a-caveat", [], P.child("region eu"), P, ctx(),
        deny("unknown_caveat"), cross=False)
    add("A holder appends a non-canonical caveat ('expires 01').",
        "caveats.md#decoding-a-caveat", [], P.child("expires 01"), P, ctx(),
        deny("invalid_caveat"), cross=False)
    add("logging full, then logging none: the most restrictive level wins.",
        "caveats.md#logging", [COMBINE], P.child("logging full", "logging none"), P, ctx(),
        allow(pdebit(), limits=limits(**parent_limits, logging="none")))
    add("logging none, then logging metadata: still none.", "caveats.md#logging", [COMBINE],
        P.child("logging none", "logging metadata"), P, ctx(),
        allow(pdebit(), limits=limits(**parent_limits, logging="none")))
    AF = P.child("ask-first email:send", "ask-first files:write")
    add("ask-first lists combine by union; a resource access using either scope needs an "
        "approval.", "caveats.md#ask-first", [COMBINE], AF, P, ctx(access("files:write")),
        deny("confirmation_required"))
    CA = P.child("confirm-above 500 EUR", "confirm-above 200 EUR", "confirm-above 300 USD")
    add("confirm-above: the smallest threshold per currency applies (200 EUR minor units, "
        "2.00 EUR); a 2.50 EUR call needs an approval.", "caveats.md#confirm-above", [COMBINE],
        CA, P,
        ctx(call(cost={"EUR": 250, "USD": 10})), deny("confirmation_required"))
    add("confirm-above limits, as combined and stated in minor units: EUR 200, USD 300; a call "
        "costing exactly 2.00 EUR and 3.00 USD is within both and allowed.",
        "caveats.md#effective-limits", [COMBINE], CA, P,
        ctx(call(cost={"EUR": 200, "USD": 300})),
        allow(pdebit(200), limits=limits(**parent_limits,
                                         confirm_above={"EUR": 200, "USD": 300})))
    NB = P.child(f"not-before {T + 100}", f"not-before {T - 100}")
    add("not-before: the latest applies (T+100); at T that is more than 60 s away.",
        "caveats.md#not-before", [COMBINE], NB, P, ctx(), deny("not_yet_valid"))
    AP = P.child("app https://a.example", "app https://b.example")
    add("app caveats are listed in token order; they never deny.", "caveats.md#app", [COMBINE],
        AP, P, ctx(), allow(pdebit(), limits=limits(**parent_limits,
                                                    apps=["https://a.example",
                                                          "https://b.example"])))
    SC = P.child("scopes files:read files:write", "scopes files:read")
    add("scopes intersect: files:write is granted by the first scopes caveat only.",
        "caveats.md#scopes", [COMBINE], SC, P, ctx(access("files:write")), deny("scope_missing"))
    add("The intersected scope files:read is granted.", "caveats.md#scopes", [COMBINE], SC, P,
        ctx(access("files:read")), allow(limits=limits(**parent_limits, scopes=["files:read"])))
    MI = P.child("max-input-tokens 4000", "max-input-tokens 9000")
    add("max-input-tokens: the smallest applies (4000); 4001 input tokens are too many.",
        "caveats.md#max-input-tokens", [COMBINE], MI, P, ctx(call(input_tokens=4001)),
        deny("input_too_large"))
    add("A child requires zero retention; the provider does not promise it.",
        "caveats.md#zero-retention", [CHAIN], P.child("zero-retention"), P, ctx(),
        deny("zero_retention_required"))
    notes, evil = "https://notes.example", "https://evil.example"
    PO = P.child(f"origin {notes}")
    add("A parent granted to https://notes.example; its child keeps the same origin caveat. A "
        "call from that origin is allowed.", "caveats.md#origin", [ORIGIN_F, CHAIN], PO.child(
            f"origin {notes}"), PO, ctx(call(origin=notes)),
        allow(pdebit(), limits=limits(**{**parent_limits, "origins": [notes]})))
    swapped = PO.child(f"origin {evil}")
    add("The child tries to move the token to https://evil.example: origins combine by "
        "intersection, so none is left and a browser call from the new origin is refused.",
        "caveats.md#origin", [ORIGIN_F, WIDEN], swapped, PO, ctx(call(origin=evil)),
        deny("origin_mismatch"))
    add("The same child from the parent's origin: refused as well.", "caveats.md#origin",
        [ORIGIN_F, WIDEN], swapped, PO, ctx(call(origin=notes)), deny("origin_mismatch"))
    add("The same child used server-side (no Origin header): the other caveats govern. The "
        "effective origins are empty.", "caveats.md#origin", [ORIGIN_F, COMBINE], swapped, PO,
        ctx(call()), allow(pdebit(), limits=limits(**{**parent_limits, "origins": []})))
    add("A parent without an origin caveat; the child binds itself to https://notes.example "
        "and is refused from another origin.", "caveats.md#origin", [ORIGIN_F, CHAIN],
        P.child(f"origin {notes}"), P, ctx(call(origin=evil)), deny("origin_mismatch"))
    ca = P.child("confirm-above 300 USD", "confirm-above 200 EUR", "confirm-above 900 CHF")
    add("confirm-above in USD, then EUR, then CHF: the effective confirm_above lists the "
        "currencies in ascending order of their codes (CHF, EUR, USD), not in token order.",
        "caveats.md#effective-limits", [COMBINE], ca, P,
        ctx(call(cost={"EUR": 12, "USD": 14, "CHF": 11})),
        allow(pdebit(), limits=limits(**{**parent_limits,
                                         "confirm_above": {"CHF": 900, "EUR": 200, "USD": 300}})))
    return f
