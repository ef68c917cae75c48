"""Shared fixtures. Fixed keys and times keep failures reproducible."""

from __future__ import annotations

import pytest

from capwallet.keys import Keyring, RootKey

NOW = 1_790_000_000  # 2026-09-21T13:33:20Z, a fixed "now" for deterministic tests


@pytest.fixture
def root_key() -> RootKey:
    return RootKey(bytes.fromhex("0102030405060708"), bytes(range(32)))


@pytest.fixture
def keyring(root_key: RootKey) -> Keyring:
    return Keyring([root_key])
