"""Random ids for the relay's per-call records (reservation ids): 128 bits from the OS, drawn
in bulk.

``secrets.token_hex(16)`` asks the kernel for 16 bytes on every call, a getrandom system call
per relayed call. ``new_id`` gives the same thing, 32 lowercase hex digits of os.urandom,
from a batch of BATCH ids drawn with one call, so ids stay unpredictable (the operating
system's CSPRNG, as secrets uses) and unique across every process sharing a store (128
random bits each). A forked child drops the batch it inherited, so parent and child never
hand out the same ids.
"""

from __future__ import annotations

import os

BATCH = 256
_SIZE = 16  # bytes per id

_batch: list[str] = []


def _refill() -> str:
    text = os.urandom(_SIZE * BATCH).hex()
    step = 2 * _SIZE
    _batch.extend([text[i:i + step] for i in range(step, len(text), step)])
    return text[:step]


def new_id() -> str:
    """32 hex digits of fresh OS randomness (as ``secrets.token_hex(16)``)."""
    return _batch.pop() if _batch else _refill()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_batch.clear)
