"""keygen, mint, attenuate, inspect, verify: the token protocol from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from typing import Any

from capwallet import caveats as cav
from capwallet.cli.caveat_flags import add_caveat_flags, caveats_from_args
from capwallet.cli.common import CliError, now_arg, print_json, read_token_arg
from capwallet.keys import KeyFileError, Keyring, RootKey
from capwallet.limits import EffectiveLimits, effective
from capwallet.money import MoneyError, format_minor, parse_micros
from capwallet.reasons import TokenError
from capwallet.token import Token, mint
from capwallet.verify import Request, Verifier


def register(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create a root key file (mode 0600)",
                       description="Create a root key file. The key itself is never printed.")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the key file")
    p.add_argument("--json", action="store_true", help="print the key id as JSON")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("mint", help="mint a token under a root key")
    p.add_argument("--key-file", required=True, metavar="FILE")
    add_caveat_flags(p)
    p.add_argument("--now", type=int, metavar="UNIX_SECONDS", help="issue time (default: now)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mint)

    p = sub.add_parser("attenuate", help="add caveats to a token (offline, no key needed)")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read standard input")
    add_caveat_flags(p)
    p.add_argument("--now", type=int, metavar="UNIX_SECONDS", help="base for relative times")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attenuate)

    p = sub.add_parser("inspect", help="decode a token's caveats (unverified, no key needed)")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read standard input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "verify", help="verify a token for a request (exit 0 allow, 1 deny, 2 bad arguments)",
        description="Verify a token for one request, as a relay would. Exit status: 0 the "
                    "token allows the request; 1 it denies it, with a reason code (a token that "
                    "does not parse is denied as malformed); 2 the command itself is wrong "
                    "(unreadable key file, bad flag value).")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read standard input")
    p.add_argument("--key-file", required=True, action="append", metavar="FILE",
                   help="root key file (repeat to hold several keys)")
    p.add_argument("--provider", help="the provider of a model call")
    p.add_argument("--model")
    p.add_argument("--operation", help="default chat for a model call")
    p.add_argument("--scope", action="append", default=[], help="scope the request uses (repeat)")
    p.add_argument("--input-tokens", type=int, default=0, metavar="N")
    p.add_argument("--output-tokens", type=int, default=0, metavar="N")
    p.add_argument("--cost", action="append", default=[], metavar="AMOUNT",
                   help="worst-case cost, to the microunit: 0.30EUR, 0.000123EUR "
                        "(repeat for other currencies)")
    p.add_argument("--zero-retention-provider", action="store_true",
                   help="the provider retains no data")
    p.add_argument("--origin", metavar="ORIGIN",
                   help="the web origin a browser sent the request from (its Origin header); "
                        "omit for a server-side call")
    p.add_argument("--counter", action="append", default=[], metavar="KEY=USED",
                   help="current value of a counter (repeat)")
    p.add_argument("--revoked", action="append", default=[], metavar="TOKEN_ID")
    p.add_argument("--now", type=int, metavar="UNIX_SECONDS")
    p.add_argument("--json", action="store_true",
                   help="print the Decision as JSON (spec/verification.md#decision). Money in "
                        "it has two units: in `debits` and `counter` a budget's amount, limit "
                        "and used are microunits (millionths of a minor unit, as the relay "
                        "counts); in `limits` a budget counter's limit and `confirm_above` are "
                        "the caveats' own minor units (1000 for 10.00 EUR)")
    p.set_defaults(func=cmd_verify)


def _load_key(path: str) -> RootKey:
    try:
        return RootKey.load(path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def _iso(t: int | None) -> str | None:
    if t is None:
        return None
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
    except (OverflowError, ValueError, OSError):  # a protocol time may reach 2^53-1
        return f"{t} (Unix time, after the year 9999)"


def cmd_keygen(args: argparse.Namespace) -> int:
    key = RootKey.generate()
    try:
        key.save(args.out)
    except FileExistsError:
        raise CliError(f"{args.out} exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    if args.json:
        print_json({"key_id": key.key_id.hex(), "file": os.path.abspath(args.out)})
    else:
        print(f"wrote root key {key.key_id.hex()} to {args.out} (mode 0600)")
    return 0


def _emit(token: Token, as_json: bool) -> int:
    if as_json:
        print_json({"token": token.serialize(), "token_id": token.token_id,
                    "key_id": token.key_id, "caveats": [c.decode() for c in token.raw_caveats]})
    else:
        print(token.serialize())
    return 0


def cmd_mint(args: argparse.Namespace) -> int:
    key = _load_key(args.key_file)
    now = now_arg(args.now)
    return _emit(mint(key, caveats_from_args(args, now), now=now), args.json)


def _parse(text: str) -> Token:
    try:
        return Token.parse(text)
    except TokenError as exc:
        raise CliError(f"token is {exc.reason.value}: {exc.message}") from None


def cmd_attenuate(args: argparse.Namespace) -> int:
    token = _parse(read_token_arg(args.token))
    added = caveats_from_args(args, now_arg(args.now))
    if not added:
        raise CliError("no caveat flags given; attenuation needs at least one (see --help)")
    try:
        return _emit(token.attenuate(added), args.json)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    token = _parse(read_token_arg(args.token))
    rows: list[dict[str, Any]] = []
    decoded: list[tuple[bytes, cav.Caveat]] = []
    for raw in token.raw_caveats:
        row: dict[str, Any] = {"text": raw.decode("utf-8", "replace"), "hex": raw.hex()}
        try:
            c = cav.decode(raw)
            decoded.append((raw, c))
            row["type"] = c.name
        except TokenError as exc:
            row["error"] = exc.reason.value
        rows.append(row)
    complete = len(decoded) == len(rows)
    eff = effective(token.identifier.token_id, decoded) if complete else None
    limits = eff.to_json() if eff is not None else None
    info = {
        "verified": False,
        "token_id": token.token_id,
        "chain_id": token.chain_id,
        "key_id": token.key_id,
        "issued_at": token.identifier.issued_at,
        "caveats": rows,
        "effective_limits": limits,
    }
    if args.json:
        print_json(info)
        return 0
    print("UNVERIFIED: decoded without a key; a verifier may still reject this token.")
    print(f"token id   {token.token_id}")
    print(f"chain id   {token.chain_id}   (this chain: each attenuation gets its own)")
    print(f"root key   {token.key_id}")
    print(f"issued at  {_iso(token.identifier.issued_at)}")
    print(f"caveats    {len(rows)}")
    for i, row in enumerate(rows, 1):
        flag = f"   <- {row['error']} (a verifier denies)" if "error" in row else ""
        print(f"  {i:2d}. {row['text']}{flag}")
    if eff is not None:
        print("effective limits (the intersection of all caveats):")
        for line in limit_lines(eff):
            print(f"  {line}")
    else:
        print("effective limits: none (a caveat does not decode, so every request is denied)")
    return 0


def limit_lines(eff: EffectiveLimits) -> list[str]:
    """The effective limits in words, in the caveat listing's order; money as people write it
    (``0.50 EUR``), like the budget lines, never a dict of minor units."""
    lines: list[str] = []

    def names(label: str, values: frozenset[str] | None) -> None:
        if values is not None:
            lines.append(f"{label}: {', '.join(sorted(values)) or '(none)'}")

    if eff.apps:
        lines.append(f"app: {', '.join(eff.apps)}")
    if eff.not_before is not None:
        lines.append(f"not before: {_iso(eff.not_before)}")
    if eff.expires is not None:
        lines.append(f"expires: {_iso(eff.expires)}")
    names("providers", eff.providers)
    names("models", eff.models)
    names("operations", eff.operations)
    for counter in eff.counters:
        lines.append(f"{counter.describe()}  [counter {counter.counter_id}]")
    if eff.max_input_tokens is not None:
        lines.append(f"max input tokens: {eff.max_input_tokens} per request")
    if eff.max_output_tokens is not None:
        lines.append(f"max output tokens: {eff.max_output_tokens} per request")
    names("scopes", eff.scopes)
    if eff.ask_first:
        names("ask first", eff.ask_first)
    for currency, minor in sorted(eff.confirm_above.items()):
        lines.append(f"confirm above: {format_minor(minor, currency)}")
    if eff.zero_retention:
        lines.append("zero retention: only providers that keep no data")
    if eff.logging is not None:
        lines.append(f"logging: {eff.logging}")
    return lines


def _counter(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise CliError(f"--counter {text!r}: write it as KEY=USED")
    return key, int(value)


def cmd_verify(args: argparse.Namespace) -> int:
    text = read_token_arg(args.token)
    keyring = Keyring([_load_key(p) for p in args.key_file])
    cost: dict[str, int] = {}
    for c in args.cost:
        try:
            micros, currency = parse_micros(c)
        except MoneyError as exc:
            raise CliError(f"--cost: {exc}") from None
        cost[currency] = cost.get(currency, 0) + micros
    if args.provider is not None and not args.model:
        raise CliError("--provider needs --model (a model call names both)")
    if args.provider is None and (args.model or args.operation):
        raise CliError("--model and --operation need --provider (a model call names all three)")
    if args.input_tokens < 0 or args.output_tokens < 0:
        raise CliError("token counts cannot be negative")
    request = Request(
        provider=args.provider, model=args.model,
        operation=(args.operation or "chat") if args.provider else None,
        scopes=tuple(args.scope), input_tokens=args.input_tokens,
        output_tokens=args.output_tokens, cost=cost,
        zero_retention=args.zero_retention_provider, origin=args.origin,
    )
    counters = dict(_counter(c) for c in args.counter)
    decision = Verifier(keyring).verify(
        text, request, now_arg(args.now), counters, revoked=frozenset(args.revoked))
    if args.json:
        print_json(decision.to_json())
    elif decision.allowed:
        print(f"allow: token {decision.token_id}")
    else:
        print(f"deny: {decision.reason.value if decision.reason else '?'}: {decision.message}")
    return 0 if decision.allowed else 1
