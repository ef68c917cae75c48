"""Checking every expectation against the Python implementation.

The generator stops when capwallet disagrees with a vector: the vectors say what the spec
says, not what the code happens to do."""

from __future__ import annotations

from typing import Any

from capwallet.keys import Keyring, RootKey
from capwallet.verify import Decision, Request, verify


def to_request(r: dict[str, Any]) -> Request:
    model_call = r["kind"] == "model_call"
    return Request(
        provider=r["provider"] if model_call else None,
        model=r["model"], operation=r["operation"], scopes=tuple(r["scopes"]),
        input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], cost=dict(r["cost"]),
        zero_retention=r["zero_retention"], approval=r["approval"],
        digest=None if r["digest"] is None else bytes.fromhex(r["digest"]),
        origin=r.get("origin"),
    )


def keyring(keys: list[dict[str, str]]) -> Keyring:
    return Keyring(RootKey(bytes.fromhex(k["key_id"]), bytes.fromhex(k["root_key"]))
                   for k in keys)


def run(keys: list[dict[str, str]], token: str, now: int, request: dict[str, Any],
        counters: dict[str, int], revoked: list[str]) -> Decision:
    return verify(token, keyring(keys), to_request(request), now, counters, revoked)


def compare(vid: str, expected: dict[str, Any], d: Decision) -> None:
    def fail(what: str, want: Any, got: Any) -> None:
        raise SystemExit(f"{vid}: implementation disagrees on {what}:\n  expected {want!r}\n"
                         f"  got      {got!r}\n  ({d.message})")

    got = "allow" if d.allowed else "deny"
    if got != expected["result"]:
        fail("result", expected, (got, d.reason))
    if not d.allowed and expected["reason"] != d.reason:
        fail("reason", expected["reason"], d.reason)
    named = None if d.counter is None else d.counter.to_json()
    if named != expected.get("counter"):
        fail("counter", expected.get("counter"), named)
    if d.allowed:
        debits = [x.to_json() for x in d.debits]
        if debits != expected["debits"]:
            fail("debits", expected["debits"], debits)
        if d.approval_id != expected["approval_id"]:
            fail("approval_id", expected["approval_id"], d.approval_id)
        if "limits" in expected:
            assert d.limits is not None
            if d.limits.to_json() != expected["limits"]:
                fail("limits", expected["limits"], d.limits.to_json())


def check_vector(v: dict[str, Any]) -> None:
    keys = v["keys"]
    if "steps" in v:
        counters = dict(v["counters"])
        for i, step in enumerate(v["steps"]):
            token = step.get("token", v["token"])
            d = run(keys, token, step["now"], step["request"], dict(counters), [])
            compare(f"{v['id']} step {i + 1}", step["expected"], d)
            if d.allowed:
                for x in d.debits:
                    counters[x.counter_key] = counters.get(x.counter_key, 0) + x.amount
            if counters != step["counters_after"]:
                raise SystemExit(f"{v['id']} step {i + 1}: counters {counters} != "
                                 f"{step['counters_after']}")
        return
    c = v["context"]
    d = run(keys, v["token"], c["now"], c["request"], c["counters"], c["revoked"])
    compare(v["id"], v["expected"], d)
