"""verify.json: each caveat type allowing and denying, clock skew, revocation, check order."""

from __future__ import annotations

from typing import Any

from .encoder import Tok, tok
from .files import File, Raw, crosscheck_mint, keys_json, token_json
from .flags import (
    BOUNDARY,
    COUNTER_ORDER,
    EXACT,
    FAR_FUTURE,
    MICRO,
    ORDER,
    ORIGIN_F,
    RESOURCE,
    REVOKE,
    SIG,
    SKEW,
    TZF,
    VALID,
    ZERO,
)
from .requests import Micros, access, allow, call, ckey, ctx, debit, deny, hit
from .seeds import K1, MAX_MINOR, MAX_SAFE, MICROS, T, tid, utc


def build_verify() -> File:
    f = File("verify", [
        "Verification (spec/verification.md): every caveat type allowing and denying a",
        "request, the clock-skew boundaries, revocation, resource access versus model calls,",
        "counters, and the order in which checks run when several would fail.",
    ])
    keys = keys_json(K1)

    def add(desc: str, spec: str, flags: list[str], t: Tok, context: dict[str, Any],
            expected: dict[str, Any], cross: bool = True) -> None:
        if cross:
            crosscheck_mint(t)
        f.add(desc, spec, flags, keys=keys, **token_json(t), context=context, expected=expected)

    sk = "verification.md#clock-skew"
    nb = tok("verify-nb", f"not-before {T}")
    add("not-before T, checked at T.", "caveats.md#not-before", [VALID], nb, ctx(), allow())
    add("not-before T, checked at T-60: within the leeway.", sk, [SKEW, BOUNDARY], nb,
        ctx(now=T - 60), allow())
    add("not-before T, checked at T-61: one second beyond the leeway.", sk, [SKEW, BOUNDARY],
        nb, ctx(now=T - 61), deny("not_yet_valid"))
    ex = tok("verify-exp", f"expires {T}")
    add("expires T, checked at T-1.", "caveats.md#expires", [VALID], ex, ctx(now=T - 1), allow())
    add("expires T, checked at T+59: within the leeway.", sk, [SKEW, BOUNDARY], ex,
        ctx(now=T + 59), allow())
    add("expires T, checked at T+60: the leeway is over.", sk, [SKEW, BOUNDARY], ex,
        ctx(now=T + 60), deny("expired"))
    add("expires T, checked a day later.", "caveats.md#expires", [], ex, ctx(now=T + 86400),
        deny("expired"))
    add("Issued 60 s in the verifier's future (the minter's clock is ahead): accepted.", sk,
        [SKEW, BOUNDARY], tok("verify-future-60", issued_at=T + 60), ctx(), allow())
    add("Issued 61 s in the verifier's future.", sk, [SKEW, BOUNDARY],
        tok("verify-future-61", issued_at=T + 61), ctx(), deny("not_yet_valid"))
    add("expires 2^53-1, the largest integer a caveat may hold.", "caveats.md#integers",
        [BOUNDARY, VALID], tok("verify-max-exp", f"expires {MAX_SAFE}"), ctx(), allow())
    add("issued_at 2^53-1: parses, but lies in the future.", sk, [BOUNDARY],
        tok("verify-max-iat", issued_at=MAX_SAFE), ctx(), deny("not_yet_valid"))
    add("expires 0.", "caveats.md#expires", [], tok("verify-exp0", "expires 0"), ctx(),
        deny("expired"))
    add("not-before in the future and expires in the past: not_yet_valid is checked first.", sk,
        [ORDER], tok("verify-nb-exp", f"not-before {T + 1000}", f"expires {T - 1000}"), ctx(),
        deny("not_yet_valid"))

    shape = tok("verify-shape", "providers openai", "models gpt-4o gpt-4o-mini",
                "operations chat")
    rs = "verification.md#request-shape"
    add("Provider, model and operation all allowed.", rs, [VALID], shape, ctx(), allow())
    add("Provider anthropic is not in the providers caveat.", "caveats.md#providers", [], shape,
        ctx(call("anthropic")), deny("provider_not_allowed"))
    add("Model 'GPT-4o-mini': names are case-sensitive.", "caveats.md#models", [EXACT], shape,
        ctx(call(model="GPT-4o-mini")), deny("model_not_allowed"))
    add("Model 'gpt-4o-mini-2024-07-18': no prefix matching.", "caveats.md#models", [EXACT],
        shape, ctx(call(model="gpt-4o-mini-2024-07-18")), deny("model_not_allowed"))
    add("Model 'gpt-4': a prefix of an allowed name is not allowed.", "caveats.md#models",
        [EXACT], shape, ctx(call(model="gpt-4")), deny("model_not_allowed"))
    add("Operation embeddings is not in the operations caveat.", "caveats.md#operations", [],
        shape, ctx(call(operation="embeddings")), deny("operation_not_allowed"))
    add("Provider and model both not allowed: the provider is checked first.", rs, [ORDER],
        shape, ctx(call("anthropic", "claude-sonnet-4-5")), deny("provider_not_allowed"))
    add("A resource access with the same token: providers, models and operations apply only "
        "to model calls.", "verification.md#resource-access", [RESOURCE], shape,
        ctx(access()), allow())

    sc = tok("verify-scopes", "scopes files:read")
    add("Resource access asking for a granted scope.", "caveats.md#scopes", [RESOURCE, VALID],
        sc, ctx(access("files:read")), allow())
    add("Resource access asking for a scope not granted.", "caveats.md#scopes", [RESOURCE], sc,
        ctx(access("files:write")), deny("scope_missing"))
    add("Resource access asking for two scopes, one not granted.", "caveats.md#scopes",
        [RESOURCE], sc, ctx(access("files:read", "files:write")), deny("scope_missing"))
    add("A model call that also states a scope not granted.", "caveats.md#scopes", [], sc,
        ctx(call(scopes=("files:write",))), deny("scope_missing"))
    add("A token without a scopes caveat restricts no scope (the root grants them all).",
        "caveats.md#scopes", [RESOURCE], tok("verify-no-scopes"), ctx(access("anything:at-all")),
        allow())
    add("An empty scopes caveat grants no scope.", "caveats.md#scopes", [RESOURCE],
        tok("verify-scopes-empty", "scopes"), ctx(access("files:read")), deny("scope_missing"))

    zr = tok("verify-zr", "zero-retention")
    add("zero-retention, and the provider does not promise zero retention.",
        "caveats.md#zero-retention", [], zr, ctx(), deny("zero_retention_required"))
    add("zero-retention does not apply to a resource access.", "verification.md#resource-access",
        [RESOURCE], zr, ctx(access()), allow())

    mx = tok("verify-max", "max-input-tokens 2000", "max-output-tokens 1000")
    add("Input and output exactly at their caps.", "caveats.md#max-input-tokens",
        [BOUNDARY, VALID], mx, ctx(call(input_tokens=2000, output_tokens=1000)), allow())
    add("One input token over the cap.", "caveats.md#max-input-tokens", [BOUNDARY], mx,
        ctx(call(input_tokens=2001, output_tokens=1000)), deny("input_too_large"))
    add("One output token over the cap.", "caveats.md#max-output-tokens", [BOUNDARY], mx,
        ctx(call(input_tokens=2000, output_tokens=1001)), deny("output_too_large"))
    add("Both over their caps: input is checked first.", rs, [ORDER], mx,
        ctx(call(input_tokens=2001, output_tokens=1001)), deny("input_too_large"))

    bu = "budget b000000000000020 1000 EUR month"
    bt = tok("verify-budget", bu)
    t = bt.token_id
    k = ckey(t, bu, "2026-09")
    oct1 = utc(2026, 10, 1)
    add("Budget 10.00 EUR: 9.88 EUR used, the call needs 0.12 EUR: exactly fills it "
        "(988000000 + 12000000 = 1000000000 microunits).", "caveats.md#budget",
        [BOUNDARY, VALID], bt, ctx(counters={k: 988}),
        allow(debit("budget", t, bu, "2026-09", amount=12, limit=1000, used=988, unit="EUR",
                    resets_at=oct1)))
    add("Budget 10.00 EUR: 9.89 EUR used, the call needs 0.12 EUR.", "caveats.md#budget",
        [BOUNDARY], bt,
        ctx(counters={k: 989}),
        deny("budget_exceeded", hit("budget", t, bu, "2026-09", limit=1000, used=989,
                                    needed=12, unit="EUR", resets_at=oct1)))
    add("A EUR budget, and the request is priced only in USD.", "verification.md#counters", [],
        bt, ctx(call(cost={"USD": 12})), deny("price_unknown"))
    add("A EUR budget, and the request has no price at all.", "verification.md#counters", [],
        bt, ctx(call(cost={})), deny("price_unknown"))
    add("The budget is exhausted but the call costs 0 EUR (e.g. a local model): allowed, "
        "with a zero debit.", "verification.md#zero-cost-rule", [ZERO], bt,
        ctx(call("ollama", "llama3.1:8b", cost={"EUR": 0}), counters={k: 1000}),
        allow(debit("budget", t, bu, "2026-09", amount=0, limit=1000, used=1000, unit="EUR",
                    resets_at=oct1)))
    add("The counter is already above its limit (a settlement charged more than was "
        "reserved); a zero-cost call is still allowed.", "verification.md#zero-cost-rule",
        [ZERO], bt, ctx(call(cost={"EUR": 0}), counters={k: 1500}),
        allow(debit("budget", t, bu, "2026-09", amount=0, limit=1000, used=1500, unit="EUR",
                    resets_at=oct1)))
    add("A budget of 0 EUR: any call that costs something is denied.", "caveats.md#budget", [],
        tok("verify-budget0", "budget b000000000000021 0 EUR total"), ctx(),
        deny("budget_exceeded", hit("budget", tid("verify-budget0"),
                                    "budget b000000000000021 0 EUR total", "total", limit=0,
                                    used=0, needed=12, unit="EUR", resets_at=None)))

    qu = "token-quota a000000000000020 10000 day"
    qt = tok("verify-quota", qu)
    qk = ckey(qt.token_id, qu, "2026-09-21")
    sep22 = utc(2026, 9, 22)
    add("Quota: 8500 of 10000 tokens used; 1000 input + 500 output fills it exactly.",
        "caveats.md#token-quota", [BOUNDARY, VALID], qt, ctx(counters={qk: 8500}),
        allow(debit("quota", qt.token_id, qu, "2026-09-21", amount=1500, limit=10000,
                    used=8500, unit="tokens", resets_at=sep22)))
    add("Quota: 8501 of 10000 used.", "caveats.md#token-quota", [BOUNDARY], qt,
        ctx(counters={qk: 8501}),
        deny("quota_exceeded", hit("quota", qt.token_id, qu, "2026-09-21", limit=10000,
                                   used=8501, needed=1500, unit="tokens", resets_at=sep22)))
    add("Quota exhausted, and the call has 0 input and 0 output tokens.",
        "verification.md#zero-cost-rule", [ZERO], qt,
        ctx(call(input_tokens=0, output_tokens=0), counters={qk: 10000}),
        allow(debit("quota", qt.token_id, qu, "2026-09-21", amount=0, limit=10000,
                    used=10000, unit="tokens", resets_at=sep22)))
    ra = "rate c000000000000020 2"
    rt = tok("verify-rate", ra)
    rk = ckey(rt.token_id, ra, "2026-09-21T14:13")
    add("Rate 2 per minute, 1 call made this minute.", "caveats.md#rate", [VALID], rt,
        ctx(counters={rk: 1}),
        allow(debit("rate", rt.token_id, ra, "2026-09-21T14:13", amount=1, limit=2, used=1,
                    unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("Rate 2 per minute, 2 calls made this minute.", "caveats.md#rate", [BOUNDARY], rt,
        ctx(counters={rk: 2}),
        deny("rate_limited", hit("rate", rt.token_id, ra, "2026-09-21T14:13", limit=2, used=2,
                                 needed=1, unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("A resource access is not a model call: rates are not checked or debited.",
        "verification.md#resource-access", [RESOURCE], rt, ctx(access(), counters={rk: 2}),
        allow())
    add("Rate 0: every model call is denied (a call always counts 1).", "caveats.md#rate", [],
        tok("verify-rate0", "rate c000000000000021 0"), ctx(),
        deny("rate_limited", hit("rate", tid("verify-rate0"), "rate c000000000000021 0",
                                 "2026-09-21T14:13", limit=0, used=0, needed=1, unit="requests",
                                 resets_at=utc(2026, 9, 21, 14, 14))))

    mixed_caveats = [ra, qu, bu]
    mt = tok("verify-mixed", *mixed_caveats)
    mk = {"rate": ckey(mt.token_id, ra, "2026-09-21T14:13"),
          "quota": ckey(mt.token_id, qu, "2026-09-21"), "budget": ckey(mt.token_id, bu, "2026-09")}
    add("Rate exhausted and no EUR price: price_unknown is checked before any counter.",
        "verification.md#counters", [ORDER], mt,
        ctx(call(cost={"USD": 1}), counters={mk["rate"]: 2}), deny("price_unknown"))
    add("Rate, quota and budget all exhausted: rate_limited first.", "verification.md#counters",
        [ORDER], mt, ctx(counters={mk["rate"]: 2, mk["quota"]: 10000, mk["budget"]: 1000}),
        deny("rate_limited", hit("rate", mt.token_id, ra, "2026-09-21T14:13", limit=2, used=2,
                                 needed=1, unit="requests", resets_at=utc(2026, 9, 21, 14, 14))))
    add("Quota and budget exhausted: quota_exceeded before budget_exceeded.",
        "verification.md#counters", [ORDER], mt,
        ctx(counters={mk["quota"]: 10000, mk["budget"]: 1000}),
        deny("quota_exceeded", hit("quota", mt.token_id, qu, "2026-09-21", limit=10000,
                                   used=10000, needed=1500, unit="tokens", resets_at=sep22)))
    ca = tok("verify-confirm", "confirm-above 500 EUR")
    add("confirm-above 500 EUR (5.00 EUR), the call costs exactly 5.00 EUR (500000000 "
        "microunits): no approval needed.",
        "caveats.md#confirm-above", [BOUNDARY, VALID], ca, ctx(call(cost={"EUR": 500})),
        allow())
    add("confirm-above 500 EUR, the call costs 5.01 EUR and carries no approval.",
        "caveats.md#confirm-above", [BOUNDARY], ca, ctx(call(cost={"EUR": 501})),
        deny("confirmation_required"))
    add("confirm-above EUR, and the call is priced only in USD.", "verification.md#counters",
        [], ca, ctx(call(cost={"USD": 1})), deny("price_unknown"))
    add("Over budget and above confirm-above: budget_exceeded (counters before confirmation).",
        "verification.md#confirmation", [ORDER],
        tok("verify-confirm-budget", "confirm-above 5 EUR", bu),
        ctx(call(cost={"EUR": 20}),
            counters={ckey(tid("verify-confirm-budget"), bu, "2026-09"): 990}),
        deny("budget_exceeded", hit("budget", tid("verify-confirm-budget"), bu, "2026-09",
                                    limit=1000, used=990, needed=20, unit="EUR",
                                    resets_at=oct1)))

    rv = tok("verify-revoked", f"expires {T - 3600}")
    rid = rv.token_id.hex()
    add("The token id is on the revocation list.", "verification.md#revocation", [REVOKE],
        tok("verify-revoked2"), ctx(revoked=(tid("verify-revoked2").hex(),)), deny("revoked"))
    add("The revocation list names other tokens only.", "verification.md#revocation",
        [REVOKE, VALID], tok("verify-revoked2"),
        ctx(revoked=(tid("other-1").hex(), tid("other-2").hex())), allow())
    add("Revoked and expired: revocation is checked before time.", "verification.md#revocation",
        [REVOKE, ORDER], rv, ctx(revoked=(rid,)), deny("revoked"))
    s = bytearray(rv.sig)
    s[5] ^= 0x10
    f.add("Revoked token id, but the signature is wrong: bad_signature (the id of a forged "
          "token is not trusted).", "verification.md#revocation", [REVOKE, ORDER, SIG],
          keys=keys, **token_json(Raw(rv.ident, rv.caveats, bytes(s))),
          context=ctx(revoked=(rid,)), expected=deny("bad_signature"))
    add("Revoked token with an unknown caveat: unknown_caveat comes first.",
        "verification.md#revocation", [REVOKE, ORDER], tok("verify-revoked3", "region eu"),
        ctx(revoked=(tid("verify-revoked3").hex(),)), deny("unknown_caveat"), cross=False)
    bad = tok("verify-badsig-unknown", "region eu")
    s = bytearray(bad.sig)
    s[0] ^= 1
    f.add("An unknown caveat in a token whose signature does not match: bad_signature (caveats "
          "are only read after the chain verifies).", "verification.md#algorithm", [ORDER, SIG],
          keys=keys, **token_json(Raw(bad.ident, bad.caveats, bytes(s))), context=ctx(),
          expected=deny("bad_signature"))

    # Microunits (appended in revision 1.1).
    short = Micros(1000 * MICROS - 1)
    add("Budget 10.00 EUR, one microunit short of full (999999999 microunits used); a call "
        "costing 1 microunit fills it exactly.", "caveats.md#budget", [MICRO, BOUNDARY, VALID],
        bt, ctx(call(cost={"EUR": Micros(1)}), counters={k: short}),
        allow(debit("budget", t, bu, "2026-09", amount=Micros(1), limit=1000, used=short,
                    unit="EUR", resets_at=oct1)))
    add("Budget 10.00 EUR, 999999999 microunits used; a call costing 2 microunits does not fit.",
        "caveats.md#budget", [MICRO, BOUNDARY], bt,
        ctx(call(cost={"EUR": Micros(2)}), counters={k: short}),
        deny("budget_exceeded", hit("budget", t, bu, "2026-09", limit=1000, used=short,
                                    needed=Micros(2), unit="EUR", resets_at=oct1)))
    add("A cheap call is debited at its price, not rounded up to a cent: 1000 input and 500 "
        "output tokens at 0.15 and 0.60 EUR per million tokens cost 0.00045 EUR, 45000 "
        "microunits.", "caveats.md#currencies", [MICRO, VALID], bt,
        ctx(call(cost={"EUR": Micros(45_000)}), counters={k: Micros(123_456_789)}),
        allow(debit("budget", t, bu, "2026-09", amount=Micros(45_000), limit=1000,
                    used=Micros(123_456_789), unit="EUR", resets_at=oct1)))
    add("confirm-above 500 EUR, the call costs 5.00 EUR and 1 microunit (500000001 "
        "microunits): above the threshold, so an approval is needed.", "caveats.md#confirm-above",
        [MICRO, BOUNDARY], ca, ctx(call(cost={"EUR": Micros(500 * MICROS + 1)})),
        deny("confirmation_required"))
    bm = f"budget b000000000000022 {MAX_MINOR} EUR total"
    tm = tok("verify-budget-max", bm)
    km = ckey(tm.token_id, bm, "total")
    add(f"The largest budget, {MAX_MINOR} EUR minor units: its limit in microunits, "
        f"{MAX_MINOR * MICROS}, is still below 2^53. One microunit short of it, a call costing "
        "1 microunit fills it exactly.", "caveats.md#budget", [MICRO, BOUNDARY, VALID], tm,
        ctx(call(cost={"EUR": Micros(1)}), counters={km: Micros(MAX_MINOR * MICROS - 1)}),
        allow(debit("budget", tm.token_id, bm, "total", amount=Micros(1), limit=MAX_MINOR,
                    used=Micros(MAX_MINOR * MICROS - 1), unit="EUR", resets_at=None)))
    add(f"The largest confirm-above, {MAX_MINOR} EUR minor units; the call costs 1 microunit "
        "more than that.", "caveats.md#confirm-above", [MICRO, BOUNDARY],
        tok("verify-confirm-max", f"confirm-above {MAX_MINOR} EUR"),
        ctx(call(cost={"EUR": Micros(MAX_MINOR * MICROS + 1)})), deny("confirmation_required"))

    # The counter a denial names (appended in revision 1.2).
    cb_, cq_, cr_ = ("budget b000000000000023 1000 EUR month",
                     "token-quota a000000000000021 10000 day", "rate c000000000000022 5")
    co = tok("verify-counter-order", cb_, cq_, cr_)
    add("Budget, quota and rate caveats in that token order; the budget and the quota are both "
        "exhausted and the rate has room. The denial is quota_exceeded and names the quota: "
        "counters are checked rate, quota, budget, whatever their order in the token.",
        "verification.md#counters", [ORDER, COUNTER_ORDER], co,
        ctx(counters={ckey(co.token_id, cb_, "2026-09"): 1000,
                      ckey(co.token_id, cq_, "2026-09-21"): 9000,
                      ckey(co.token_id, cr_, "2026-09-21T14:13"): 4}),
        deny("quota_exceeded", hit("quota", co.token_id, cq_, "2026-09-21", limit=10000,
                                   used=9000, needed=1500, unit="tokens", resets_at=sep22)))
    b1, b2 = "budget b000000000000024 500 EUR month", "budget b000000000000025 100 EUR day"
    two = tok("verify-two-budgets", b1, b2)
    k1, k2 = ckey(two.token_id, b1, "2026-09"), ckey(two.token_id, b2, "2026-09-21")
    add("Two EUR budgets, monthly then daily, and neither has room for a 0.12 EUR call: the "
        "first in token order, the monthly one, is named.", "verification.md#decision",
        [COUNTER_ORDER], two, ctx(counters={k1: 495, k2: 95}),
        deny("budget_exceeded", hit("budget", two.token_id, b1, "2026-09", limit=500, used=495,
                                    needed=12, unit="EUR", resets_at=oct1)))
    add("The same two budgets, the monthly one with room: the daily one, the counter the call "
        "does not fit, is named, with its own period key and reset time.",
        "verification.md#decision", [], two, ctx(counters={k1: 100, k2: 95}),
        deny("budget_exceeded", hit("budget", two.token_id, b2, "2026-09-21", limit=100,
                                    used=95, needed=12, unit="EUR", resets_at=sep22)))
    add(f"The largest budget, one microunit short of full; a call costing 2 microunits is "
        f"denied, and the named counter states the limit {MAX_MINOR * MICROS} and the used "
        "amount exactly.", "verification.md#decision", [MICRO, BOUNDARY], tm,
        ctx(call(cost={"EUR": Micros(2)}), counters={km: Micros(MAX_MINOR * MICROS - 1)}),
        deny("budget_exceeded", hit("budget", tm.token_id, bm, "total", limit=MAX_MINOR,
                                    used=Micros(MAX_MINOR * MICROS - 1), needed=Micros(2),
                                    unit="EUR", resets_at=None)))
    bk = "budget b000000000000026 1000 INR day Asia/Kathmandu"
    kt = tok("verify-kathmandu", bk)
    add("A daily INR budget in Asia/Kathmandu (UTC+05:45), exhausted, at 18:14 UTC on 21 "
        "September, one minute before the local day ends: the named counter has the local "
        "day's key, 2026-09-21, and resets at 18:15 UTC.", "verification.md#decision", [TZF],
        kt, ctx(call(cost={"INR": 12}), now=utc(2026, 9, 21, 18, 14),
                counters={ckey(kt.token_id, bk, "2026-09-21"): 1000}),
        deny("budget_exceeded", hit("budget", kt.token_id, bk, "2026-09-21", limit=1000,
                                    used=1000, needed=12, unit="INR",
                                    resets_at=utc(2026, 9, 21, 18, 15))))
    og = "caveats.md#origin"
    notes = "https://notes.example"
    to = tok("verify-origin", f"origin {notes}")
    add("origin https://notes.example, a browser call from https://notes.example.", og,
        [ORIGIN_F, VALID], to, ctx(call(origin=notes)), allow())
    add("The same token presented by a page on https://evil.example.", og, [ORIGIN_F], to,
        ctx(call(origin="https://evil.example")), deny("origin_mismatch"))
    add("A server-side call states no origin (it sends no Origin header): the origin caveat "
        "does not apply, the other caveats govern.", og, [ORIGIN_F, VALID], to, ctx(call()),
        allow())
    add("The request's origin is normalised before comparing: scheme and host are lower-cased "
        "and the default port dropped, so https://Notes.Example:443 matches.",
        "verification.md#request-shape", [ORIGIN_F, VALID], to,
        ctx(call(origin="HTTPS://Notes.Example:443")), allow())
    add("An opaque origin ('null', from a sandboxed frame or a file: page) is no origin: it "
        "matches nothing.", og, [ORIGIN_F], to, ctx(call(origin="null")),
        deny("origin_mismatch"))
    for other, why in [("http://notes.example", "another scheme"),
                       ("https://notes.example:8443", "another port"),
                       ("https://app.notes.example", "a subdomain"),
                       ("https://notes.example/app", "a URL with a path, not an origin")]:
        add(f"A browser call from {other} ({why}): origins match exactly.", og,
            [ORIGIN_F, EXACT], to, ctx(call(origin=other)), deny("origin_mismatch"))
    add("A resource access from another origin is refused too.", og, [ORIGIN_F, RESOURCE], to,
        ctx(access(origin="https://evil.example")), deny("origin_mismatch"))
    add("A token without an origin caveat: a browser call from any origin is governed by the "
        "other caveats.", og, [ORIGIN_F, VALID], tok("verify-no-origin", "models gpt-4o-mini"),
        ctx(call(origin="https://evil.example")), allow())
    tpo = tok("verify-origin-order", "providers anthropic", f"origin {notes}")
    add("From another origin and to a provider the token does not allow: origin_mismatch, the "
        "first check of the request shape.", "verification.md#request-shape",
        [ORIGIN_F, ORDER], tpo, ctx(call(origin="https://evil.example")),
        deny("origin_mismatch"))
    # The far future: `now` may be up to 2^53-1, but counter periods end at 9998-01-01.
    lim_t = 253339228800
    assert lim_t == utc(9998, 1, 1)
    per = "caveats.md#periods"
    fb = "budget b000000000000030 1000 EUR month"
    ft = tok("verify-far-month", fb)
    add("A monthly budget one minute before 9998-01-01T00:00:00Z: the last period, 9997-12, "
        "resets at that instant.", per, [FAR_FUTURE, BOUNDARY, VALID], ft,
        ctx(now=lim_t - 60),
        allow(debit("budget", ft.token_id, fb, "9997-12", amount=12, limit=1000, unit="EUR",
                    resets_at=lim_t)))
    add("The same budget at 9998-01-01T00:00:00Z: no period is defined from then on, so the "
        "call is denied with period_out_of_range.", per, [FAR_FUTURE, BOUNDARY], ft,
        ctx(now=lim_t), deny("period_out_of_range"))
    add("The same budget at now = 2^53-1, the largest time the protocol allows.", per,
        [FAR_FUTURE, BOUNDARY], ft, ctx(now=MAX_SAFE), deny("period_out_of_range"))
    fy = "budget b000000000000031 1000 EUR year Pacific/Kiritimati"
    fyt = tok("verify-far-kiritimati", fy)
    add("A yearly budget in Pacific/Kiritimati (UTC+14) one minute before the limit: locally "
        "it is already 9998-01-01T13:59, so the period is 9998 and it ends at local "
        "9999-01-01T00:00.", per, [FAR_FUTURE, TZF, VALID], fyt, ctx(now=lim_t - 60),
        allow(debit("budget", fyt.token_id, fy, "9998", amount=12, limit=1000, unit="EUR",
                    resets_at=utc(9998, 12, 31, 10))))
    fr = "rate c000000000000030 10"
    add("A rate (per UTC minute) at now = 2^53-1: a minute is a period too.", per,
        [FAR_FUTURE], tok("verify-far-rate", fr), ctx(now=MAX_SAFE), deny("period_out_of_range"))
    ftot = "budget b000000000000032 1000 EUR total"
    ftt = tok("verify-far-total", ftot)
    add("A total budget has no calendar period: at now = 2^53-1 it is still counted.", per,
        [FAR_FUTURE, VALID], ftt, ctx(now=MAX_SAFE),
        allow(debit("budget", ftt.token_id, ftot, "total", amount=12, limit=1000, unit="EUR",
                    resets_at=None)))
    add("A resource access at now = 2^53-1 under a monthly budget: counters do not apply to "
        "it, so it is allowed.", per, [FAR_FUTURE, RESOURCE, VALID], ft,
        ctx(access(), now=MAX_SAFE), allow())
    add("At the limit, with a call not priced in the budget's currency: period_out_of_range "
        "comes first in the counters step.", "verification.md#counters",
        [FAR_FUTURE, ORDER], ft, ctx(call(cost={"USD": 12}), now=lim_t),
        deny("period_out_of_range"))
    # A quota amount is input + output, which can exceed 2^53-1 although each part fits.
    qm = f"token-quota a000000000000030 {MAX_SAFE} total"
    qmt = tok("verify-quota-sum", qm)
    add("The largest token quota and a call of 2^53-2 input and 1 output tokens: the amount, "
        "2^53-1, fits exactly.", "caveats.md#token-quota", [BOUNDARY, VALID], qmt,
        ctx(call(input_tokens=MAX_SAFE - 1, output_tokens=1)),
        allow(debit("quota", qmt.token_id, qm, "total", amount=MAX_SAFE, limit=MAX_SAFE,
                    unit="tokens", resets_at=None)))
    add("The largest token quota and a call of 2^53-1 input and 1 output tokens: the amount, "
        "2^53, is above 2^53-1, so it never fits; the denial reports needed = 2^53-1.",
        "caveats.md#token-quota", [BOUNDARY], qmt,
        ctx(call(input_tokens=MAX_SAFE, output_tokens=1)),
        deny("quota_exceeded", hit("quota", qmt.token_id, qm, "total", limit=MAX_SAFE, used=0,
                                   needed=MAX_SAFE, unit="tokens", resets_at=None)))
    add("2^53-1 input and 2^53-1 output tokens (the sum is 2^54-2) against the same quota.",
        "caveats.md#token-quota", [BOUNDARY], qmt,
        ctx(call(input_tokens=MAX_SAFE, output_tokens=MAX_SAFE)),
        deny("quota_exceeded", hit("quota", qmt.token_id, qm, "total", limit=MAX_SAFE, used=0,
                                   needed=MAX_SAFE, unit="tokens", resets_at=None)))
    return f
