"""The relay's configuration for a wallet: the wallet's relay.toml, or defaults built from the
providers in its keystore and the reference relay's price table.

Its own module (not part of runner.py) because both the server that starts the relay and the
consent page's price quotes (pricing.py) read it: the quotes must use the same table and rates
the relay will charge by.
"""

from __future__ import annotations

import tomllib
from typing import Any
from urllib.parse import urlsplit

from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore

RELAY_TOML = "relay.toml"


class RelaySetupError(Exception):
    pass


def relay_config_data(home: WalletHome, keystore: Keystore, wallet_url: str) -> dict[str, Any]:
    """The relay configuration (as parsed TOML) for this wallet."""
    from reference_relay.prices import default_table

    path = home.path / RELAY_TOML
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text("utf-8")) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RelaySetupError(f"cannot read {path}: {exc}") from None
    relay = dict(data.get("relay", {}))
    # The relay gets the keystore's keys directly (create_app keys=); it reads no key file.
    relay["root_keys"] = [str(home.keystore_path)]
    relay["store"] = home.store_url
    relay["wallet_url"] = wallet_url
    public_host = urlsplit(wallet_url).hostname or ""
    if public_host not in ("127.0.0.1", "localhost", "::1"):
        # A hosted wallet: the relay answers to its public name only (the wallet's middleware
        # has checked the Host, port included, before the relay sees the request).
        relay["allowed_hosts"] = [public_host]
    data["relay"] = relay
    if "rates" not in data:
        data["rates"] = default_rates()
    if "providers" not in data:
        table = default_table()
        providers = []
        for p in sorted(keystore.providers.values(), key=lambda p: p.name):
            section = p.name if p.name in table.sections else p.api
            models = sorted(table.sections.get(section, {}))
            if not models:
                continue
            providers.append({"id": p.name, "api": p.api, "base_url": p.base_url,
                              "models": models, "price_table": section})
        data["providers"] = providers
    if not data["providers"]:
        raise RelaySetupError(
            "no provider keys in the wallet: add one with `capwallet provider add openai`"
        )
    return data


def default_rates() -> dict[str, Any]:
    """The dated example exchange rates shipped with the reference relay (relay.example.toml),
    so a budget in EUR works with USD prices; error messages name the rate that was used."""
    from importlib import resources

    text = resources.files("reference_relay").joinpath("relay.example.toml").read_text("utf-8")
    rates: dict[str, Any] = tomllib.loads(text).get("rates", {})
    return rates
