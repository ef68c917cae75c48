"""budget.json: sequences of requests against shared counters; periods and time zones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .encoder import Tok, tok
from .files import File, crosscheck_mint, keys_json, token_json
from .flags import BOUNDARY, CHAIN, DST, ISOW, MICRO, RESOURCE, ROLL, SEQ, SIBLING, TZF, ZERO
from .requests import Micros, access, allow, call, ckey, debit, deny, hit, scale_counters
from .seeds import K1, T, utc


@dataclass
class Step:
    now: int
    request: dict[str, Any]
    expected: dict[str, Any]
    after: dict[str, int]
    token: Tok | None = None


def build_budget() -> File:
    f = File("budget", [
        "Budgets, quotas and rates over several requests (spec/budgets.md,",
        "spec/caveats.md#periods).",
        "Each vector is a sequence: the runner verifies each step with the current counters",
        "and, if the step is allowed, adds every debit's amount to its counter before the next",
        "step. counters_after is the state after the step. A step may use another token of the",
        "same family (parent, child, sibling), which shares the token id and so the counters.",
    ])
    keys = keys_json(K1)

    def seq(desc: str, spec: str, flags: list[str], t: Tok, steps: list[Step],
            counters: dict[str, int] | None = None) -> None:
        for member in [t, *[s.token for s in steps if s.token is not None]]:
            crosscheck_mint(member)
        out = []
        for s in steps:
            step: dict[str, Any] = {}
            if s.token is not None:
                step["token"] = s.token.s
            step.update(now=s.now, request=s.request, expected=s.expected,
                        counters_after=scale_counters(s.after))
            out.append(step)
        f.add(desc, spec, [SEQ, *flags], keys=keys, **token_json(t),
              counters=scale_counters(counters or {}), steps=out)

    def eur(n: int) -> dict[str, Any]:
        return call(cost={"EUR": n})

    b = "budget b000000000000030 100 EUR month"
    t = tok("budget-month", b)
    k = ckey(t.token_id, b, "2026-09")
    oct1 = utc(2026, 10, 1)

    def d(amount: int, used: int) -> dict[str, Any]:
        return debit("budget", t.token_id, b, "2026-09", amount=amount, limit=100, used=used,
                     unit="EUR", resets_at=oct1)

    def dh(needed: int, used: int) -> dict[str, Any]:
        return hit("budget", t.token_id, b, "2026-09", limit=100, used=used, needed=needed,
                   unit="EUR", resets_at=oct1)

    def one(caveat: str, tt: Tok, amount: int, used: int, limit: int, unit: str) -> dict[str, Any]:
        return debit("budget", tt.token_id, caveat, "total", amount=Micros(amount), limit=limit,
                     used=Micros(used), unit=unit, resets_at=None)

    seq("A 1.00 EUR monthly budget spent down: 0.40 + 0.40 fit, a third 0.40 does not, 0.20 "
        "fills it exactly, a free call passes, then 0.01 is refused (counters in microunits: "
        "the limit is 100000000).", "budgets.md#counter-keys",
        [ZERO, BOUNDARY], t, [
            Step(T, eur(40), allow(d(40, 0)), {k: 40}),
            Step(T + 1, eur(40), allow(d(40, 40)), {k: 80}),
            Step(T + 2, eur(40), deny("budget_exceeded", dh(40, 80)), {k: 80}),
            Step(T + 3, eur(20), allow(d(20, 80)), {k: 100}),
            Step(T + 4, eur(0), allow(d(0, 100)), {k: 100}),
            Step(T + 5, eur(1), deny("budget_exceeded", dh(1, 100)), {k: 100}),
        ])
    k10 = ckey(t.token_id, b, "2026-10")
    seq("The exhausted September budget refuses a call at 23:59:59 UTC on 30 September; at "
        "00:00:00 on 1 October the key is <id>/2026-10, a fresh counter.",
        "budgets.md#period-rollover", [ROLL], t, [
            Step(utc(2026, 9, 30, 23, 59, 59), eur(10), deny("budget_exceeded", dh(10, 100)),
                 {k: 100}),
            Step(utc(2026, 10, 1), eur(10),
                 allow(debit("budget", t.token_id, b, "2026-10", amount=10, limit=100,
                             unit="EUR", resets_at=utc(2026, 11, 1))),
                 {k: 100, k10: 10}),
        ], counters={k: 100})

    def tz_seq(desc: str, flags: list[str], label: str, caveat: str, unit: str,
               points: list[tuple[int, str, int | None]], limit: int) -> None:
        """Each point: (now, expected period key, expected resets_at); each call costs 1."""
        tt = tok(label, caveat, issued_at=min(p[0] for p in points) - 3600)
        steps: list[Step] = []
        state: dict[str, int] = {}
        kind = caveat.split(" ")[0]
        kind = {"budget": "budget", "token-quota": "quota", "rate": "rate"}[kind]
        for now, key, resets in points:
            ck = ckey(tt.token_id, caveat, key)
            used = state.get(ck, 0)
            amount = 1 if kind == "rate" else 1500 if kind == "quota" else 1
            state = {**state, ck: used + amount}
            req = call(cost={unit: 1}) if kind == "budget" else call()
            steps.append(Step(now, req, allow(debit(kind, tt.token_id, caveat, key,
                                                    amount=amount, limit=limit, used=used,
                                                    unit=unit, resets_at=resets)),
                              dict(state)))
        seq(desc, "caveats.md#periods", flags, tt, steps)

    tz_seq("A daily USD budget in America/New_York (EDT, UTC-4): 03:59 UTC is still 21 "
           "September there; 04:00 UTC starts the 22nd.", [TZF, ROLL], "budget-ny",
           "budget b000000000000031 500 USD day America/New_York", "USD", [
               (utc(2026, 9, 22, 3, 30), "2026-09-21", utc(2026, 9, 22, 4)),
               (utc(2026, 9, 22, 3, 59, 59), "2026-09-21", utc(2026, 9, 22, 4)),
               (utc(2026, 9, 22, 4), "2026-09-22", utc(2026, 9, 23, 4)),
           ], 500)
    tz_seq("A monthly EUR budget in Europe/Berlin: 22:00 UTC on 30 September is already "
           "October there (CEST, UTC+2); October ends at 23:00 UTC on the 31st, after the "
           "switch to CET (UTC+1) on the 25th.", [TZF, ROLL, DST], "budget-berlin",
           "budget b000000000000032 2000 EUR month Europe/Berlin", "EUR", [
               (utc(2026, 9, 30, 21, 59), "2026-09", utc(2026, 9, 30, 22)),
               (utc(2026, 9, 30, 22), "2026-10", utc(2026, 10, 31, 23)),
           ], 2000)
    tz_seq("ISO weeks in UTC: Friday 1 January 2027 and Sunday 3 January belong to week 53 "
           "of 2026; Monday 4 January starts 2027-W01.", [ISOW, ROLL], "budget-week",
           "token-quota a000000000000030 100000 week", "tokens", [
               (utc(2027, 1, 1, 12), "2026-W53", utc(2027, 1, 4)),
               (utc(2027, 1, 3, 23, 59, 59), "2026-W53", utc(2027, 1, 4)),
               (utc(2027, 1, 4), "2027-W01", utc(2027, 1, 11)),
           ], 100000)
    tz_seq("A yearly NZD budget in Pacific/Auckland (NZDT, UTC+13): 2027 begins there at "
           "11:00 UTC on 31 December 2026.", [TZF, ROLL], "budget-auckland",
           "budget b000000000000033 100000 NZD year Pacific/Auckland", "NZD", [
               (utc(2026, 12, 31, 10, 59), "2026", utc(2026, 12, 31, 11)),
               (utc(2026, 12, 31, 11), "2027", utc(2027, 12, 31, 11)),
           ], 100000)
    tz_seq("A daily budget in Asia/Kathmandu (UTC+05:45): days turn at 18:15 UTC.", [TZF, ROLL],
           "budget-kathmandu", "budget b000000000000034 1000 INR day Asia/Kathmandu", "INR", [
               (utc(2026, 9, 21, 18, 14), "2026-09-21", utc(2026, 9, 21, 18, 15)),
               (utc(2026, 9, 21, 18, 15), "2026-09-22", utc(2026, 9, 22, 18, 15)),
           ], 1000)
    tz_seq("A daily quota in America/St_Johns (NDT, UTC-02:30): days turn at 02:30 UTC.",
           [TZF, ROLL], "budget-stjohns", "token-quota a000000000000031 50000 day America/St_Johns",
           "tokens", [
               (utc(2026, 9, 22, 2, 29), "2026-09-21", utc(2026, 9, 22, 2, 30)),
               (utc(2026, 9, 22, 2, 30), "2026-09-22", utc(2026, 9, 23, 2, 30)),
           ], 50000)
    tz_seq("America/New_York springs forward on Sunday 8 March 2026: Saturday the 7th ends at "
           "05:00 UTC (EST), the 23-hour Sunday ends at 04:00 UTC on the 9th (EDT).",
           [TZF, DST], "budget-ny-dst", "budget b000000000000035 500 USD day America/New_York",
           "USD", [
               (utc(2026, 3, 7, 12), "2026-03-07", utc(2026, 3, 8, 5)),
               (utc(2026, 3, 8, 12), "2026-03-08", utc(2026, 3, 9, 4)),
           ], 500)
    tz_seq("America/Santiago skips local midnight on 6 September 2026 (00:00 -04 becomes "
           "01:00 -03): the 6th begins at 04:00 UTC, the instant the gap ends.",
           [TZF, DST, ROLL], "budget-santiago",
           "budget b000000000000036 5000 CLP day America/Santiago", "CLP", [
               (utc(2026, 9, 5, 12), "2026-09-05", utc(2026, 9, 6, 4)),
               (utc(2026, 9, 6, 3, 59), "2026-09-05", utc(2026, 9, 6, 4)),
               (utc(2026, 9, 6, 4), "2026-09-06", utc(2026, 9, 7, 3)),
           ], 5000)
    tz_seq("America/Havana repeats the hour after midnight on 1 November 2026 (01:00 CDT "
           "becomes 00:00 CST): the day begins at the first midnight, 04:00 UTC, and both "
           "00:30s belong to the 1st.", [TZF, DST, ROLL], "budget-havana",
           "budget b000000000000037 900 USD day America/Havana", "USD", [
               (utc(2026, 11, 1, 3, 59), "2026-10-31", utc(2026, 11, 1, 4)),
               (utc(2026, 11, 1, 4, 30), "2026-11-01", utc(2026, 11, 2, 5)),
               (utc(2026, 11, 1, 5, 30), "2026-11-01", utc(2026, 11, 2, 5)),
           ], 900)
    tz_seq("A total budget: one counter for ever, key 'total', no reset.", [], "budget-total",
           "budget b000000000000038 5000 EUR total", "EUR", [
               (T, "total", None),
               (utc(2030, 1, 1), "total", None),
           ], 5000)
    tz_seq("A rate of 3 per minute counts UTC minutes; the key names the minute "
           "(YYYY-MM-DDTHH:MM).", [ROLL], "budget-rate",
           "rate c000000000000030 3", "requests", [
               (utc(2026, 9, 21, 14, 13), "2026-09-21T14:13", utc(2026, 9, 21, 14, 14)),
               (utc(2026, 9, 21, 14, 13, 59), "2026-09-21T14:13", utc(2026, 9, 21, 14, 14)),
               (utc(2026, 9, 21, 14, 14), "2026-09-21T14:14", utc(2026, 9, 21, 14, 15)),
           ], 3)

    r = "rate c000000000000031 2"
    rt = tok("budget-rate-limit", r)
    rk13, rk14 = (ckey(rt.token_id, r, "2026-09-21T14:13"), ckey(rt.token_id, r,
                                                                  "2026-09-21T14:14"))

    def rd(key: str, used: int, resets: int) -> dict[str, Any]:
        return debit("rate", rt.token_id, r, key, amount=1, limit=2, used=used, unit="requests",
                     resets_at=resets)

    m14, m15 = utc(2026, 9, 21, 14, 14), utc(2026, 9, 21, 14, 15)
    seq("Rate 2 per minute: a third call in the same minute is refused, the next minute "
        "is fresh; a resource access is not counted.", "caveats.md#rate", [ROLL, RESOURCE], rt, [
            Step(utc(2026, 9, 21, 14, 13), call(), allow(rd("2026-09-21T14:13", 0, m14)),
                 {rk13: 1}),
            Step(utc(2026, 9, 21, 14, 13, 30), call(), allow(rd("2026-09-21T14:13", 1, m14)),
                 {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 13, 59), call(),
                 deny("rate_limited", hit("rate", rt.token_id, r, "2026-09-21T14:13", limit=2,
                                          used=2, needed=1, unit="requests", resets_at=m14)),
                 {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 13, 59), access(), allow(), {rk13: 2}),
            Step(utc(2026, 9, 21, 14, 14), call(), allow(rd("2026-09-21T14:14", 0, m15)),
                 {rk13: 2, rk14: 1}),
        ])

    q = "token-quota a000000000000032 3000 day"
    qt = tok("budget-quota", q)
    qk = ckey(qt.token_id, q, "2026-09-21")

    def qd(amount: int, used: int) -> dict[str, Any]:
        return debit("quota", qt.token_id, q, "2026-09-21", amount=amount, limit=3000, used=used,
                     unit="tokens", resets_at=utc(2026, 9, 22))

    seq("A daily token quota counts input + output tokens: 1500 + 1500 fill 3000; a call "
        "with no tokens still passes.", "caveats.md#token-quota", [ZERO], qt, [
            Step(T, call(input_tokens=1000, output_tokens=500), allow(qd(1500, 0)), {qk: 1500}),
            Step(T + 1, call(input_tokens=1200, output_tokens=300), allow(qd(1500, 1500)),
                 {qk: 3000}),
            Step(T + 2, call(input_tokens=1, output_tokens=0),
                 deny("quota_exceeded", hit("quota", qt.token_id, q, "2026-09-21", limit=3000,
                                            used=3000, needed=1, unit="tokens",
                                            resets_at=utc(2026, 9, 22))),
                 {qk: 3000}),
            Step(T + 3, call(input_tokens=0, output_tokens=0), allow(qd(0, 3000)), {qk: 3000}),
        ])

    pb, cb, gb = ("budget b000000000000040 1000 EUR month", "budget b000000000000041 300 EUR month",
                  "budget b000000000000042 100 EUR month")
    P = tok("budget-family", pb)
    C = P.child(cb)
    G = C.child(gb)
    ft = P.token_id
    kp, kc, kg = (ckey(ft, x, "2026-09") for x in (pb, cb, gb))

    def fd(caveat: str, limit: int, amount: int, used: int) -> dict[str, Any]:
        return debit("budget", ft, caveat, "2026-09", amount=amount, limit=limit, used=used,
                     unit="EUR", resets_at=oct1)

    def fh(caveat: str, limit: int, needed: int, used: int) -> dict[str, Any]:
        return hit("budget", ft, caveat, "2026-09", limit=limit, used=used, needed=needed,
                   unit="EUR", resets_at=oct1)

    seq("Parent (10.00 EUR), child (+3.00 EUR) and grandchild (+1.00 EUR) share counters: the "
        "grandchild's spend is debited on all three budgets, so no level outspends the one "
        "above it.", "budgets.md#attenuation-and-budgets", [CHAIN], P, [
            Step(T, eur(100), allow(fd(pb, 1000, 100, 0), fd(cb, 300, 100, 0),
                                    fd(gb, 100, 100, 0)), {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 1, eur(1), deny("budget_exceeded", fh(gb, 100, 1, 100)),
                 {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 2, eur(0), allow(fd(pb, 1000, 0, 100), fd(cb, 300, 0, 100),
                                      fd(gb, 100, 0, 100)), {kp: 100, kc: 100, kg: 100}, G),
            Step(T + 3, eur(200), allow(fd(pb, 1000, 200, 100), fd(cb, 300, 200, 100)),
                 {kp: 300, kc: 300, kg: 100}, C),
            Step(T + 4, eur(1), deny("budget_exceeded", fh(cb, 300, 1, 300)),
                 {kp: 300, kc: 300, kg: 100}, C),
            Step(T + 5, eur(700), allow(fd(pb, 1000, 700, 300)), {kp: 1000, kc: 300, kg: 100}),
            Step(T + 6, eur(1), deny("budget_exceeded", fh(pb, 1000, 1, 1000)),
                 {kp: 1000, kc: 300, kg: 100}),
        ])
    sa, sb = "budget b0000000000000a4 600 EUR month", "budget b0000000000000b4 600 EUR month"
    A, B = P.child(sa), P.child(sb)
    ka, kb = ckey(ft, sa, "2026-09"), ckey(ft, sb, "2026-09")
    seq("Siblings with equal limits and different nonces: each has its own 6.00 EUR counter, "
        "and both draw on the parent's 10.00 EUR.", "budgets.md#siblings", [SIBLING], P, [
            Step(T, eur(600), allow(fd(pb, 1000, 600, 0), fd(sa, 600, 600, 0)),
                 {kp: 600, ka: 600}, A),
            Step(T + 1, eur(600), deny("budget_exceeded", fh(pb, 1000, 600, 600)),
                 {kp: 600, ka: 600}, B),
            Step(T + 2, eur(400), allow(fd(pb, 1000, 400, 600), fd(sb, 600, 400, 0)),
                 {kp: 1000, ka: 600, kb: 400}, B),
            Step(T + 3, eur(1), deny("budget_exceeded", fh(pb, 1000, 1, 1000)),
                 {kp: 1000, ka: 600, kb: 400}, A),
        ])
    ss = "budget b0000000000000c4 600 EUR month"
    S1, S2 = P.child(ss), P.child(ss)
    ks = ckey(ft, ss, "2026-09")
    seq("Two siblings given byte-identical budget caveats (same nonce) share one counter: "
        "what one spends, the other cannot. Minters give each grant a fresh nonce.",
        "budgets.md#identical-caveats", [SIBLING], P, [
            Step(T, eur(600), allow(fd(pb, 1000, 600, 0), fd(ss, 600, 600, 0)),
                 {kp: 600, ks: 600}, S1),
            Step(T + 1, eur(1), deny("budget_exceeded", fh(ss, 600, 1, 600)),
                 {kp: 600, ks: 600}, S2),
        ])
    db = "budget b000000000000043 100 EUR month"
    dt_ = tok("budget-dup", db, db)
    kd = ckey(dt_.token_id, db, "2026-09")
    seq("A token holding the same budget caveat twice debits its one counter once per call.",
        "budgets.md#identical-caveats", [], dt_, [
            Step(T, eur(60), allow(debit("budget", dt_.token_id, db, "2026-09", amount=60,
                                         limit=100, unit="EUR", resets_at=oct1)), {kd: 60}),
            Step(T + 1, eur(40), allow(debit("budget", dt_.token_id, db, "2026-09", amount=40,
                                             limit=100, used=60, unit="EUR", resets_at=oct1)),
                 {kd: 100}),
        ])
    be, bd = "budget b000000000000044 100 EUR month", "budget b000000000000045 100 USD month"
    mt = tok("budget-multi", be, bd)
    ke, ku = ckey(mt.token_id, be, "2026-09"), ckey(mt.token_id, bd, "2026-09")
    seq("Budgets in two currencies: the request is priced in both and both are debited; a "
        "request priced only in EUR is price_unknown.", "verification.md#counters", [], mt, [
            Step(T, call(cost={"EUR": 60, "USD": 65}),
                 allow(debit("budget", mt.token_id, be, "2026-09", amount=60, limit=100,
                             unit="EUR", resets_at=oct1),
                       debit("budget", mt.token_id, bd, "2026-09", amount=65, limit=100,
                             unit="USD", resets_at=oct1)), {ke: 60, ku: 65}),
            Step(T + 1, call(cost={"EUR": 30}), deny("price_unknown"), {ke: 60, ku: 65}),
            Step(T + 2, call(cost={"EUR": 30, "USD": 40}),
                 deny("budget_exceeded", hit("budget", mt.token_id, bd, "2026-09", limit=100,
                                             used=65, needed=40, unit="USD", resets_at=oct1)),
                 {ke: 60, ku: 65}),
        ])

    # Microunits (appended in revision 1.1).
    bc = "budget b000000000000046 1 USD total"
    ct = tok("budget-cent", bc)
    kc_ = ckey(ct.token_id, bc, "total")
    def usd(n: int) -> dict[str, Any]:
        return call(cost={"USD": Micros(n)})

    seq("A budget of one cent (1 USD minor unit, 1000000 microunits) pays for several cheap "
        "calls: three of 0.003 USD fit, a fourth does not, 0.001 USD fills it exactly, then "
        "1 microunit is refused. Counted in whole cents, the first call alone would have "
        "used it up.", "caveats.md#currencies", [MICRO, BOUNDARY], ct, [
            Step(T, usd(300_000), allow(one(bc, ct, 300_000, 0, 1, "USD")),
                 {kc_: Micros(300_000)}),
            Step(T + 1, usd(300_000), allow(one(bc, ct, 300_000, 300_000, 1, "USD")),
                 {kc_: Micros(600_000)}),
            Step(T + 2, usd(300_000), allow(one(bc, ct, 300_000, 600_000, 1, "USD")),
                 {kc_: Micros(900_000)}),
            Step(T + 3, usd(300_000),
                 deny("budget_exceeded", hit("budget", ct.token_id, bc, "total", limit=1,
                                             used=Micros(900_000), needed=Micros(300_000),
                                             unit="USD", resets_at=None)),
                 {kc_: Micros(900_000)}),
            Step(T + 4, usd(100_000), allow(one(bc, ct, 100_000, 900_000, 1, "USD")),
                 {kc_: Micros(1_000_000)}),
            Step(T + 5, usd(1),
                 deny("budget_exceeded", hit("budget", ct.token_id, bc, "total", limit=1,
                                             used=Micros(1_000_000), needed=Micros(1),
                                             unit="USD", resets_at=None)),
                 {kc_: Micros(1_000_000)}),
        ])
    by = "budget b000000000000047 1 JPY total"
    yt = tok("budget-yen", by)
    ky = ckey(yt.token_id, by, "total")
    def jpy(n: int) -> dict[str, Any]:
        return call(cost={"JPY": Micros(n)})

    seq("JPY has no minor unit (exponent 0), so a microunit is a millionth of a yen: a 1 JPY "
        "budget takes two calls of 0.4 yen (400000 microunits), refuses a third, and 0.2 yen "
        "fills it.", "caveats.md#currencies", [MICRO, BOUNDARY], yt, [
            Step(T, jpy(400_000), allow(one(by, yt, 400_000, 0, 1, "JPY")),
                 {ky: Micros(400_000)}),
            Step(T + 1, jpy(400_000), allow(one(by, yt, 400_000, 400_000, 1, "JPY")),
                 {ky: Micros(800_000)}),
            Step(T + 2, jpy(400_000),
                 deny("budget_exceeded", hit("budget", yt.token_id, by, "total", limit=1,
                                             used=Micros(800_000), needed=Micros(400_000),
                                             unit="JPY", resets_at=None)),
                 {ky: Micros(800_000)}),
            Step(T + 3, jpy(200_000), allow(one(by, yt, 200_000, 800_000, 1, "JPY")),
                 {ky: Micros(1_000_000)}),
        ])
    tz_seq("A monthly budget through February of a common year (2027, 28 days): the window "
           "of every day of February ends at 1 March; 1 March starts a new one.",
           [ROLL, BOUNDARY], "budget-february",
           "budget b000000000000033 300 EUR month", "EUR", [
               (utc(2027, 2, 1), "2027-02", utc(2027, 3, 1)),
               (utc(2027, 2, 28, 23, 59, 59), "2027-02", utc(2027, 3, 1)),
               (utc(2027, 3, 1), "2027-03", utc(2027, 4, 1)),
           ], 300)
    tz_seq("A monthly budget through February of a leap year (2028, 29 days), in "
           "Pacific/Auckland (NZDT, UTC+13): 29 February there starts at 11:00 UTC on the 28th; "
           "March starts at 11:00 UTC on the 29th.", [TZF, ROLL, BOUNDARY], "budget-leap",
           "budget b000000000000034 300 EUR month Pacific/Auckland", "EUR", [
               (utc(2028, 2, 28, 10, 59, 59), "2028-02", utc(2028, 2, 29, 11)),
               (utc(2028, 2, 28, 11), "2028-02", utc(2028, 2, 29, 11)),
               (utc(2028, 2, 29, 11), "2028-03", utc(2028, 3, 31, 11)),
           ], 300)
    return f
