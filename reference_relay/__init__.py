"""The reference relay: an OpenAI- and Anthropic-compatible proxy that enforces capability tokens.

An app calls it with its ``cwt1_`` token where an API key would go. The relay verifies the token
offline, reserves the worst-case cost on every counter the token names, forwards the request
with the user's provider key, meters the real usage (streams included), settles, and writes one
ledger row per call. See reference_relay.app.create_app and relay.example.toml. Its tests run
against the fake provider (the top-level fake_provider package, test equipment), which
speaks both wire formats.
"""

from reference_relay.app import create_app
from reference_relay.config import ConfigError, ProviderConfig, RelayConfig, load_config

__all__ = ["ConfigError", "ProviderConfig", "RelayConfig", "create_app", "load_config"]
