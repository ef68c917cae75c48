"""A permission request: what an app asks for, as RFC 9396-style authorization_details.

The app sends a JSON array holding exactly one object of type ``capwallet_ai``:

    [{"type": "capwallet_ai",
      "providers": ["openai"], "models": ["gpt-4o-mini"],
      "budget": {"amount": "10.00", "currency": "EUR", "period": "month"},
      "max_input_tokens": 50000, "max_output_tokens": 2000,
      "scopes": ["posts:read", "posts:publish"], "ask_first": ["posts:publish"],
      "expires_in": 2592000,
      "confirm_above": {"amount": "0.50", "currency": "EUR"},
      "logging": "metadata"}]

Money is a decimal string with its currency, never a JSON number (no floats). Unknown fields
are refused, not ignored: the user must never be shown less than the app asked for. The user
may then narrow the request (``narrow``) but never widen it; the result becomes caveats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from capwallet import caveats as cav
from capwallet.money import Money, MoneyError, format_minor, parse_amount
from capwallet.periods import PERIODS
from capwallet.wallet import json_input

DETAILS_TYPE = "capwallet_ai"
MAX_EXPIRES_IN = 366 * 86400
DEFAULT_EXPIRES_IN = 30 * 86400
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,99}")
_FIELDS = {
    "type", "providers", "models", "budget", "max_input_tokens", "max_output_tokens", "scopes",
    "ask_first", "expires_in", "confirm_above", "logging", "scope_descriptions",
}
_MAX_DETAILS_CHARS = 8000


class PermissionRequestError(ValueError):
    """The request or the user's narrowing is not acceptable; message is for people."""


