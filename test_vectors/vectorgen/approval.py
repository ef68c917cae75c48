"""approval.json: confirm-above and ask-first, the approval format, the request digest."""

from __future__ import annotations

from typing import Any

from capwallet import approval as approvals
from capwallet.keys import RootKey

from .approvals import (
    KIND_NAMES,
    MODEL_CALL,
    RESOURCE_ACCESS,
    access_digest_of,
    approval_body,
    approval_mac,
    approval_str,
    digest_of,
)
from .encoder import Tok, hmac256, tok
from .files import File, crosscheck_mint, keys_json, token_json
from .flags import (
    ACCESS_F,
    APPROVAL_F,
    ASK,
    BAD_APPROVAL,
    BOUNDARY,
    CHAIN,
    DIGEST_F,
    KIND_F,
    ORDER,
    RESOURCE,
    ROTATION,
    VALID,
)
from .requests import access, allow, call, ckey, ctx, debit, deny, hit
from .seeds import K1, K2, K9, MAX_SAFE, T, _h, tid, utc


def build_approval() -> File:
    f = File("approval", [
        "Approvals (spec/approvals.md): a confirm-above or ask-first caveat makes a request wait",
        "for the user; the wallet then issues an approval that states its kind (model call or",
        "resource access), bound to the token id, a digest of exactly what the user saw, and an",
        "expiry, MAC'd under a key derived from the token's root key.",
        "Single use is enforced by the store, not by these vectors: an allowed decision names",
        "the approval id to consume.",
    ])
    keys = keys_json(K1)
    body = (b'{"model":"gpt-4o","max_tokens":4000,'
            b'"messages":[{"role":"user","content":"Summarise this book."}]}')
    path = "/v1/chat/completions"
    D = digest_of("POST", path, body)
    rd = {"method": "POST", "path": path, "body_hex": body.hex(), "digest": D.hex()}
    TA = tok("approval-confirm", "confirm-above 500 EUR")
    crosscheck_mint(TA)
    aid = _h("approval-id/1")[:16]
    exp = T + 300

    def issue(key: RootKey, token_id: bytes, digest: bytes, expires: int,
              approval_id: bytes = aid, kind: int = MODEL_CALL) -> tuple[str, dict[str, Any]]:
        body_ = approval_body(kind, key.key_id, approval_id, token_id, digest, expires)
        mac = approval_mac(key.secret, body_)
        text = approval_str(body_ + mac)
        impl = approvals.issue(key, token_id, digest, expires, approval_id=approval_id,
                               kind=approvals.Kind(kind))
        if impl.serialize() != text:
            raise SystemExit("approvals.issue disagrees with the independent encoder")
        return text, {"kind": KIND_NAMES[kind], "key_id": key.key_id.hex(),
                      "approval_id": approval_id.hex(),
                      "token_id": token_id.hex(), "digest": digest.hex(), "expires": expires,
                      "approval_key": hmac256(key.secret, b"capwallet-approval-v1").hex(),
                      "hex": (body_ + mac).hex(), "mac": mac.hex(), "string": text}

    good, good_info = issue(K1, TA.token_id, D, exp)

    def big(approval: str | None, digest: bytes | None = D, cost: int = 900) -> dict[str, Any]:
        return call(model="gpt-4o", output_tokens=4000, cost={"EUR": cost}, approval=approval,
                    digest=digest)

    def add(desc: str, spec: str, flags: list[str], t: Tok, context: dict[str, Any],
            expected: dict[str, Any], info: dict[str, Any] | None = None,
            digest: dict[str, Any] | None = None, keyring_: list[dict[str, str]] = keys,
            access_: dict[str, Any] | None = None) -> None:
        extra: dict[str, Any] = {}
        if info is not None:
            extra["approval"] = info
        if digest is not None:
            extra["request_digest"] = digest
        if access_ is not None:
            extra["access_digest"] = access_
        f.add(desc, spec, flags, keys=keyring_, **token_json(t), **extra, context=context,
              expected=expected)

    ca, ck = "approvals.md#when-an-approval-is-needed", "approvals.md#checking-an-approval"
    add("A 9.00 EUR call above confirm-above 5.00 EUR, with a valid approval for this token "
        "and this exact request. The decision names the approval id to consume.", ck,
        [APPROVAL_F, DIGEST_F, VALID], TA, ctx(big(good)), allow(approval_id=aid.hex()),
        good_info, rd)
    add("The same call without an approval.", ca, [], TA, ctx(big(None)),
        deny("confirmation_required"))
    add("The method is upper-cased before hashing: 'post' gives the same digest as 'POST'.",
        "approvals.md#request-digest", [APPROVAL_F, DIGEST_F, VALID], TA, ctx(big(good)),
        allow(approval_id=aid.hex()), good_info, {**rd, "method": "post"})
    add("Checked one second before the approval expires.", ck, [APPROVAL_F, BOUNDARY, VALID], TA,
        ctx(big(good), now=exp - 1), allow(approval_id=aid.hex()), good_info)
    add("Checked at the second the approval expires (approvals get no clock leeway).", ck,
        [APPROVAL_F, BOUNDARY, BAD_APPROVAL], TA, ctx(big(good), now=exp),
        deny("approval_invalid"), good_info)
    other, other_info = issue(K1, tid("approval-someone-else"), D, exp)
    add("An approval issued for another token id.", ck, [APPROVAL_F, BAD_APPROVAL], TA,
        ctx(big(other)), deny("approval_invalid"), other_info)
    D2 = digest_of("POST", path, body.replace(b"4000", b"8000"))
    odig, odig_info = issue(K1, TA.token_id, D2, exp)
    add("An approval for a different request (the body asks for 8000 tokens, not 4000).", ck,
        [APPROVAL_F, BAD_APPROVAL, DIGEST_F], TA, ctx(big(odig)), deny("approval_invalid"),
        odig_info, {"method": "POST", "path": path,
                    "body_hex": body.replace(b"4000", b"8000").hex(), "digest": D2.hex()})
    add("A valid approval, but the request states no digest.", ck, [APPROVAL_F, BAD_APPROVAL],
        TA, ctx(big(good, digest=None)), deny("approval_invalid"), good_info)
    raw = bytearray(bytes.fromhex(good_info["hex"]))
    raw[-1] ^= 1
    add("The approval's MAC with one bit flipped.", ck, [BAD_APPROVAL], TA,
        ctx(big(approval_str(bytes(raw)))), deny("approval_invalid"))
    raw = bytearray(bytes.fromhex(good_info["hex"]))
    raw[81] ^= 1  # the last byte of expires
    add("The approval's expiry changed without re-MACing.", ck, [BAD_APPROVAL], TA,
        ctx(big(approval_str(bytes(raw)))), deny("approval_invalid"))
    k9, k9_info = issue(K9, TA.token_id, D, exp)
    add("An approval under a root key the verifier does not hold.", ck,
        [APPROVAL_F, BAD_APPROVAL], TA, ctx(big(k9)), deny("approval_invalid"), k9_info)
    k2, k2_info = issue(K2, TA.token_id, D, exp)
    add("An approval under K2, which the verifier holds, for a token minted under K1: an "
        "approval must be made under the token's own root key.", ck,
        [APPROVAL_F, BAD_APPROVAL, ROTATION], TA, ctx(big(k2)), deny("approval_invalid"),
        k2_info, keyring_=keys_json(K1, K2))
    fmt = "approvals.md#approval-format"
    gb = bytes.fromhex(good_info["hex"])
    for text, why in [
        ("cwt1_" + good[5:], "the token prefix 'cwt1_' instead of 'cwa1_'"),
        (good + "=", "'=' padding"),
        (approval_str(gb[:-1]), "113 bytes (one MAC byte missing)"),
        (approval_str(gb + b"\x00"), "115 bytes"),
        ("cwa1_" + good[5:].replace("-", "+").replace("_", "/"), "the standard base64 alphabet")
        if ("-" in good[5:] or "_" in good[5:]) else (good + "\n", "a trailing newline"),
        ("", "nothing in it"),
    ]:
        add(f"An approval string with {why}.", fmt, [BAD_APPROVAL], TA, ctx(big(text)),
            deny("approval_invalid"))
    assert len(gb) % 3 == 0
    # 114 bytes encode to whole base64 groups, so there are no trailing bits to set: the
    # vector keeps its meaning with 113 bytes (one trailing character, non-zero padding bits).
    gb = gb[:-1]
    good = approval_str(gb)
    assert len(gb) % 3 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(good[-1])
    add("An approval string whose last base64url character has a non-zero trailing bit (113 "
        "bytes: 114 bytes fill whole base64 groups and leave no trailing bits, so it is refused "
        "for its encoding or its length).", fmt,
        [BAD_APPROVAL], TA, ctx(big(good[:-1] + alphabet[last + 1])), deny("approval_invalid"))
    v2body = approval_body(MODEL_CALL, K1.key_id, aid, TA.token_id, D, exp, version=2)
    add("An approval with version byte 0x02, correctly MAC'd.", fmt, [BAD_APPROVAL], TA,
        ctx(big(approval_str(v2body + approval_mac(K1.secret, v2body)))),
        deny("approval_invalid"))
    good = good_info["string"]
    hb = approval_body(MODEL_CALL, K1.key_id, aid, TA.token_id, D, MAX_SAFE + 1)
    add("An approval expiring at 2^53, correctly MAC'd: out of range.", fmt,
        [BAD_APPROVAL, BOUNDARY], TA, ctx(big(approval_str(hb + approval_mac(K1.secret, hb)))),
        deny("approval_invalid"))
    add("A 4.00 EUR call (not above the threshold) with an approval: allowed without using "
        "the approval, which is not consumed.", ca, [APPROVAL_F], TA, ctx(big(good, cost=400)),
        allow(), good_info)
    add("A 4.00 EUR call with a malformed approval: the approval is not examined when none is "
        "needed.", ca, [], TA, ctx(big("cwa1_garbage", cost=400)), allow())
    bud = "budget b000000000000050 1000 EUR month"
    TB = tok("approval-budget", "confirm-above 500 EUR", bud)
    crosscheck_mint(TB)
    bgood, binfo = issue(K1, TB.token_id, D, exp)
    add("A valid approval does not lift a budget: 9.00 EUR with 2.00 EUR left.",
        "verification.md#confirmation", [APPROVAL_F, ORDER], TB,
        ctx(big(bgood), counters={ckey(TB.token_id, bud, "2026-09"): 800}),
        deny("budget_exceeded", hit("budget", TB.token_id, bud, "2026-09", limit=1000, used=800,
                                    needed=900, unit="EUR", resets_at=utc(2026, 10, 1))),
        binfo)
    add("With room in the budget, the same approval is accepted; the budget is debited and "
        "the approval id is named for consumption.", "verification.md#confirmation",
        [APPROVAL_F, VALID], TB, ctx(big(bgood)),
        allow(debit("budget", TB.token_id, bud, "2026-09", amount=900, limit=1000, unit="EUR",
                    resets_at=utc(2026, 10, 1)), approval_id=aid.hex()), binfo)
    add("A valid approval on an expired token: expired.", "verification.md#algorithm",
        [APPROVAL_F, ORDER], TA.child(f"expires {T - 3600}"), ctx(big(good)), deny("expired"),
        good_info)
    child = TA.child("models gpt-4o")
    crosscheck_mint(child)
    add("An approval issued for the parent's token id also serves its child: the whole "
        "attenuation chain shares one token id.", ck, [APPROVAL_F, CHAIN, VALID], child,
        ctx(big(good)), allow(approval_id=aid.hex()), good_info)

    TS = tok("approval-ask", "scopes email:send files:read", "ask-first email:send")
    crosscheck_mint(TS)
    mbody = b'{"to":"bob@example.com","subject":"Minutes"}'
    MD = digest_of("POST", "/mail/send", mbody)
    mrd = {"method": "POST", "path": "/mail/send", "body_hex": mbody.hex(), "digest": MD.hex()}
    summary = "Send the minutes to bob@example.com"
    AD = access_digest_of(["email:send"], summary, MD)
    ad = {"scopes": ["email:send"], "summary": summary, "request": MD.hex(), "digest": AD.hex()}
    aid2 = _h("approval-id/2")[:16]
    ma, ma_info = issue(K1, TS.token_id, AD, exp, aid2, kind=RESOURCE_ACCESS)
    af = "caveats.md#ask-first"
    add("A resource access using the ask-first scope email:send without an approval.", af,
        [ASK, RESOURCE], TS, ctx(access("email:send")), deny("confirmation_required"))
    add("The same access with a resource-access approval for exactly what the user saw: the "
        "scope, the summary and the resource server's request (the access digest).", af,
        [ASK, RESOURCE, APPROVAL_F, DIGEST_F, ACCESS_F, VALID], TS,
        ctx(access("email:send", approval=ma, digest=AD)), allow(approval_id=aid2.hex()),
        ma_info, mrd, access_=ad)
    add("A resource access using only files:read needs no approval.", af, [RESOURCE, VALID], TS,
        ctx(access("files:read")), allow())
    add("A model call that states the ask-first scope needs an approval too.", af, [ASK], TS,
        ctx(call(scopes=("email:send",))), deny("confirmation_required"))
    ebody = mbody.replace(b"bob", b"eve")
    AE = access_digest_of(["email:send"], summary, digest_of("POST", "/mail/send", ebody))
    add("An approval for the mail request presented for a different mail body (same scope and "
        "summary, so only the request digest inside the access digest differs).", ck,
        [ASK, RESOURCE, APPROVAL_F, BAD_APPROVAL], TS,
        ctx(access("email:send", approval=ma, digest=AE)), deny("approval_invalid"), ma_info)

    # Kinds: an approval states what it approves, and is accepted only for that kind.
    kd = "approvals.md#kinds"
    cross, cross_info = issue(K1, TA.token_id, D, exp, aid2, kind=RESOURCE_ACCESS)
    add("A resource-access approval ('Publish the post') whose digest equals the model call's "
        "request digest, presented on that model call above confirm-above: refused, an "
        "approval of a resource access never confirms a model call.", kd,
        [APPROVAL_F, BAD_APPROVAL, KIND_F], TA, ctx(big(cross)), deny("approval_invalid"),
        cross_info, rd)
    TK = tok("approval-kinds", "confirm-above 500 EUR", "scopes posts:publish",
             "ask-first posts:publish")
    crosscheck_mint(TK)
    pbody = b'{"title":"Sourdough basics"}'
    PD = digest_of("POST", "/posts", pbody)
    psum = "Publish the post 'Sourdough basics'"
    PA = access_digest_of(["posts:publish"], psum, PD)
    pad = {"scopes": ["posts:publish"], "summary": psum, "request": PD.hex(), "digest": PA.hex()}
    pub, pub_info = issue(K1, TK.token_id, PA, exp, aid2, kind=RESOURCE_ACCESS)
    add("The user approved 'Publish the post' on a token with both confirm-above and "
        "ask-first; the approval works for that resource access.", kd,
        [ASK, RESOURCE, APPROVAL_F, ACCESS_F, VALID], TK,
        ctx(access("posts:publish", approval=pub, digest=PA)), allow(approval_id=aid2.hex()),
        pub_info, access_=pad)
    add("The same approval on a model call above confirm-above that states the same digest: "
        "refused for its kind.", kd, [APPROVAL_F, BAD_APPROVAL, KIND_F], TK,
        ctx(big(pub, digest=PA)), deny("approval_invalid"), pub_info)
    mc, mc_info = issue(K1, TK.token_id, PA, exp, aid, kind=MODEL_CALL)
    add("A model-call approval whose digest equals the resource access's digest, presented on "
        "that resource access: refused for its kind.", kd,
        [ASK, RESOURCE, APPROVAL_F, BAD_APPROVAL, KIND_F], TK,
        ctx(access("posts:publish", approval=mc, digest=PA)), deny("approval_invalid"), mc_info)
    add("A model-call approval presented on a model call that states the ask-first scope: "
        "accepted (the kind is the request's, not the caveat's).", kd,
        [ASK, APPROVAL_F, VALID], TS,
        ctx(call(scopes=("email:send",), approval=issue(K1, TS.token_id, D, exp)[0],
                 digest=D)), allow(approval_id=aid.hex()), issue(K1, TS.token_id, D, exp)[1])
    for kind_byte in (0, 3, 255):
        kb = approval_body(kind_byte, K1.key_id, aid, TA.token_id, D, exp)
        add(f"An approval stating kind 0x{kind_byte:02x}, correctly MAC'd: unknown kinds fail "
            "closed.", fmt, [BAD_APPROVAL, KIND_F], TA,
            ctx(big(approval_str(kb + approval_mac(K1.secret, kb)))), deny("approval_invalid"))
    # The range of expires: 0 and 2^53-1 are in range (2^53 is not, above).
    zero, zero_info = issue(K1, TA.token_id, D, 0)
    add("An approval expiring at 0 (in range, long expired), checked at T.", ck,
        [APPROVAL_F, BOUNDARY, BAD_APPROVAL], TA, ctx(big(zero)), deny("approval_invalid"),
        zero_info)
    top, top_info = issue(K1, TA.token_id, D, MAX_SAFE)
    add("An approval expiring at 2^53-1, the largest expiry in range: valid.", ck,
        [APPROVAL_F, BOUNDARY, VALID], TA, ctx(big(top)), allow(approval_id=aid.hex()), top_info)
    # The access digest of several scopes: deduplicated, sorted in byte order, joined with ','.
    two = ["files:read", "email:send", "files:read"]
    tsum = "Send bob@example.com the minutes from your files"
    TD = access_digest_of(two, tsum, MD)
    td = {"scopes": two, "summary": tsum, "request": MD.hex(), "digest": TD.hex()}
    both, both_info = issue(K1, TS.token_id, TD, exp, aid2, kind=RESOURCE_ACCESS)
    add("A resource access using two scopes, one of them ask-first, with an approval for what "
        "the user saw. The access digest's scopes are listed here as files:read, email:send, "
        "files:read and hashed deduplicated, sorted and joined with ',': "
        "'email:send,files:read'.", "approvals.md#access-digest",
        [ASK, RESOURCE, APPROVAL_F, DIGEST_F, ACCESS_F, VALID], TS,
        ctx(access("files:read", "email:send", approval=both, digest=TD)),
        allow(approval_id=aid2.hex()), both_info, mrd, access_=td)
    return f
