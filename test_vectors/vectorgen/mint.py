"""mint.json: every caveat type's canonical bytes, the HMAC chain step by step."""

from __future__ import annotations

from typing import Any

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

from .encoder import Tok, derived, sig_chain, tok
from .files import File, keys_json, token_json
from .flags import MINT, TYPED
from .requests import access, allow, call, counter, ctx, debit, limits
from .seeds import K1, K2, T, tid, utc


def mint_json(t: Tok) -> dict[str, Any]:
    return {"derived_key": derived(t.key.secret).hex(),
            "chain": [s.hex() for s in sig_chain(t.key.secret, t.ident, t.caveats)]}


def build_mint() -> File:
    f = File("mint", [
        "Minting (spec/token-format.md#signature-chain, spec/caveats.md#registry): from a root",
        "key, fixed identifier fields and typed caveats to the exact token string. 'mint' gives",
        "the libmacaroons-derived key and the signature after the identifier and after each",
        "caveat. Each token is then verified with the request in its context.",
    ])
    nonce = {"b1": "b000000000000001", "b2": "b000000000000002", "q1": "a000000000000001",
             "r1": "c000000000000001", "b3": "b000000000000003", "r2": "c000000000000002"}

    def add(desc: str, spec: str, label: str, typed: list[cav.Caveat], texts: list[str],
            context: dict[str, Any], expected: dict[str, Any], key: RootKey = K1) -> None:
        encoded = [cav.encode(c) for c in typed]
        if encoded != [x.encode("utf-8") for x in texts]:
            raise SystemExit(f"mint {label}: typed encoding {encoded} != hand-written {texts}")
        t = tok(label, *texts, key=key)
        minted = mint(key, typed, now=t.issued_at, token_id=t.token_id)
        if minted.serialize() != t.s:
            raise SystemExit(f"mint {label}: implementation token differs")
        f.add(desc, spec, [MINT, TYPED] if typed else [MINT], keys=keys_json(key),
              **token_json(t), mint=mint_json(t), context=context, expected=expected)

    reg = "caveats.md#"
    add("No caveats: the signature is HMAC(derived key, identifier).",
        "token-format.md#signature-chain", "mint-empty", [], [], ctx(), allow(limits=limits()))
    add("not-before: a Unix time in seconds.", reg + "not-before", "mint-not-before",
        [cav.NotBefore(T - 600)], [f"not-before {T - 600}"], ctx(),
        allow(limits=limits(not_before=T - 600)))
    add("expires: a Unix time in seconds.", reg + "expires", "mint-expires",
        [cav.Expires(T + 86400)], [f"expires {T + 86400}"], ctx(),
        allow(limits=limits(expires=T + 86400)))
    add("providers: values are sorted by their UTF-8 bytes, whatever order they were given in.",
        reg + "providers", "mint-providers", [cav.Providers(("openai", "anthropic"))],
        ["providers anthropic openai"], ctx(),
        allow(limits=limits(providers=["anthropic", "openai"])))
    models = ("gpt-4o-mini", "llama3.1:8b", "meta-llama/Llama-3.1-8B", "claude-sonnet-4-5")
    add("models: ':', '/', '.', '-' are in the safe set and are not percent-encoded.",
        reg + "models", "mint-models", [cav.Models(models)],
        ["models claude-sonnet-4-5 gpt-4o-mini llama3.1:8b meta-llama/Llama-3.1-8B"],
        ctx(call("ollama", "llama3.1:8b")),
        allow(limits=limits(models=["claude-sonnet-4-5", "gpt-4o-mini", "llama3.1:8b",
                                    "meta-llama/Llama-3.1-8B"])))
    add("models with characters outside the safe set: space, ',', '%' and UTF-8 are "
        "percent-encoded (upper-case hex); values are sorted by their decoded bytes.",
        "caveats.md#percent-encoding", "mint-models-pct",
        [cav.Models(("a b", "x,y", "50%", "名前"))],
        ["models 50%25 a%20b x%2Cy %E5%90%8D%E5%89%8D"], ctx(call(model="名前")),
        allow(limits=limits(models=["50%", "a b", "x,y", "名前"])))
    add("operations.", reg + "operations", "mint-operations",
        [cav.Operations(("embeddings", "chat"))], ["operations chat embeddings"], ctx(),
        allow(limits=limits(operations=["chat", "embeddings"])))
    add("scopes with no values: no scope is granted; a resource access asking for no scope "
        "is still allowed.", reg + "scopes", "mint-scopes-empty", [cav.Scopes(())], ["scopes"],
        ctx(access()), allow(limits=limits(scopes=[])))
    add("scopes.", reg + "scopes", "mint-scopes", [cav.Scopes(("files:read", "calendar:read"))],
        ["scopes calendar:read files:read"], ctx(access("files:read")),
        allow(limits=limits(scopes=["calendar:read", "files:read"])))
    add("ask-first: a resource access that does not use the scope needs no approval.",
        reg + "ask-first", "mint-ask-first", [cav.AskFirst(("email:send",))],
        ["ask-first email:send"], ctx(access("files:read")),
        allow(limits=limits(ask_first=["email:send"])))
    add("zero-retention takes no arguments.", reg + "zero-retention", "mint-zero-retention",
        [cav.ZeroRetention()], ["zero-retention"], ctx(call(zero_retention=True)),
        allow(limits=limits(zero_retention=True)))
    add("max-input-tokens.", reg + "max-input-tokens", "mint-max-input",
        [cav.MaxInputTokens(8000)], ["max-input-tokens 8000"], ctx(),
        allow(limits=limits(max_input_tokens=8000)))
    add("max-output-tokens.", reg + "max-output-tokens", "mint-max-output",
        [cav.MaxOutputTokens(4096)], ["max-output-tokens 4096"], ctx(),
        allow(limits=limits(max_output_tokens=4096)))
    b1 = f"budget {nonce['b1']} 1000 EUR month"
    t = tid("mint-budget")
    add("budget in UTC: the time zone argument is omitted. The debit names the counter "
        "<counter id>/<period key>.", reg + "budget", "mint-budget",
        [cav.Budget(1000, "EUR", "month", nonce=nonce["b1"])], [b1], ctx(),
        allow(debit("budget", t, b1, "2026-09", amount=12, limit=1000, unit="EUR",
                    resets_at=utc(2026, 10, 1)),
              limits=limits(counters=[counter("budget", t, b1, 1000, "EUR", "month")])))
    b2 = f"budget {nonce['b2']} 500 USD day America/New_York"
    t = tid("mint-budget-tz")
    add("budget with an IANA time zone: the day is New York's (EDT, UTC-4).", reg + "budget",
        "mint-budget-tz", [cav.Budget(500, "USD", "day", "America/New_York", nonce=nonce["b2"])],
        [b2], ctx(call(cost={"USD": 30})),
        allow(debit("budget", t, b2, "2026-09-21", amount=30, limit=500, unit="USD",
                    resets_at=utc(2026, 9, 22, 4)),
              limits=limits(counters=[counter("budget", t, b2, 500, "USD", "day",
                                              "America/New_York")])))
    q1 = f"token-quota {nonce['q1']} 100000 week"
    t = tid("mint-quota")
    add("token-quota: input + output tokens per ISO week.", reg + "token-quota", "mint-quota",
        [cav.TokenQuota(100000, "week", nonce=nonce["q1"])], [q1], ctx(),
        allow(debit("quota", t, q1, "2026-W39", amount=1500, limit=100000, unit="tokens",
                    resets_at=utc(2026, 9, 28)),
              limits=limits(counters=[counter("quota", t, q1, 100000, "tokens", "week")])))
    r1 = f"rate {nonce['r1']} 60"
    t = tid("mint-rate")
    add("rate: model calls per UTC minute; the period key names the minute.", reg + "rate",
        "mint-rate", [cav.Rate(60, nonce=nonce["r1"])], [r1], ctx(),
        allow(debit("rate", t, r1, "2026-09-21T14:13", amount=1, limit=60, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              limits=limits(counters=[counter("rate", t, r1, 60, "requests", "minute")])))
    add("confirm-above: a call costing 0.12 EUR is below the 5.00 EUR threshold.",
        reg + "confirm-above", "mint-confirm-above", [cav.ConfirmAbove(500, "EUR")],
        ["confirm-above 500 EUR"], ctx(), allow(limits=limits(confirm_above={"EUR": 500})))
    add("logging: informative for the relay; it never denies a request.", reg + "logging",
        "mint-logging", [cav.Logging("metadata")], ["logging metadata"], ctx(),
        allow(limits=limits(logging="metadata")))
    add("app: who the grant was made to; informative only.", reg + "app", "mint-app",
        [cav.App("https://app.example")], ["app https://app.example"], ctx(),
        allow(limits=limits(apps=["https://app.example"])))
    t = tid("mint-grant")
    b3 = f"budget {nonce['b3']} 2000 EUR month Europe/Berlin"
    r2 = f"rate {nonce['r2']} 30"
    grant: list[cav.Caveat] = [cav.App("https://notes.example"), cav.Expires(T + 30 * 86400),
             cav.Providers(("anthropic", "openai")),
             cav.Models(("claude-sonnet-4-5", "gpt-4o-mini")), cav.Operations(("chat",)),
             cav.MaxOutputTokens(4000),
             cav.Budget(2000, "EUR", "month", "Europe/Berlin", nonce=nonce["b3"]),
             cav.Rate(30, nonce=nonce["r2"]), cav.ConfirmAbove(200, "EUR"),
             cav.Logging("metadata"), cav.Scopes(())]
    texts = ["app https://notes.example", f"expires {T + 30 * 86400}",
             "providers anthropic openai", "models claude-sonnet-4-5 gpt-4o-mini",
             "operations chat", "max-output-tokens 4000", b3, r2, "confirm-above 200 EUR",
             "logging metadata", "scopes"]
    add("A realistic grant under root key K2, as a consent page would mint it. Debits list "
        "rates first, then quotas, then budgets.", "verification.md#counters", "mint-grant",
        grant, texts, ctx(call("anthropic", "claude-sonnet-4-5", output_tokens=4000,
                               cost={"EUR": 180})),
        allow(debit("rate", t, r2, "2026-09-21T14:13", amount=1, limit=30, unit="requests",
                    resets_at=utc(2026, 9, 21, 14, 14)),
              debit("budget", t, b3, "2026-09", amount=180, limit=2000, unit="EUR",
                    resets_at=utc(2026, 9, 30, 22)),
              limits=limits(expires=T + 30 * 86400, providers=["anthropic", "openai"],
                            models=["claude-sonnet-4-5", "gpt-4o-mini"], operations=["chat"],
                            scopes=[], max_output_tokens=4000,
                            counters=[counter("budget", t, b3, 2000, "EUR", "month",
                                              "Europe/Berlin"),
                                      counter("rate", t, r2, 30, "requests", "minute")],
                            confirm_above={"EUR": 200}, logging="metadata",
                            apps=["https://notes.example"])),
        key=K2)
    add("origin: a web origin, scheme://host[:port]; ':' and '/' are safe and written as they "
        "are. A browser call from that origin is allowed.", reg + "origin", "mint-origin",
        [cav.Origin("https://notes.example")], ["origin https://notes.example"],
        ctx(call(origin="https://notes.example")),
        allow(limits=limits(origins=["https://notes.example"])))
    add("origin with an IPv6 host: the brackets are not in the safe set, so they are "
        "percent-encoded; the decoded value is http://[::1]:5500.", reg + "origin",
        "mint-origin-ipv6", [cav.Origin("http://[::1]:5500")],
        ["origin http://%5B::1%5D:5500"], ctx(call(origin="http://[::1]:5500")),
        allow(limits=limits(origins=["http://[::1]:5500"])))
    return f