@dataclass(frozen=True, slots=True)
class Permission:
    providers: tuple[str, ...]
    models: tuple[str, ...]
    budget: Money
    period: str
    expires_in: int
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    scopes: tuple[str, ...] = ()
    ask_first: tuple[str, ...] = ()
    confirm_above: Money | None = None
    logging: str | None = None
    # What each scope means, in the app's words, shown beside the raw scope; never a grant.
    scope_descriptions: tuple[tuple[str, str], ...] = ()

    def describe_scope(self, scope: str) -> str:
        return dict(self.scope_descriptions).get(scope, "")

    # --- JSON ------------------------------------------------------------------------------

    @classmethod
    def from_details(cls, text: str) -> Permission:
        """Parse the authorization_details parameter; raises PermissionRequestError."""
        if len(text) > _MAX_DETAILS_CHARS:
            raise PermissionRequestError("authorization_details is too long")
        try:
            doc = json_input.loads(text, parse_float=_no_float, parse_constant=_no_float)
        except ValueError as exc:
            raise PermissionRequestError(
                f"authorization_details is not valid JSON: {exc}") from None
        if isinstance(doc, dict):
            doc = [doc]
        if not isinstance(doc, list) or len(doc) != 1 or not isinstance(doc[0], dict):
            raise PermissionRequestError(
                f"authorization_details must be an array with one {DETAILS_TYPE!r} object"
            )
        return cls.from_json(doc[0])

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Permission:
        if d.get("type") != DETAILS_TYPE:
            raise PermissionRequestError(f"authorization_details type must be {DETAILS_TYPE!r}")
        unknown = sorted(set(d) - _FIELDS)
        if unknown:
            raise PermissionRequestError(f"unknown field(s) in authorization_details: {unknown}")
        providers = _names(d.get("providers"), "providers", required=True)
        models = _names(d.get("models"), "models", required=True)
        scopes = _names(d.get("scopes", []), "scopes", required=False)
        ask_first = _names(d.get("ask_first", []), "ask_first", required=False)
        if not set(ask_first) <= set(scopes):
            raise PermissionRequestError("every ask_first scope must also be in scopes")
        budget_doc = d.get("budget")
        if not isinstance(budget_doc, dict):
            raise PermissionRequestError(
                "a budget is required: {\"amount\": \"10.00\", \"currency\": \"EUR\", "
                "\"period\": \"month\"}"
            )
        budget = _money(budget_doc, "budget", extra={"period"})
        period = budget_doc.get("period")
        if period not in PERIODS:
            raise PermissionRequestError(f"budget period must be one of {', '.join(PERIODS)}")
        confirm = d.get("confirm_above")
        logging = d.get("logging")
        if logging is not None and logging not in cav.LOGGING_LEVELS:
            raise PermissionRequestError(f"logging must be one of {', '.join(cav.LOGGING_LEVELS)}")
        perm = cls(
            providers=providers, models=models, budget=budget, period=str(period),
            expires_in=_int(d.get("expires_in", DEFAULT_EXPIRES_IN), "expires_in", 60,
                            MAX_EXPIRES_IN),
            max_input_tokens=_opt_int(d.get("max_input_tokens"), "max_input_tokens"),
            max_output_tokens=_opt_int(d.get("max_output_tokens"), "max_output_tokens"),
            scopes=scopes, ask_first=ask_first,
            confirm_above=None if confirm is None else _money(confirm, "confirm_above"),
            logging=logging,
            scope_descriptions=_descriptions(d.get("scope_descriptions", {}), scopes),
        )
        if perm.confirm_above is not None and perm.confirm_above.currency != budget.currency:
            raise PermissionRequestError("confirm_above must be in the budget's currency")
        return perm

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": DETAILS_TYPE, "providers": list(self.providers), "models": list(self.models),
            "budget": {**_money_json(self.budget), "period": self.period},
            "expires_in": self.expires_in, "scopes": list(self.scopes),
            "ask_first": list(self.ask_first),
        }
        if self.max_input_tokens is not None:
            out["max_input_tokens"] = self.max_input_tokens
        if self.max_output_tokens is not None:
            out["max_output_tokens"] = self.max_output_tokens
        if self.confirm_above is not None:
            out["confirm_above"] = _money_json(self.confirm_above)
        if self.logging is not None:
            out["logging"] = self.logging
        if self.scope_descriptions:
            out["scope_descriptions"] = {k: v for k, v in self.scope_descriptions
                                         if k in self.scopes}
        return out

    def details(self) -> str:
        return json.dumps([self.to_json()], separators=(",", ":"))

    # --- narrowing --------------------------------------------------------------------------

    def narrow(self, form: Mapping[str, Sequence[str]]) -> Permission:
        """What the user approved: each value may equal or lower what was asked, never raise.

        ``form`` maps a field to its submitted values (checkbox fields repeat). Raises
        PermissionRequestError naming the first value that widens the request.
        """
        def one(name: str) -> str | None:
            values = form.get(name) or []
            if len(values) > 1:
                raise PermissionRequestError(f"{name} was sent more than once")
            v = values[0].strip() if values else ""
            return v or None

        providers = _subset(form.get("provider", []), self.providers, "provider")
        models = _subset(form.get("model", []), self.models, "model")
        if not providers:
            raise PermissionRequestError("keep at least one provider, or deny the request")
        if not models:
            raise PermissionRequestError("keep at least one model, or deny the request")
        scopes = _subset(form.get("scope", []), self.scopes, "scope")
        extra_ask = _subset(form.get("ask_first", []), self.scopes, "ask_first scope")
        ask_first = tuple(s for s in scopes if s in self.ask_first or s in extra_ask)

        budget = self.budget
        text = one("budget")
        if text is not None:
            budget = _user_money(text, self.budget.currency, "budget")
            if budget.minor > self.budget.minor:
                raise PermissionRequestError(
                    f"budget {budget} is above the {self.budget} the app asked for"
                )
            if budget.minor <= 0:
                raise PermissionRequestError(
                    "a budget of zero gives nothing: deny the request instead")
        confirm = self.confirm_above
        text = one("confirm_above")
        if text is not None:
            confirm = _user_money(text, self.budget.currency, "confirm above")
            if self.confirm_above is not None and confirm.minor > self.confirm_above.minor:
                raise PermissionRequestError(
                    f"asking above {confirm} is looser than the {self.confirm_above} the app "
                    "asked for"
                )
        expires_in = self.expires_in
        text = one("expires_in")
        if text is not None:
            expires_in = _int_text(text, "expiry")
            if expires_in > self.expires_in:
                raise PermissionRequestError("the expiry is later than the app asked for")
            if expires_in < 60:
                raise PermissionRequestError("the expiry must be at least a minute away")
        caps: dict[str, int | None] = {}
        for name in ("max_input_tokens", "max_output_tokens"):
            asked: int | None = getattr(self, name)
            text = one(name)
            value = asked if text is None else _int_text(text, name.replace("_", " "))
            if asked is not None and value is not None and value > asked:
                raise PermissionRequestError(
                    f"{name.replace('_', ' ')} {value} is above the {asked} the app asked for"
                )
            caps[name] = value
        logging = self.logging
        text = one("logging")
        if text is not None:
            if text not in cav.LOGGING_LEVELS:
                raise PermissionRequestError(
                    f"logging must be one of {', '.join(cav.LOGGING_LEVELS)}")
            rank = cav.LOGGING_LEVELS.index
            if self.logging is not None and rank(text) > rank(self.logging):
                raise PermissionRequestError(
                    f"logging {text!r} keeps more than the {self.logging!r} the app asked for"
                )
            logging = text
        return replace(
            self, providers=providers, models=models, scopes=scopes, ask_first=ask_first,
            budget=budget, confirm_above=confirm, expires_in=expires_in, logging=logging,
            max_input_tokens=caps["max_input_tokens"], max_output_tokens=caps["max_output_tokens"],
        )

    # --- caveats ----------------------------------------------------------------------------

    def caveats(self, app: str, now: int) -> list[cav.Caveat]:
        """The caveats of the token that carries this permission."""
        out: list[cav.Caveat] = [
            cav.App(app),
            cav.Expires(now + self.expires_in),
            cav.Providers(self.providers),
            cav.Models(self.models),
            cav.Scopes(self.scopes),  # always present: no scope named means none granted
            cav.Budget(self.budget.minor, self.budget.currency, self.period),
        ]
        if self.ask_first:
            out.append(cav.AskFirst(self.ask_first))
        if self.max_input_tokens is not None:
            out.append(cav.MaxInputTokens(self.max_input_tokens))
        if self.max_output_tokens is not None:
            out.append(cav.MaxOutputTokens(self.max_output_tokens))
        if self.confirm_above is not None:
            out.append(cav.ConfirmAbove(self.confirm_above.minor, self.confirm_above.currency))
        if self.logging is not None:
            out.append(cav.Logging(self.logging))
        return out

    # --- plain words ------------------------------------------------------------------------

    def budget_text(self) -> str:
        per = {"total": "in total"}.get(self.period, f"per {self.period}")
        return f"{format_minor(self.budget.minor, self.budget.currency)} {per}"


