"""Bounded caches kept in plain dicts: evicting the oldest entries in amortized O(1).

Rule: a cache that is full drops its oldest eighth at once, not its one oldest entry.

Why: a dict remembers insertion order and leaves a hole where an entry was deleted, which it
compacts only when it resizes. A FIFO cache that deletes its oldest entry per insert collects
its holes at the front, and ``next(iter(d))`` walks them all on every eviction: up to the
dict's size, 4 to 16 us per insert into a full cache of 4,096 to 16,384 entries
(bench/fifo_eviction.py), where an OrderedDict's ``popitem(last=False)`` takes 0.5 us. An
OrderedDict would cost every call instead (its ``get`` takes twice a dict's). Dropping an
eighth in one walk pays the walk once per ``size // 8`` inserts.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

# The share of a full cache dropped at once: 1 / DROP_SHARE of it.
DROP_SHARE = 8


def drop_oldest(cache: dict[Any, Any], size: int) -> None:
    """Make room in ``cache``, full at ``size`` entries: drop its oldest ``size // 8`` (at
    least one), in insertion order, with one walk over the holes at its front."""
    for key in list(islice(cache, max(size // DROP_SHARE, 1))):
        del cache[key]
