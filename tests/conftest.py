"""Shared fixtures and plugins. Fixed keys and times keep failures reproducible.
relay_harness: fake provider + real relays on loopback (fixtures fake, relay, fresh_relay,
captured_logs). Redis: redis_url / redis_cluster_url (tests/redis_server.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from capwallet.keys import Keyring, RootKey

pytest_plugins = ("relay_harness",)

# Hypothesis: in CI (CI=true, as .ci/run is called) every property runs the same examples on
# every run, so a property that once catches a bug catches it on every run; elsewhere it
# explores new examples each time. CAPWALLET_HYPOTHESIS_PROFILE overrides either.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("CAPWALLET_HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI") else "dev"))

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z, a fixed "now" for deterministic tests


@pytest.fixture
def root_key() -> RootKey:
    return RootKey(bytes.fromhex("0102030405060708"), bytes(range(32)))


@pytest.fixture
def keyring(root_key: RootKey) -> Keyring:
    return Keyring([root_key])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the whole session: ``CAPWALLET_TEST_REDIS_URL`` if set, else a redis-server
    started here on a free loopback port (tests/redis_server.py). Tests keep apart by key
    prefix (``?prefix=`` on the store URL), never by flushing."""
    given = os.environ.get("CAPWALLET_TEST_REDIS_URL")
    if given:
        yield given
        return
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Redis Cluster owning every slot (it still refuses cross-slot scripts)."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis-cluster"), cluster=True).start()
    try:
        yield server.url
    finally:
        server.stop()
