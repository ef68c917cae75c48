"""What evicting the oldest entry of a full bounded cache costs, per eviction: a plain dict's
``next(iter(d))`` against the amortized eviction the caches use (capwallet.bounded) and an
OrderedDict's ``popitem(last=False)``.

    python bench/fifo_eviction.py [--ops N] [--runs R]

Not a test, and not the relay: a micro benchmark of the one operation. A dict leaves a hole
where an entry was deleted and compacts only when it resizes, so a FIFO that deletes its
oldest entry and inserts a new one accumulates holes at the front: ``next(iter(d))`` walks
them all, once per eviction, up to the dict's size (the caches hold 4,096 to 16,384 entries).
The caches are full when more distinct tokens (or open reservations) are in use than they
remember: every new one then evicts. The lookup cost, which every call pays, is printed too
(an OrderedDict's ``get`` is slower than a dict's, which is why the caches stay dicts).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable

import checkout

from capwallet.bounded import drop_oldest


def _filled(n: int) -> dict[str, int]:
    return {f"key-{i:08d}": i for i in range(n)}


def one_at_a_time(n: int, keys: list[str]) -> float:
    d = _filled(n)
    t = time.perf_counter()
    for k in keys:
        if len(d) >= n:
            d.pop(next(iter(d)), None)
        d[k] = 1
    return time.perf_counter() - t


def amortized(n: int, keys: list[str]) -> float:
    d = _filled(n)
    t = time.perf_counter()
    for k in keys:
        if len(d) >= n:
            drop_oldest(d, n)
        d[k] = 1
    return time.perf_counter() - t


def ordered(n: int, keys: list[str]) -> float:
    d = OrderedDict(_filled(n))
    t = time.perf_counter()
    for k in keys:
        if len(d) >= n:
            d.popitem(last=False)
        d[k] = 1
    return time.perf_counter() - t


def lookups(kind: type[dict[str, int]], n: int, ops: int) -> float:
    d = kind(_filled(n))
    get = d.get
    k = f"key-{n // 2:08d}"
    t = time.perf_counter()
    for _ in range(ops):
        get(k)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ways: list[tuple[str, Callable[[int, list[str]], float]]] = [
        ("dict next(iter(d))", one_at_a_time), ("dict drop_oldest", amortized),
        ("OrderedDict popitem", ordered)]
    print(f"code measured: {checkout.describe()}")
    print(f"ns per insert of a new key into a full cache ({args.ops} ops, {args.runs} runs, "
          "median [min-max]); the same run, alternating")
    for n in (4096, 16384):
        keys = [f"new-{i:08d}" for i in range(args.ops)]
        got: dict[str, list[float]] = {name: [] for name, _ in ways}
        for _ in range(args.runs):
            for name, fn in ways:
                got[name].append(fn(n, keys) / args.ops * 1e9)
        base = statistics.median(got[ways[0][0]])
        for name, _ in ways:
            xs = got[name]
            med = statistics.median(xs)
            print(f"  size {n:>6}  {name:<22} {med:>8.0f} [{min(xs):.0f}-{max(xs):.0f}]"
                  f"  {med / base:.3f}x")
        kinds: tuple[type[dict[str, int]], ...] = (dict, OrderedDict)
        for kind in kinds:
            xs = [lookups(kind, n, args.ops) / args.ops * 1e9 for _ in range(args.runs)]
            print(f"  size {n:>6}  {kind.__name__ + '.get (a hit)':<22} "
                  f"{statistics.median(xs):>8.0f} [{min(xs):.0f}-{max(xs):.0f}]")


if __name__ == "__main__":
    main()
