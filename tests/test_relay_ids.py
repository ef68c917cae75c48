"""reference_relay.ids: reservation ids drawn from the OS in batches stay 128 random bits
each, distinct within a process, and distinct between a process and a child forked from it
after the batch was drawn (the child drops the batch it inherited)."""

from __future__ import annotations

import os
import re

from reference_relay import ids


def test_ids_are_32_hex_digits_and_distinct_across_batches() -> None:
    got = [ids.new_id() for _ in range(3 * ids.BATCH + 7)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in got)
    assert len(set(got)) == len(got)


def test_a_forked_child_does_not_reuse_the_parents_batch() -> None:
    ids.new_id()  # a batch is drawn and mostly left
    left = list(ids._batch)
    assert left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, written back to the parent
        try:
            os.close(read)
            os.write(write, ",".join(ids.new_id() for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read().split(",")
    os.waitpid(pid, 0)
    assert len(child) == 8
    assert not set(child) & set(left)
    assert ids._batch == left  # the parent's batch is untouched
