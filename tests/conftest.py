"""Shared fixtures and plugins. Fixed keys and times keep failures reproducible.
relay_harness: fake provider + real relays on loopback (fixtures fake, relay, fresh_relay,
captured_logs)."""

from __future__ import annotations

import pytest

from capwallet.keys import Keyring, RootKey

pytest_plugins = ("relay_harness",)

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z, a fixed "now" for deterministic tests


@pytest.fixture
def root_key() -> RootKey:
    return RootKey(bytes.fromhex("0102030405060708"), bytes(range(32)))


@pytest.fixture
def keyring(root_key: RootKey) -> Keyring:
    return Keyring([root_key])
