"""Shared test plugins. relay_harness: fake provider + real relays on loopback (fixtures
fake, relay, fresh_relay, captured_logs)."""

pytest_plugins = ("relay_harness",)