def _descriptions(value: Any, scopes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """{"posts:read": "Read your blog posts"}: plain words for scopes the app asks for."""
    if not isinstance(value, dict):
        raise PermissionRequestError("scope_descriptions must map a scope to a short text")
    out = []
    for scope, text in value.items():
        if scope not in scopes:
            raise PermissionRequestError(f"scope_descriptions: {scope[:40]!r} is not asked for")
        if not isinstance(text, str) or not 0 < len(text) <= 120 or not text.isprintable():
            raise PermissionRequestError(
                "a scope description is printable text of 1 to 120 characters")
        out.append((scope, text))
    return tuple(out)


def _no_float(text: str) -> Any:
    raise PermissionRequestError(f"numbers must be integers, and money a string ({text!r})")


def _names(value: Any, what: str, *, required: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PermissionRequestError(f"{what} must be a list of names")
    if required and not value:
        raise PermissionRequestError(f"{what} must name at least one")
    if len(value) > 50:
        raise PermissionRequestError(f"{what} lists too many names")
    for v in value:
        if not _NAME.fullmatch(v):
            raise PermissionRequestError(f"{what}: {v[:40]!r} is not a valid name")
    return tuple(dict.fromkeys(value))


def _money(doc: Any, what: str, extra: set[str] | None = None) -> Money:
    if not isinstance(doc, dict) or set(doc) - {"amount", "currency"} - (extra or set()):
        raise PermissionRequestError(f'{what} must be {{"amount": "0.50", "currency": "EUR"}}')
    amount, currency = doc.get("amount"), doc.get("currency")
    if not isinstance(amount, str) or not isinstance(currency, str):
        raise PermissionRequestError(f"{what} amount and currency must be strings (no floats)")
    try:
        return parse_amount(f"{amount}{currency}")
    except MoneyError as exc:
        raise PermissionRequestError(f"{what}: {exc}") from None


def _money_json(m: Money) -> dict[str, str]:
    amount = format_minor(m.minor, m.currency).split(" ")[0]
    return {"amount": amount, "currency": m.currency}


def _user_money(text: str, currency: str, what: str) -> Money:
    try:
        return parse_amount(f"{text}{currency}")
    except MoneyError as exc:
        raise PermissionRequestError(f"{what}: {exc}") from None


def _int(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PermissionRequestError(f"{what} must be an integer from {low} to {high}")
    return value


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what, 1, 10_000_000)


def _int_text(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise PermissionRequestError(f"{what} must be a whole number")
    return int(text)


def _subset(values: Sequence[str], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    for v in values:
        if v not in allowed:
            raise PermissionRequestError(f"{what} {v[:40]!r} was not in the app's request")
    chosen = set(values)
    return tuple(a for a in allowed if a in chosen)
