"""bench/relay.py's stream A/B (``--streams --against``): the arithmetic it is judged with.

The rounds themselves need the relays and take seconds (run by hand); here what the printed
figures come from: the difference per round is this relay's minus the other's, from the same
round (so the direct call's time cancels), in ms, and rounds without the other relay (a run
without ``--against``) give none; and the order the two relays are called in, on two loopback
servers: turns of STREAM_TURN calls, AB BA AB.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))  # after tests/ and src/

from loopback_answer import answering
from pairs import median_ci
from streams import STREAM_TURN, StreamRound, StreamRun, stream_ab, streams_side_by_side


def run(rounds: list[StreamRound]) -> StreamRun:
    return StreamRun({}, {}, {"short": 10, "long": 4}, {}, rounds)


def test_differences_are_this_minus_other_per_round_in_ms() -> None:
    a = StreamRound({"direct": 0.0010, "relay": 0.0016, "other": 0.0015},
                    {"floor": 0.0005, "relay": 0.0012, "other": 0.0010})
    b = StreamRound({"direct": 0.0030, "relay": 0.0033, "other": 0.0037},
                    {"floor": 0.0005, "relay": 0.0011, "other": 0.0011})
    fb, cpu = stream_ab([run([a]), run([b])])
    assert [round(x, 9) for x in fb] == [0.1, -0.4]
    assert [round(x, 9) for x in cpu] == [0.2, 0.0]


def test_rounds_without_the_other_relay_give_no_difference() -> None:
    alone = StreamRound({"direct": 0.001, "relay": 0.002}, {"relay": 0.001})
    assert stream_ab([run([alone, alone])]) == ([], [])


def test_a_shift_common_to_both_relays_leaves_the_interval_on_the_difference() -> None:
    # every round the machine's load moves both relays alike (by up to 5 ms); this relay is
    # 0.03 ms slower each time: the differences, and their interval, show exactly that
    rounds = [StreamRound({"direct": 0.0004, "relay": 0.0009 + k * 0.0005,
                           "other": 0.00087 + k * 0.0005}, {"relay": 0.001, "other": 0.001})
              for k in range(10)]
    fb, _ = stream_ab([run(rounds[:5]), run(rounds[5:])])
    ci = median_ci(fb)
    assert ci is not None and 0.029 < ci[0] <= ci[1] < 0.031


def test_two_relays_take_turns_abba_on_real_connections() -> None:
    # two loopback servers answering like a stream (a content delta in the body): the calls
    # go in turns of STREAM_TURN, AB BA AB, and BA first with flip
    async def main(flip: bool) -> tuple[list[str], list[int]]:
        log: list[str] = []
        body = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        a = await answering(body, lambda: log.append("a"))
        b = await answering(body, lambda: log.append("b"))
        urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in (a, b)]
        got = await streams_side_by_side([(u, "t") for u in urls], {"stream": True}, 25, flip)
        for s in (a, b):
            s.close()
        return log, [len(t.first_byte) for t in got]

    turn = STREAM_TURN
    log, counts = asyncio.run(main(False))
    assert counts == [25, 25]
    rest = 25 - 2 * turn
    assert log == (["a"] * turn + ["b"] * 2 * turn + ["a"] * turn + ["a"] * rest
                   + ["b"] * rest)
    log, _ = asyncio.run(main(True))
    assert log[:turn] == ["b"] * turn and log[turn:3 * turn] == ["a"] * 2 * turn
