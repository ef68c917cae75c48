"""The bounded caches' eviction (capwallet.bounded): a full cache drops its oldest eighth in
insertion order, stays within its size, and keeps what was added last. (What it costs is
bench/fifo_eviction.py's to measure, not a test's.)"""

from __future__ import annotations

from capwallet import caveats as cav
from capwallet.bounded import drop_oldest
from capwallet.keys import Keyring, RootKey
from capwallet.token import mint
from capwallet.verify import Verifier


def test_drop_oldest_drops_the_oldest_eighth_in_insertion_order() -> None:
    cache = {f"k{i}": i for i in range(64)}
    for i in range(0, 64, 3):  # holes anywhere, as settles and pops leave them
        del cache[f"k{i}"]
    left = list(cache)
    drop_oldest(cache, 64)
    assert list(cache) == left[8:]
    small = {"a": 1, "b": 2}
    drop_oldest(small, 2)  # at least one
    assert small == {"b": 2}


def test_a_full_cache_stays_bounded_under_many_new_keys() -> None:
    cache: dict[int, int] = {}
    size = 4096
    for i in range(100_000):
        if len(cache) >= size:
            drop_oldest(cache, size)
        cache[i] = i
        assert len(cache) <= size
    assert list(cache)[-1] == 99_999 and min(cache) > 99_999 - size


def test_the_verifiers_token_cache_stays_bounded() -> None:
    root = RootKey.generate()
    verifier = Verifier(Keyring([root]), cache_size=16)
    tokens = [mint(root, [cav.Budget(i + 1, "USD", "month")]).serialize() for i in range(40)]
    for t in tokens:
        assert verifier.check_token(t).limits.counters
        assert len(verifier._cache) <= 16
    assert tokens[-1] in verifier._cache and tokens[0] not in verifier._cache
