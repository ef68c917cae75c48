"""capwallet: capability tokens that let apps use a user's own AI accounts within limits."""

from capwallet.caveats import (
    App,
    AskFirst,
    Budget,
    Caveat,
    ConfirmAbove,
    Expires,
    Logging,
    MaxInputTokens,
    MaxOutputTokens,
    Models,
    NotBefore,
    Operations,
    Providers,
    Rate,
    Scopes,
    TokenQuota,
    ZeroRetention,
)
from capwallet.keys import Keyring, RootKey
from capwallet.limits import EffectiveLimits
from capwallet.reasons import Reason, TokenError
from capwallet.token import Token, attenuate, mint
from capwallet.verify import CounterDenial, Debit, Decision, Request, Verifier, verify

__all__ = [
    "App", "AskFirst", "Budget", "Caveat", "ConfirmAbove", "CounterDenial", "Debit", "Decision",
    "EffectiveLimits", "Expires", "Keyring", "Logging", "MaxInputTokens", "MaxOutputTokens",
    "Models", "NotBefore", "Operations", "Providers", "Rate", "Reason", "Request", "RootKey",
    "Scopes", "Token", "TokenError", "TokenQuota", "Verifier", "ZeroRetention", "attenuate",
    "mint", "verify",
]
__version__ = "0.1.0"
