"""Caveat flags that read like a person would say them, shared by mint, attenuate and grant:

    --provider anthropic --model claude-sonnet-4-5 --budget 10EUR/month --expires 30d
    --max-input-tokens 50000 --scope posts:read --confirm-above 0.50EUR --logging metadata
    --origin https://notes.example
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Any

from capwallet import caveats as cav
from capwallet import origins
from capwallet.cli.common import CliError
from capwallet.money import MoneyError, parse_amount
from capwallet.periods import PERIODS, zone

_DURATION = re.compile(r"(\d{1,9})\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PER = re.compile(r"(?P<amount>[^/@]+)(?:/(?P<period>[a-z]+))?(?:@(?P<tz>[A-Za-z0-9_+/\-]+))?")


def add_caveat_flags(parser: argparse.ArgumentParser, *, origin: bool = True) -> None:
    """The caveat flags; ``origin=False`` leaves --origin to a command that gives it its own
    meaning (``capwallet grant --origin`` records the web app's origin on the grant)."""
    g = parser.add_argument_group("caveats (each one only narrows what the token allows)")
    g.add_argument("--provider", action="append", metavar="ID", help="allowed provider (repeat)")
    g.add_argument("--model", action="append", metavar="ID", help="allowed model id (repeat)")
    g.add_argument("--operation", action="append", metavar="OP",
                   help="allowed operation: chat or embeddings (repeat); listing models is "
                        "not an operation (spec/caveats.md#operations)")
    g.add_argument("--scope", action="append", metavar="SCOPE",
                   help="granted data/tool scope such as posts:read (repeat)")
    g.add_argument("--no-scopes", action="store_true", help="grant no data/tool scopes at all")
    g.add_argument("--ask-first", action="append", metavar="SCOPE",
                   help="scope that needs your approval every time it is used (repeat)")
    g.add_argument("--budget", action="append", metavar="AMOUNT[/PERIOD][@TZ]",
                   help="spend limit, e.g. 10EUR/month, 2USD/day@Europe/Paris, 5USD (total)")
    g.add_argument("--token-quota", action="append", metavar="N/PERIOD",
                   help="model tokens per period, e.g. 2000000/day")
    g.add_argument("--rate", action="append", metavar="N", help="requests per minute")
    g.add_argument("--max-input-tokens", type=_int_arg, metavar="N",
                   help="context sent per request")
    g.add_argument("--max-output-tokens", type=_int_arg, metavar="N",
                   help="output tokens per request")
    g.add_argument("--expires", metavar="WHEN", help="30d, 12h, 2026-12-31, or UNIX seconds")
    g.add_argument("--not-before", metavar="WHEN", help="same forms as --expires")
    g.add_argument("--confirm-above", action="append", metavar="AMOUNT",
                   help="ask before any call estimated above this, e.g. 0.50EUR")
    g.add_argument("--zero-retention", action="store_true",
                   help="only providers that retain no data")
    g.add_argument("--logging", choices=cav.LOGGING_LEVELS,
                   help="what the relay may log about calls")
    g.add_argument("--app", metavar="ID", help="the app (origin or id) the grant is made to")
    if origin:
        g.add_argument("--origin", metavar="ORIGIN", dest="caveat_origin",
                       help="the only web origin a browser may present the token from, e.g. "
                            "https://notes.example (server-side calls are not affected)")


def _int_arg(text: str) -> int:
    if not re.fullmatch(r"\d{1,15}", text.replace("_", "").replace(",", "")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text.replace("_", "").replace(",", ""))


def parse_time(text: str, now: int, flag: str) -> int:
    """A duration from now (30d), an ISO 8601 date/time (UTC if no zone), or UNIX seconds."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m:
        return now + int(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"\d{9,16}", text):
        if int(text) > 2**53 - 1:
            raise CliError(f"{flag}: {text} is past the largest protocol time, 2^53-1")
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{flag}: cannot read {text!r}; use 30d, 12h, 2026-12-31 or UNIX seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def _period_spec(text: str, flag: str) -> tuple[str, str, str]:
    m = _PER.fullmatch(text.strip())
    if not m:
        raise CliError(f"{flag}: cannot read {text!r}; write it like 10EUR/month or 5USD/day@UTC")
    period = m.group("period") or "total"
    if period not in PERIODS:
        raise CliError(f"{flag}: period {period!r} is not one of {', '.join(PERIODS)}")
    tz = m.group("tz") or "UTC"
    try:
        zone(tz)
    except ValueError:
        raise CliError(f"{flag}: unknown time zone {tz!r}") from None
    return m.group("amount").strip(), period, tz


def caveats_from_args(args: Any, now: int) -> list[cav.Caveat]:
    """Caveats for the flags that were given, in the order the README's listing shows them
    (who, when, what, how much, how big, which data, when to ask, what to log), so
    ``capwallet inspect`` reads like the documentation. Raises CliError."""
    out: list[cav.Caveat] = []
    if args.app:
        out.append(cav.App(args.app))
    if getattr(args, "caveat_origin", None):
        text = args.caveat_origin.strip()
        origin = origins.normalise(text[:-1] if text.endswith("/") else text)
        if origin is None:
            raise CliError(f"--origin: {text!r} is not a web origin; write it like "
                           "https://notes.example or http://127.0.0.1:5500")
        out.append(cav.Origin(origin))
    if args.not_before:
        out.append(cav.NotBefore(parse_time(args.not_before, now, "--not-before")))
    if args.expires:
        out.append(cav.Expires(parse_time(args.expires, now, "--expires")))
    if args.provider:
        out.append(cav.Providers(tuple(args.provider)))
    if args.model:
        out.append(cav.Models(tuple(args.model)))
    if args.operation:
        out.append(cav.Operations(tuple(args.operation)))
    for text in args.budget or ():
        amount, period, tz = _period_spec(text, "--budget")
        try:
            money = parse_amount(amount)
        except MoneyError as exc:
            raise CliError(f"--budget: {exc}") from None
        out.append(cav.Budget(money.minor, money.currency, period, tz))
    for text in args.token_quota or ():
        amount, period, tz = _period_spec(text, "--token-quota")
        out.append(cav.TokenQuota(_count(amount, "--token-quota"), period, tz))
    for text in args.rate or ():
        n = text.strip().removesuffix("/min").removesuffix("/minute")
        out.append(cav.Rate(_count(n, "--rate")))
    if args.max_input_tokens is not None:
        out.append(cav.MaxInputTokens(args.max_input_tokens))
    if args.max_output_tokens is not None:
        out.append(cav.MaxOutputTokens(args.max_output_tokens))
    if args.no_scopes and args.scope:
        raise CliError("--no-scopes and --scope contradict each other")
    if args.scope or args.no_scopes:
        out.append(cav.Scopes(tuple(args.scope or ())))
    if args.ask_first:
        out.append(cav.AskFirst(tuple(args.ask_first)))
    for text in args.confirm_above or ():
        try:
            money = parse_amount(text)
        except MoneyError as exc:
            raise CliError(f"--confirm-above: {exc}") from None
        out.append(cav.ConfirmAbove(money.minor, money.currency))
    if args.zero_retention:
        out.append(cav.ZeroRetention())
    if args.logging:
        out.append(cav.Logging(args.logging))
    for c in out:
        try:
            cav.encode(c)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return out


def _count(text: str, flag: str) -> int:
    try:
        return _int_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"{flag}: {exc}") from None
